"""Masks of a whole model as a plain dict {layer name: 0/1 numpy array}, kept apart from weights.

Every pruning criterion returns this shape, every search stores it per round, and analysis and
export read it back, whatever the algorithm.
"""
import fnmatch

import keras
import numpy as np

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.masked import masked_layers

_WILDCARDS = frozenset("*?[")


def excluded_names(model, exclude):
    """The names of the masked layers of `model` that an `exclude` list names: the one reading
    of `exclude` for every search and criterion (layers kept dense, never pruned or searched).
    Each entry is

      a layer name      'output' (the zoo names every classifier so): it must be a masked
                        layer of the model, else a ConfigError
      a pattern         an entry with *, ? or [ (fnmatch): every masked layer whose name it
                        matches, possibly none; '*_shortcut' is the zoo's 1x1 projection
                        shortcuts in a ResNet of any depth (none in a LeNet)

    E.g. ['*_shortcut', 'output'] leaves dense what the CS paper's ResNet comparison does
    (Savarese et al., Sec. 4.2: "the two skip-connections that perform 1×1 convolutions and the
    output layer are not sparsified")."""
    if isinstance(exclude, str):
        raise ConfigError(f"exclude takes a list of layer names or patterns, got the string "
                          f"{exclude!r} (write [{exclude!r}])")
    names = [layer.name for layer in masked_layers(model)]
    chosen, unknown = set(), []
    for entry in exclude:
        if _WILDCARDS & set(entry):
            chosen.update(fnmatch.filter(names, entry))
        elif entry in names:
            chosen.add(entry)
        else:
            unknown.append(entry)
    if unknown:
        raise ConfigError(f"exclude names no masked layer of the model: {unknown} (masked "
                          f"layers: {names})")
    return chosen


def check_exclude(exclude, name="exclude"):
    """`exclude` as a tuple of layer names and patterns (excluded_names reads them against a
    model), checked where a search is configured: a string (which tuple() would split into
    letters) or an entry that is not a string is a ConfigError naming `name`."""
    if isinstance(exclude, str):
        raise ConfigError(f"{name} takes a list of layer names or patterns, got the string "
                          f"{exclude!r} (write [{exclude!r}])")
    try:
        entries = tuple(exclude)
    except TypeError:
        raise ConfigError(f"{name} takes a list of layer names or patterns, got "
                          f"{exclude!r}") from None
    wrong = [entry for entry in entries if not isinstance(entry, str)]
    if wrong:
        raise ConfigError(f"{name} takes layer names or patterns (strings), got {wrong}")
    return entries


def searched_layers(model, exclude, what="search"):
    """The masked layers of `model` a search prunes or searches: all but those `exclude` names
    (excluded_names, its one reading: an unknown name is a ConfigError). ConfigError when every
    masked layer is excluded: `what` then has nothing to work on."""
    layers = prunable_layers(model, exclude)
    if not layers:
        raise ConfigError(f"{what}: every masked layer is excluded (exclude={list(exclude)}, "
                          f"masked layers: {[layer.name for layer in masked_layers(model)]}): "
                          f"there is no masked layer to prune or search")
    return layers


def prunable_layers(model, exclude=()):
    """Masked layers of `model` minus those `exclude` names (excluded_names: layer names and
    patterns), or minus those a predicate `exclude(layer)` is true for."""
    layers = masked_layers(model)
    if callable(exclude):
        return [layer for layer in layers if not exclude(layer)]
    names = excluded_names(model, exclude)
    return [layer for layer in layers if layer.name not in names]


def get_masks(model, binary=True):
    """{layer name: 0/1 float32 numpy mask} of every masked layer.

    Args:
      model: a network or a SparseModel.
      binary: ask each rule for its 0/1 ticket mask (e.g. the top-k of the scores) instead of
        reading the stored `mask` variable.
    """
    return {layer.name: np.asarray(layer.binary_mask() if binary else layer.mask.numpy(),
                                   dtype=np.float32)
            for layer in masked_layers(model)}


def set_masks(model, masks):
    """Assign masks[name] to the `mask` variable of each masked layer named in `masks`
    (layers absent from `masks` keep theirs).

    Args:
      model: a network or a SparseModel.
      masks: {layer name: 0/1 array of the kernel's shape}; an unknown name, another shape or
        a value other than 0 and 1 is a ConfigError.
    """
    layers = {layer.name: layer for layer in masked_layers(model)}
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise ConfigError(f"masks name layers the model does not have: {unknown[:5]}")
    for name, mask in masks.items():
        layer = layers[name]
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape != tuple(layer.mask.shape):
            raise ConfigError(f"mask for {name} has shape {mask.shape}, the layer's kernel "
                              f"{tuple(layer.mask.shape)}")
        if not np.all((mask == 0) | (mask == 1)):
            raise ConfigError(f"mask for {name} is not 0/1")
        layer.mask.assign(mask)


def reset_masks(model):
    """Set the `mask` variable of every masked layer of `model` (a network or a SparseModel)
    to ones: the dense network again (scores and mask-rule state are left as they are)."""
    for layer in masked_layers(model):
        layer.mask.assign(np.ones(tuple(layer.mask.shape), np.float32))


def freeze_weights(model, train_batchnorm=False):
    """Make every variable of `model` but the masked layers' scores non-trainable, as a
    strong-ticket search (edge-popup) trains: weights and biases stay at their initialisation.

    Args:
      model: a network or a SparseModel.
      train_batchnorm: keep BatchNormalization's γ/β trainable (edge-popup's
        affine_batchnorm); by default they are frozen too (γ = 1, β = 0 when freshly built:
        non-affine batch norm).
    """
    keep = {id(layer.scores) for layer in masked_layers(model) if layer.scores is not None}
    if train_batchnorm:
        keep |= {id(v) for layer in compat.sublayers(model)
                 if isinstance(layer, keras.layers.BatchNormalization)
                 for v in layer.trainable_weights}
    for variable in model.trainable_weights:
        if id(variable) not in keep:
            variable.trainable = False


def count(masks):
    """(remaining, total) weights over all masks."""
    remaining = sum(int(np.sum(m)) for m in masks.values())
    total = sum(int(np.size(m)) for m in masks.values())
    return remaining, total


def density(masks):
    """Fraction of weights kept (remaining / total) over all masks."""
    remaining, total = count(masks)
    return remaining / total if total else 1.0


def sparsity(masks):
    """Fraction of weights pruned: 1 - density."""
    return 1.0 - density(masks)


def layer_densities(masks):
    """{name: fraction kept} per layer."""
    return {name: float(np.mean(m)) for name, m in masks.items()}
