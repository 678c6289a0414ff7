"""The mask-update engine: updaters that change masks inside `SparseModel.train_step`, in-graph.

An updater (jaxpruner's BaseUpdater is the model) is a small object that decides *when*
(`is_update_step(step)`, a bool tensor) and *how* (`update(step, dense_gradients)`, assigning new
0/1 masks) the masks of its layers change. `SparseModel` calls every updater once per training
step, with `step = optimizer.iterations + 1` (the k-th batch is step k, tfmot's `pruning_step`):

* updaters with `needs_dense_gradients = False` run before the forward pass (the batch trains with
  the new masks, as in tfmot);
* updaters with `needs_dense_gradients = True` run after the backward pass, before the optimizer
  applies the gradients, and receive {layer name: ∂L/∂(θ ⊙ m)}, the gradient of the loss with
  respect to the *effective* (dense) kernel, also where m = 0; that tensor is an intermediate of
  the ordinary backward pass, exposed by adding a zero tensor to the kernel; under
  tf.distribute it is summed over replicas (the loss is already divided by their number) only
  at update steps.

Each update runs under `tf.cond(is_update_step(step), ...)`, so a step without an update costs one
comparison. Under a tf.distribute strategy the update runs once, in cross-replica context
(`merge_call`), from the mirrored weights and the reduced gradients, and each mask is assigned on
every replica (as tfmot does), so masks are identical everywhere. The step comes from the
optimizer's iteration counter, which is checkpointed with the optimizer: a run restored from a
checkpoint mid-schedule continues with the same masks as an uninterrupted one.
"""
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.masked import masked_layers
from tf_lottery.masks import _WILDCARDS, prunable_layers


class MaskUpdater:
    """Base class of mask updaters.

    Subclasses implement `is_update_step(step)` and `new_masks(step, dense_gradients)`
    ({layer name: 0/1 tensor}); `build(model)` picks the layers (masked layers minus `exclude`).
    """

    needs_dense_gradients = False
    # True: `update` also receives optimizer=the model's optimizer (to reset its state)
    needs_optimizer = False
    # a keras Layer of the updater's own variables (or None); SparseModel keeps it as an
    # attribute, so a checkpoint of the model holds it
    state = None

    def __init__(self, exclude=()):
        self.exclude = exclude
        self.layers = None

    def build(self, model):
        """Bind the updater to the masked layers of `model` (called by SparseModel)."""
        if not callable(self.exclude):
            entries = [self.exclude] if isinstance(self.exclude, str) else list(self.exclude)
            patterns = [e for e in entries if _WILDCARDS & set(e)]  # masks.excluded_names'
            names = set(entries) - set(patterns)
            every = {layer.name for layer in compat.sublayers(model)}
            unknown = sorted(names - every)
            if unknown:
                raise ConfigError(f"exclude names layers the model does not have: {unknown}")
            # a layer sparsify already left unmasked (prune_low_magnitude's exclude) is not
            # one of the masked layers that prunable_layers chooses from
            masked = {layer.name for layer in masked_layers(model)}
            self.exclude = tuple(sorted(names & masked)) + tuple(patterns)
        self.layers = prunable_layers(model, self.exclude)
        if not self.layers:
            raise ConfigError(f"{type(self).__name__}: the model has no masked layers to update")

    def is_update_step(self, step):
        raise NotImplementedError

    def new_masks(self, step, dense_gradients=None):
        raise NotImplementedError

    def update(self, step, dense_gradients=None):
        """Assign the new masks (called in-graph at update steps only)."""
        masks = self.new_masks(step, dense_gradients)
        for layer in self.layers:
            if layer.name in masks:
                layer.mask.assign(tf.cast(masks[layer.name], layer.mask.dtype))


def training_step(model):
    """The step of the batch being trained: optimizer.iterations + 1 (int64)."""
    return tf.cast(model.optimizer.iterations, tf.int64) + 1


def _reduced(strategy, gradients):
    if not isinstance(next(iter(gradients.values()), None), tf.distribute.DistributedValues):
        return gradients
    return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in gradients.items()}


def run_updates(model, updaters, dense_gradients=None):
    """Run each updater under tf.cond at its update steps, once, in cross-replica context."""
    if not updaters:
        return

    def apply(strategy, dense_gradients):
        step = training_step(model)
        for updater in updaters:
            def update(updater=updater):
                gradients = None
                if updater.needs_dense_gradients:
                    gradients = _reduced(strategy, dense_gradients)
                if updater.needs_optimizer:
                    updater.update(step, gradients, optimizer=model.optimizer)
                else:
                    updater.update(step, gradients)
                return tf.constant(True)

            tf.cond(updater.is_update_step(step), update, lambda: tf.constant(False))

    compat.merge_call(apply, dense_gradients)
