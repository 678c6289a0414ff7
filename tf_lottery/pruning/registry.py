"""Pruning criteria by name, for gin files and search procedures."""
import difflib

from tf_lottery.errors import ConfigError
from tf_lottery.pruning.grasp import grasp_masks
from tf_lottery.pruning.magnitude import magnitude_masks
from tf_lottery.pruning.random import random_masks
from tf_lottery.pruning.snip import snip_masks
from tf_lottery.pruning.synflow import synflow_masks

CRITERIA = {"magnitude": magnitude_masks, "random": random_masks, "snip": snip_masks,
            "grasp": grasp_masks, "synflow": synflow_masks}
# Called as f(model, x, y, prune_fraction, ...); the others as f(model, prune_fraction, ...).
BATCH_CRITERIA = frozenset({"snip", "grasp"})


def get_criterion(name):
    """The masks function registered under `name`; ConfigError naming the closest match."""
    if name in CRITERIA:
        return CRITERIA[name]
    close = difflib.get_close_matches(str(name).lower(), CRITERIA, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown pruning criterion {name!r}{hint} "
                      f"(choose one of {sorted(CRITERIA)})")


def criterion_masks(name, model, prune_fraction, batch=None, seed=None, exclude=()):
    """The masks criterion `name` gives `model` at its current weights, each criterion called
    its own way (the one dispatch for every search: pruning at initialisation, ToST):

      'snip', 'grasp'  f(model, x, y, prune_fraction): scored on `batch` = (x, y) (a callable
                       returning it is called only for them)
      'random'         f(model, prune_fraction, seed=seed)
      the others       f(model, prune_fraction) (options through gin)
    """
    criterion = get_criterion(name)
    if name in BATCH_CRITERIA:
        x, y = batch() if callable(batch) else batch
        return criterion(model, x, y, prune_fraction, exclude=exclude)
    if name == "random":
        return criterion(model, prune_fraction, seed=seed, exclude=exclude)
    return criterion(model, prune_fraction, exclude=exclude)
