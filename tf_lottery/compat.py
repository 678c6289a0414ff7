"""Every use tf_lottery makes of private Keras / TensorFlow API, each behind one small function.

Nothing else in the package reads an underscore attribute of a Keras or TensorFlow object,
imports `keras.src`, or calls `tf.__internal__`: what has a public equivalent uses it, and what
has none lives here, with a one-line note on the internal it relies on and why no public API
does the job. tests/test_compat.py exercises each of these on real Keras/TF objects and fails
with a message naming the internal when a release removes or changes it; the supported Keras/TF
range in setup.cfg is the one CI runs that test (and the rest of the suite) against.

Private modules are imported inside the functions that need them, so that a Keras release
which moves one breaks only the feature built on it (and its test), not `import tf_lottery`.
"""
import contextlib
import inspect

import keras
import tensorflow as tf

# --------------------------------------------------------------------------------------------
# Layers and models: traversal, tracking, class changes


def sublayers(layer, include_self=False, recursive=True):
    """Layer._flatten_layers: every sub-layer of any layer (nested models, layers kept by user
    layers, masked hosts' WeightMasks), depth-first, each once; public `Model.layers` lists only
    a model's direct layers and a plain Layer has no public list of its sub-layers at all."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def own_variables(layer):
    """Layer._trainable_variables + _non_trainable_variables: the variables a layer tracks
    itself, not its sub-layers' (public `Layer.weights` includes those of every sub-layer)."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def functional_class():
    """keras.src.models.functional.Functional: the class of `keras.Model(inputs, outputs)`,
    which Keras does not export (isinstance(x, keras.Model) holds for subclassed models too)."""
    from keras.src.models.functional import Functional

    return Functional


def is_graph_model(model):
    """Whether `model` is a Sequential or functional Keras model (a graph of layer calls that
    clone_model can rebuild), not a subclassed one."""
    return isinstance(model, (keras.Sequential, functional_class()))


def input_layer_name(tensor):
    """KerasTensor._keras_history: the name of the InputLayer a model input comes from (its
    public `.name` is the tensor's, which differs for unnamed inputs: 'keras_tensor' vs
    'input_layer')."""
    return tensor._keras_history.operation.name


@contextlib.contextmanager
def unlocked(layer):
    """Layer._tracker.locked/unlock() and Layer._lock_state(): let a built layer take new
    variables or sub-layers (Keras locks its state at the end of build(); no public unlock)."""
    locked = layer._tracker.locked
    layer._tracker.unlock()
    try:
        yield layer
    finally:
        if locked:
            layer._lock_state()


def replace_tracked_layer(owner, old, new):
    """Layer._tracker.replace_tracked_value('layers', ...): make `owner` track `new` in place of
    its sub-layer `old` (assigning the attribute anew would track both: no public way to drop
    one)."""
    owner._tracker.replace_tracked_value("layers", old, new)


def refresh_call_signature(layer):
    """Layer._call_signature, _call_has_training_arg, _call_has_mask_arg, _call_has_context_arg
    and call_signature_parameters: Keras inspects call() once, in Layer.__init__; after an
    in-place class change (masked.to_twin) they must describe the new class's call()."""
    signature = inspect.signature(layer.call)
    parameters = [p.name for p in signature.parameters.values()]
    layer._call_signature = signature
    layer.call_signature_parameters = parameters
    layer._call_has_training_arg = "training" in parameters
    layer._call_has_mask_arg = "mask" in parameters
    layer._call_has_context_arg = {arg: arg in parameters for arg in layer._call_context_args}


# Layer attributes (set in Layer.__init__) derived from the signature of call():
# refresh_call_signature sets each of them; tests/test_compat.py checks Keras has no others.
CALL_SIGNATURE_ATTRIBUTES = ("_call_signature", "call_signature_parameters",
                             "_call_has_training_arg", "_call_has_mask_arg",
                             "_call_has_context_arg")


def weight_storage(attribute):
    """'_kernel' for 'kernel' ('_embeddings' for 'embeddings'): the private attribute where
    Keras' Dense, EinsumDense, Conv* and Embedding keep the variable behind their public
    `kernel`/`embeddings` property; their build() assigns it there directly, so a masked twin
    must read and write the raw variable under that name (no public setter exists)."""
    return "_" + attribute


def stored_weight(layer, attribute):
    """The variable a Keras layer keeps under `weight_storage(attribute)` (None if none): the
    raw kernel even when LoRA makes the public `kernel` a computed tensor."""
    return getattr(layer, weight_storage(attribute), None)


# --------------------------------------------------------------------------------------------
# Training: Model internals of Keras' TF trainer


def aggregate_additional_loss(model, loss):
    """Trainer._aggregate_additional_loss: a loss term as Keras adds `add_loss` terms in its
    TF trainer (summed, cast to floatx, scaled by 1/replicas); not public."""
    return model._aggregate_additional_loss(loss)


