"""Dynamic sparse training as a one-round search: train a network from a random sparse mask
(ERK or uniform, exactly each layer's target count) that stays fixed ('static') or
changes every ΔT steps until T_end by SET's random or RigL's gradient regrowth
(tf_lottery.sparsity.dst). The masks change inside the training step and the updater's counters
are checkpointed with the model, so a run killed mid-round resumes with the same masks.

Epoch logs (history.json, TensorBoard) get the updater's counters under 'dst/': updates done,
the last drop fraction ζ_t, connections moved at the last update and in all, the fraction of
positions ever active (in-time over-parameterisation) and each layer's density.
"""
import gin
import keras

from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError, check_choice, check_fraction
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.fixed_mask import build_fixed_mask_model, layer_masks
from tf_lottery.search.rewind import rewind_steps
from tf_lottery.sparsity.dst import (RigL, SparseEvolutionaryTraining, StaticSparse,
                                     check_decay, check_interval)
from tf_lottery.sparsity.distributions import check_distribution

DEFAULT_END = 0.75  # T_end as a fraction of training
UPDATERS = {"static": StaticSparse, "set": SparseEvolutionaryTraining, "rigl": RigL}
ALGORITHMS = {"static": "static_sparse", "set": "set", "rigl": "rigl"}  # names in the records


def end_of_updates(end_updates, total_steps, steps_per_epoch):
    """T_end in steps: a fraction of training in (0, 1] (rounded to the nearest step) or a time
    '500it' / '2ep'; ConfigError if it is neither or lies beyond the `total_steps` of training."""
    problem = (f"end_updates must be a fraction of training in (0, 1] or a time like '500it' or "
               f"'2ep', got {end_updates!r}")
    if isinstance(end_updates, str) and end_updates != "init":
        try:
            steps = rewind_steps(end_updates.strip(), steps_per_epoch)
        except ConfigError:
            raise ConfigError(problem) from None
    elif isinstance(end_updates, float) and 0 < end_updates <= 1:
        steps = max(1, int(round(end_updates * total_steps)))
    else:
        raise ConfigError(problem)
    if steps < 1 or steps > total_steps:
        raise ConfigError(f"end_updates {end_updates!r} is step {steps}, outside the "
                          f"{total_steps} steps of training")
    return steps


class _DynamicSparsityLogs(keras.callbacks.Callback):
    """Adds the updater's counters (StaticSparse.summary) to every epoch's logs."""

    def __init__(self, updater):
        super().__init__()
        self.updater = updater

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.updater.summary())


@gin.configurable
class DynamicSparseSearch(RoundSearch):
    """One round of dynamic sparse training.

    Args:
      updater: 'static' (static sparse training, recorded as algorithm 'static_sparse'), 'set'
        (Mocanu et al. 2018) or 'rigl' (Evci et al. 2020).
      sparsity: the global fraction of weights removed, in [0, 1).
      distribution: per-layer targets: 'erk' (default), 'er', 'uniform' or a dict.
      update_interval: ΔT, steps between mask updates (SET, RigL).
      drop_fraction: ζ, the fraction of active weights moved at an update, in [0, 1].
      drop_fraction_decay: 'cosine' (ζ_t = ζ/2·(1 + cos(πt/T_end))) or 'constant'.
      end_updates: T_end, the last step that may update: a fraction of training in (0, 1] or a
        time ('500it', '2ep'); None: 0.75, RigL's (Evci et al. 2020, Sec. 4.1).
      regrow_dropped: let a position dropped in an update grow back in the same update (the
        RigL code's behaviour; default False).
      recipe: the TrainingRecipe of the round.
      weight_init: the kernel initialisation, seeded by the experiment's seed (as the masks).
      exclude: names of masked layers left dense and out of the count.
      model_kwargs: extra keyword arguments for the experiment's model_fn.
    """

    def __init__(self, updater="rigl", sparsity=0.9, distribution="erk", update_interval=100,
                 drop_fraction=0.3, drop_fraction_decay="cosine", end_updates=None,
                 regrow_dropped=False, recipe=None, weight_init="kaiming_normal", exclude=(),
                 model_kwargs=None):
        super().__init__(num_rounds=1, recipe=recipe)
        check_choice("updater", updater, list(UPDATERS))
        self.updater_name = updater
        self.algorithm = ALGORITHMS[updater]
        self.sparsity = check_fraction("sparsity", sparsity)
        self.distribution = check_distribution(distribution)
        self.update_interval = check_interval("update_interval", update_interval)
        self.drop_fraction = check_fraction("drop_fraction", drop_fraction, allow_one=True)
        self.drop_fraction_decay = check_decay(drop_fraction_decay)
        self.end_updates = DEFAULT_END if end_updates is None else end_updates
        end_of_updates(self.end_updates, 10**9, 1)  # the form now; the range once training is known
        self.regrow_dropped = bool(regrow_dropped)
        self.weight_init = weight_init
        self.exclude = masks_lib.check_exclude(exclude, "DynamicSparseSearch.exclude")
        self.model_kwargs = dict(model_kwargs or {})
        self.updater = None

    def build(self, experiment):
        model, self.layers = build_fixed_mask_model(experiment, self.weight_init, self.exclude,
                                                    self.model_kwargs)
        options = dict(sparsity=self.sparsity, distribution=self.distribution,
                       seed=experiment.seed, exclude=self.exclude)
        if self.updater_name != "static":
            steps_per_epoch = experiment.dataset.steps_per_epoch
            options.update(
                update_interval=self.update_interval, drop_fraction=self.drop_fraction,
                drop_fraction_decay=self.drop_fraction_decay,
                regrow_dropped=self.regrow_dropped,
                end_step=end_of_updates(self.end_updates, self.recipe.epochs * steps_per_epoch,
                                        steps_per_epoch))
        self.updater = UPDATERS[self.updater_name](**options)
        model.add_mask_updater(self.updater)  # draws the initial random masks
        return model

    def begin_round(self, model, index, experiment):
        """The masks were drawn when the updater was built (and saved in workdir/init)."""

    def round_callbacks(self, model, index, experiment):
        return [_DynamicSparsityLogs(self.updater)]

    def ticket_masks(self, model):
        return layer_masks(self.layers)

    def round_metrics(self, model, index, experiment):
        counters = self.updater.summary()
        metrics = {"distribution": self.distribution,
                   "density": masks_lib.density(self.ticket_masks(model)),
                   "target_densities": dict(self.updater.densities),
                   "mask_updates": counters["dst/updates"],
                   "moved_total": counters["dst/moved_total"],
                   "ever_active_fraction": counters["dst/ever_active_fraction"]}
        if self.updater_name != "static":
            metrics.update(update_interval=self.update_interval, end_step=self.updater.end_step,
                           drop_fraction=self.drop_fraction,
                           drop_fraction_decay=self.drop_fraction_decay,
                           regrow_dropped=self.regrow_dropped)
        return metrics
