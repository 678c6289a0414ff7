"""tf_lottery.compat: each wrapper of a private Keras/TF internal, run on real Keras/TF objects.

A failure here names the internal a Keras or TensorFlow release removed or changed: fix its
wrapper in tf_lottery/compat.py (or narrow the supported range in setup.cfg). The last test
keeps the rest of the package from using private Keras/TF API outside compat.
"""
import collections
import inspect
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.layers import MASKED_TWINS, MaskedLayerMixin


def _has(obj, attribute, what):
    owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    assert hasattr(obj, attribute), (f"Keras/TF internal {what} is gone ({owner} has no "
                                     f"{attribute!r}): update tf_lottery/compat.py")


class _Block(keras.layers.Layer):
    """A user layer with a variable of its own and a sub-layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(3, name="inner")

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(3,), initializer="ones")
        self.inner.build(input_shape)

    def call(self, inputs):
        return self.inner(inputs) * self.scale


def _nested_model():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="nested_dense")],
                             name="nested")
    inputs = keras.Input((4,), name="x")
    block = _Block(name="block")
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(block(inputs)))), block


# ---------------------------------------------------------------------------------------------
# layers and models


def test_sublayers_is_every_layer_depth_first():
    _has(keras.layers.Layer, "_flatten_layers", "Layer._flatten_layers")
    model, block = _nested_model()
    names = [layer.name for layer in compat.sublayers(model)]
    # a layer's own sub-layers come in reverse (deque.extendleft): masked_layers' order
    assert names == ["x", "block", "inner", "nested", "nested_dense", "input_layer", "head"], (
        f"Layer._flatten_layers(include_self=False, recursive=True) changed: {names}")
    assert compat.sublayers(model, include_self=True)[0] is model
    assert [layer.name for layer in compat.sublayers(model, recursive=False)] == [
        "x", "block", "nested", "head"]
    assert compat.sublayers(block) == [block.inner]


def test_own_variables_are_the_layers_own_not_its_sublayers():
    _, block = _nested_model()
    _has(block, "_trainable_variables", "Layer._trainable_variables")
    _has(block, "_non_trainable_variables", "Layer._non_trainable_variables")
    own = compat.own_variables(block)
    assert [v.name for v in own] == ["scale"], (
        f"Layer._trainable_variables + _non_trainable_variables changed: {[v.name for v in own]}")
    batch_norm = keras.layers.BatchNormalization()
    batch_norm.build((None, 3))
    assert {v.name for v in compat.own_variables(batch_norm)} == {
        "gamma", "beta", "moving_mean", "moving_variance"}
    # own + sub-layers' = all, as Layer.weights lists them
    assert ({id(v) for v in own} | {id(v) for v in block.inner.weights}
            == {id(v) for v in block.weights})


def test_functional_class_and_graph_models():
    inputs = keras.Input((2,))
    functional = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    assert isinstance(functional, compat.functional_class()), (
        "keras.src.models.functional.Functional is no longer the class of keras.Model(inputs, "
        "outputs)")
    sequential = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert compat.is_graph_model(functional) and compat.is_graph_model(sequential)
    assert not compat.is_graph_model(Subclassed())


def test_input_layer_name_is_the_input_layers():
    named, unnamed = keras.Input((2,), name="img"), keras.Input((2,))
    model = keras.Model([named, unnamed], keras.layers.Add()([named, unnamed]))
    _has(model.inputs[0], "_keras_history", "KerasTensor._keras_history")
    input_layers = [layer.name for layer in model.layers
                    if isinstance(layer, keras.layers.InputLayer)]
    assert [compat.input_layer_name(t) for t in model.inputs] == input_layers, (
        "KerasTensor._keras_history.operation no longer names the model's InputLayer")


def test_unlocked_lets_a_built_layer_take_new_variables_and_locks_it_again():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    _has(layer, "_tracker", "Layer._tracker")
    _has(layer, "_lock_state", "Layer._lock_state")
    with pytest.raises(Exception, match="(?i)lock|state|built"):
        layer.extra = layer.add_weight(name="extra", shape=(1,))
    with compat.unlocked(layer):
        layer.extra = layer.add_weight(name="extra", shape=(1,))
    assert any(v is layer.extra for v in layer.weights), "Layer._tracker.unlock() did not unlock"
    assert layer._tracker.locked, "Layer._lock_state() no longer locks Layer._tracker"
    with pytest.raises(Exception, match="(?i)lock|state|built"):
        layer.extra_2 = layer.add_weight(name="extra_2", shape=(1,))


def test_replace_tracked_layer_swaps_the_tracked_sublayer():
    class Holder(keras.Model):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def call(self, x):
            return self.network(x)

    old, new = keras.layers.Dense(2, name="old"), keras.layers.Dense(2, name="new")
    old.build((None, 3))
    new.build((None, 3))
    holder = Holder(old)
    _has(holder, "_tracker", "Layer._tracker.replace_tracked_value")
    compat.replace_tracked_layer(holder, old, new)
    holder.network = new
    ids = {id(v) for v in holder.weights}
    assert ids == {id(v) for v in new.weights}, (
        "Layer._tracker.replace_tracked_value('layers', ...) did not replace the sub-layer")


def test_call_signature_attributes_are_all_that_keras_derives_from_call():
    layer = keras.layers.Dense(2)
    derived = {name for name in vars(layer)
               if name.startswith("_call_has") or name in ("_call_signature",
                                                           "call_signature_parameters")}
    assert derived == set(compat.CALL_SIGNATURE_ATTRIBUTES), (
        f"Layer.__init__ now derives {sorted(derived)} from call() (compat.refresh_call_signature "
        f"sets {sorted(compat.CALL_SIGNATURE_ATTRIBUTES)})")
    _has(layer, "_call_context_args", "Layer._call_context_args")


def test_refresh_call_signature_makes_keras_pass_training_after_a_class_change():
    seen = []

    class Plain(keras.layers.Layer):
        def call(self, inputs):
            return inputs

    class WithTraining(Plain):
        def call(self, inputs, training=None):
            seen.append(training)
            return inputs

    layer = Plain()
    layer.build((None, 2))
    layer.__class__ = WithTraining
    compat.refresh_call_signature(layer)
    outer_inputs = keras.Input((2,))
    model = keras.Model(outer_inputs, layer(outer_inputs))
    seen.clear()
    model(np.ones((1, 2), "float32"), training=True)
    assert seen and seen[-1] is True, (
        "Keras no longer passes `training` to call() by the attributes "
        "compat.refresh_call_signature sets (Layer._call_has_training_arg, ...)")


@pytest.mark.parametrize("parent", [p for p, twin in MASKED_TWINS.items()
                                    if issubclass(twin, MaskedLayerMixin)],
                         ids=lambda p: p.__name__)
def test_weight_storage_holds_each_masked_parents_variable(parent):
    twin = MASKED_TWINS[parent]
    attribute = twin.masked_weight
    args = {keras.layers.Dense: (3,), keras.layers.EinsumDense: ("ab,bc->ac", 3),
            keras.layers.Embedding: (10, 3)}.get(parent)
    shape = {keras.layers.Embedding: (None, 4)}.get(parent)
    if args is None:
        depthwise = parent.__name__.startswith("Depthwise")
        args = (3,) if depthwise else (2, 3)
        rank = int(re.search(r"(\d)D", parent.__name__).group(1))
        shape = (None,) + (6,) * rank + (2,)
    shape = shape or (None, 4)
    layer = parent(*args)
    layer.build(shape)
    public = getattr(layer, attribute)
    stored = compat.stored_weight(layer, attribute)
    if attribute in vars(layer):  # a plain attribute: to_twin moves it to the storage name
        assert stored is None
    else:
        assert isinstance(stored, keras.Variable) and stored is public, (
            f"{parent.__name__} no longer keeps its {attribute} variable in "
            f"{compat.weight_storage(attribute)!r} (compat.weight_storage)")
    masked = twin(*args)
    masked.build(shape)
    assert isinstance(masked.raw_kernel, keras.Variable)
    assert any(v is masked.raw_kernel for v in masked.weights), (
        f"{parent.__name__}.build() no longer stores {attribute} where the masked twin reads it")


def test_stored_weight_is_the_raw_kernel_under_lora():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    layer.enable_lora(2)
    assert isinstance(compat.stored_weight(layer, "kernel"), keras.Variable)
    assert not isinstance(layer.kernel, keras.Variable)


# ---------------------------------------------------------------------------------------------
# training


def _compiled():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_aggregate_additional_loss_sums_and_casts():
    model = _compiled()
    _has(model, "_aggregate_additional_loss", "Trainer._aggregate_additional_loss")
    value = compat.aggregate_additional_loss(model, tf.constant([1.0, 2.5]))
    assert float(value) == pytest.approx(3.5)
    assert compat.aggregate_additional_loss(model, tf.constant(2, tf.int32)).dtype == tf.float32


def test_update_loss_metric_reports_the_loss_log():
    model = _compiled()
    model.fit(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0)  # builds the metrics
    for metric in model.metrics:
        metric.reset_state()
    _has(model, "_loss_tracker", "Trainer._loss_tracker")
    compat.update_loss_metric(model, tf.constant(3.0), np.zeros((4, 2), "float32"))
    compat.update_loss_metric(model, tf.constant(1.0), np.zeros((4, 2), "float32"))
    assert float(model.get_metrics_result()["loss"]) == pytest.approx(2.0), (
        "Trainer._loss_tracker no longer holds the 'loss' log")


def test_local_batch_symbolic_build_overrides_what_fit_calls():
    keras_method = getattr(keras.Model, "_maybe_symbolic_build", None)
    assert keras_method is not None, "Keras' TF trainer has no _maybe_symbolic_build any more"
    assert {"iterator", "data_batch"} <= set(inspect.signature(keras_method).parameters), (
        "Trainer._maybe_symbolic_build(iterator, data_batch) changed its signature")
    calls = []

    class Spy(compat.LocalBatchSymbolicBuild, keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append(iterator is not None)
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    model = Spy()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32"), verbose=0)
    assert calls and calls[0], "fit() no longer calls _maybe_symbolic_build(iterator=...)"


def test_automatic_name_counters_drive_automatic_names():
    keras.layers.Dense(1)
    counters = compat.automatic_name_counters()
    assert counters is not None and counters.get("dense", 0) >= 1, (
        "keras.src.backend.common.global_state 'object_name_uids' no longer counts names")
    try:
        compat.set_automatic_name_counters(collections.defaultdict(int))
        assert keras.layers.Dense(1).name == "dense"
        assert keras.layers.Dense(1).name == "dense_1"
    finally:
        compat.set_automatic_name_counters(counters)
    assert keras.layers.Dense(1).name != "dense"


# ---------------------------------------------------------------------------------------------
# optimizers


def test_no_automatic_dependency_tracking_leaves_assignments_untracked():
    class Owner(keras.layers.Layer):
        @compat.no_automatic_dependency_tracking
        def attach(self, variable):
            self.untracked = variable

    owner = Owner()
    owner.attach(keras.Variable(1.0, name="v"))
    assert not owner.weights, "keras.src.utils.tracking.no_automatic_dependency_tracking tracked"


def _built(optimizer, *variables):
    optimizer.build(list(variables))
    return optimizer


def test_variable_index_and_built_variables():
    a, b = keras.Variable(np.ones(2), name="a"), keras.Variable(np.ones(3), name="b")
    optimizer = _built(keras.optimizers.SGD(0.1, momentum=0.9), a, b)
    _has(optimizer, "_get_variable_index", "BaseOptimizer._get_variable_index")
    assert compat.variable_index(optimizer, b) == 1
    assert list(compat.built_variables(optimizer)) == [a, b], (
        "BaseOptimizer._trainable_variables is no longer the built variables in order")


def test_iterations_variable_counts_steps():
    v = keras.Variable(np.ones(2), name="v")
    optimizer = _built(keras.optimizers.SGD(0.1), v)
    optimizer.apply([np.ones(2, "float32")], [v])
    counter = compat.iterations_variable(optimizer)
    assert isinstance(counter, keras.Variable), "BaseOptimizer._iterations is not a variable"
    assert int(counter.numpy()) == 1 == int(optimizer.iterations.numpy())


def test_uses_weight_decay_follows_exclude_from_weight_decay():
    kernel, bias = keras.Variable(np.ones(2), name="kernel"), keras.Variable(np.ones(2), name="bias")
    optimizer = keras.optimizers.AdamW(0.1, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    _built(optimizer, kernel, bias)
    _has(optimizer, "_use_weight_decay", "BaseOptimizer._use_weight_decay")
    assert compat.uses_weight_decay(optimizer, kernel)
    assert not compat.uses_weight_decay(optimizer, bias)


def test_learning_rate_schedule_is_the_schedule_as_given():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert compat.learning_rate_schedule(keras.optimizers.SGD(schedule)) is schedule, (
        "BaseOptimizer._learning_rate no longer holds the schedule")
    rate = compat.learning_rate_schedule(keras.optimizers.SGD(0.25))
    assert float(keras.ops.convert_to_numpy(rate)) == pytest.approx(0.25)


@pytest.mark.parametrize("make, count", [
    (lambda: keras.optimizers.SGD(0.1, momentum=0.9), 1),
    (lambda: keras.optimizers.Adam(0.1), 2),
    (lambda: keras.optimizers.Adam(0.1, use_ema=True), 2),
    (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.1)), 2),
], ids=["sgd_momentum", "adam", "adam_ema", "loss_scale_adam"])
def test_optimizer_slots_are_the_per_variable_state(make, count):
    a, b = keras.Variable(np.ones((2, 3)), name="a"), keras.Variable(np.ones(3), name="b")
    optimizer = _built(make(), a, b)
    slots = compat.optimizer_slots(optimizer, a)
    assert len(slots) == count and all(tuple(s.shape) == (2, 3) for s in slots), (
        f"{type(optimizer).__name__}: optimizer_slots found {[s.path for s in slots]} "
        f"(BaseOptimizer's per-variable lists changed)")
    assert not any(s is a for s in slots)


# ---------------------------------------------------------------------------------------------
# TensorFlow


def test_merge_call_runs_once_in_cross_replica_context():
    _has(tf.__internal__.distribute.interim, "maybe_merge_call",
         "tf.__internal__.distribute.interim.maybe_merge_call")
    seen = []

    def fn(strategy, value):
        seen.append((strategy, tf.distribute.in_cross_replica_context(), value))

    compat.merge_call(fn, 7)  # no strategy: called directly
    assert seen == [(tf.distribute.get_strategy(), False, 7)]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    seen.clear()
    strategy.run(tf.function(lambda: compat.merge_call(fn, 8)))
    assert len(seen) == 1 and seen[0][0] is strategy and seen[0][1] and seen[0][2] == 8


# ---------------------------------------------------------------------------------------------
# nothing outside compat


_PRIVATE = re.compile(
    r"keras\.src\b|tf\.__internal__|tensorflow\.python|"
    r"\.(_flatten_layers|_layers|_trainable_variables|_non_trainable_variables|_variables|"
    r"_tracker|_lock_state|_keras_history|_inbound_nodes|_call_signature|_call_has_\w+|"
    r"_call_context_args|_maybe_symbolic_build|_compute_loss|_aggregate_additional_loss|"
    r"_loss_tracker|_compile_loss|_get_variable_index|_use_weight_decay|_iterations|"
    r"_learning_rate|_kernel|_embeddings|_query_dense|_key_dense|_value_dense|_output_dense)\b|"
    r"""["'](_kernel|_embeddings|_run_through_graph|_compile_loss)["']""")


def test_no_private_keras_or_tf_api_outside_compat():
    package = pathlib.Path(compat.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _PRIVATE.search(code):
                found.append(f"{path.relative_to(package.parent)}:{number}: {line.strip()}")
    assert not found, ("private Keras/TF API outside tf_lottery/compat.py (wrap it there, with a "
                       "test in tests/test_compat.py):\n" + "\n".join(found))