def update_loss_metric(model, loss, x):
    """Model._loss_tracker and keras.src.losses.loss.unscale_loss_for_distribution: report
    `loss` in the 'loss' log as Keras' own TF train_step does (undo the 1/replicas scaling,
    weight by the batch size); a custom train_step has no public hook for it."""
    from keras.src.losses import loss as loss_module

    batch = next(i for i in keras.tree.flatten(x) if i is not None)
    model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                     sample_weight=tf.shape(batch)[0])


class LocalBatchSymbolicBuild:
    """Mixin for a keras.Model (put it before keras.Model in the bases) overriding the TF
    trainer's private `_maybe_symbolic_build(iterator, data_batch)`, which fit() calls before the
    first step: Keras reduces the first distributed batch with strategy.reduce('MEAN') only to
    get its shapes; under a multi-worker strategy that fails on an (x, y) tuple ("Attempt to
    convert a value (PerReplica...)", keras-team/keras#20585). This replica's part of the batch
    has those shapes, and is what this override builds from."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        from tf_lottery.training.strategy import is_multi_worker

        strategy = self.distribute_strategy
        if iterator is not None and is_multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


_NAME_COUNTERS = "object_name_uids"


def automatic_name_counters():
    """keras.src.backend.common.global_state 'object_name_uids': the per-process counters behind
    automatic layer names ('dense', 'dense_1', ...); public keras.backend.clear_session resets
    them only together with everything else."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute(_NAME_COUNTERS)


def set_automatic_name_counters(counters):
    """Replace the counters `automatic_name_counters` returns (a defaultdict(int))."""
    from keras.src.backend.common import global_state

    global_state.set_global_attribute(_NAME_COUNTERS, counters)


# --------------------------------------------------------------------------------------------
# Optimizers: Keras has no public per-variable lookup


def no_automatic_dependency_tracking(method):
    """keras.src.utils.tracking.no_automatic_dependency_tracking: run `method` without Keras
    tracking what it assigns (an optimizer's build() assigning inner optimizers' variables)."""
    from keras.src.utils import tracking

    return tracking.no_automatic_dependency_tracking(method)


def variable_index(optimizer, variable):
    """BaseOptimizer._get_variable_index: the position of `variable` among those the optimizer
    was built for, which indexes its per-variable state lists (add_optimizer_variables'); Keras'
    own optimizers look their slots up the same way and expose no public lookup."""
    return optimizer._get_variable_index(variable)


def built_variables(optimizer):
    """BaseOptimizer._trainable_variables: the variables the optimizer was built for, in the
    order of its per-variable state (no public accessor)."""
    return optimizer._trainable_variables


def iterations_variable(optimizer):
    """BaseOptimizer._iterations: the step counter variable itself (public `iterations` is a
    derived tensor under gradient accumulation, which cannot be assigned)."""
    return optimizer._iterations


def uses_weight_decay(optimizer, variable):
    """BaseOptimizer._use_weight_decay: Keras' own answer to whether `variable` is decayed
    (exclude_from_weight_decay by variable or by name pattern); not public."""
    return optimizer._use_weight_decay(variable)


def learning_rate_schedule(optimizer):
    """BaseOptimizer._learning_rate: the learning rate as given (a LearningRateSchedule, a
    callable or a variable); public `learning_rate` only evaluates it at the current step."""
    return optimizer._learning_rate


# attributes of BaseOptimizer that hold one entry per variable but are not optimizer state
_NOT_SLOTS = {"_trainable_variables", "_variables", "_model_variables_moving_average"}


def optimizer_slots(optimizer, variable):
    """The optimizer's per-variable state of `variable` (SGD momentum, Adam's m and v, ...).

    Keras has no public slot lookup, so this reads BaseOptimizer's private `_get_variable_index`
    and `_trainable_variables` and takes every list attribute with one variable per trainable
    variable (the slots), recursing into wrapped optimizers (LossScaleOptimizer,
    ScoreSplitOptimizer); the EMA copies of the weights are not slots.
    """
    found = []
    for value in vars(optimizer).values():
        if isinstance(value, keras.optimizers.Optimizer):
            found += optimizer_slots(value, variable)
    try:
        index = variable_index(optimizer, variable)
        count = len(built_variables(optimizer))
    except (AttributeError, KeyError):
        return found
    for name, value in vars(optimizer).items():
        if (name not in _NOT_SLOTS and isinstance(value, (list, tuple)) and len(value) == count
                and isinstance(value[index], keras.Variable)
                and tuple(value[index].shape) == tuple(variable.shape)):
            found.append(value[index])
    return found


# --------------------------------------------------------------------------------------------
# TensorFlow


def merge_call(fn, *args):
    """tf.__internal__.distribute.interim.maybe_merge_call: run fn(strategy, *args) once in
    cross-replica context from inside a replica (merge_call), or directly where the strategy
    needs no merge; what Keras' own TF optimizer uses to apply gradients. Public
    ReplicaContext.merge_call alone fails under strategies that disable merge calls."""
    return tf.__internal__.distribute.interim.maybe_merge_call(
        fn, tf.distribute.get_strategy(), *args)
