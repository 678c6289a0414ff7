"""SparseModel: a keras.Model around a network, whose loss adds registered regularisers and whose
training step first runs registered per-step hooks.

Training goes through plain `model.fit`, so callbacks, progress bars, TensorBoard, `jit_compile`,
mixed precision and tf.distribute strategies work as usual. Searches attach what they need:

* `regularizers`: callables `(model) -> scalar`, added to the training loss (continuous
  sparsification's L1 on the masks, repulsion/attraction against earlier optima, ...); each is
  also reported as a metric under its name;
* `step_hooks`: callables `(model) -> None` run at the start of every training step, inside the
  compiled step (e.g. set a temperature from `model.optimizer.iterations`);
* `mask_updaters`: `tf_lottery.sparsity` updaters (gradual magnitude pruning, ...) that change
  masks in-graph at the steps their schedule selects (see `tf_lottery.sparsity.engine`).

Change these lists before `compile` (or call `compile` again afterwards).
"""
import keras
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.training.strategy import is_multi_worker

_PACKAGE = "tf_lottery"


@keras.saving.register_keras_serializable(_PACKAGE)
class SparseModel(compat.LocalBatchSymbolicBuild, keras.Model):
    """Wraps `network` (any Keras model, usually built from masked layers)."""

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.regularizers = {}
        self.step_hooks = []
        self.mask_updaters = []
        self.distillation = None  # optional callable (x, y, y_pred) -> loss replacing the data loss

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def add_regularizer(self, name, regularizer):
        """Add `regularizer(model) -> scalar` to the training loss, reported as metric `name`."""
        self.regularizers[name] = regularizer
        self._reset_compiled_functions()

    def remove_regularizer(self, name):
        self.regularizers.pop(name, None)
        self._reset_compiled_functions()

    def add_step_hook(self, hook):
        self.step_hooks.append(hook)
        self._reset_compiled_functions()

    def add_mask_updater(self, updater):
        """Let `updater` (a tf_lottery.sparsity.MaskUpdater) change the masks of this model's
        network during training; it binds to the network's masked layers now."""
        with self.distribute_strategy.scope():  # variables the updater makes are mirrored
            updater.build(self.network)
        if updater.state is not None:  # an attribute: tf.train.Checkpoint(model=...) saves it
            setattr(self, f"mask_updater_state_{len(self.mask_updaters)}", updater.state)
        self.mask_updaters.append(updater)
        self._reset_compiled_functions()

    def replace_network(self, network):
        """Run `network` from now on: e.g. the same layers in a graph with ToST's ghost modules
        put in (training) or taken out again. Variables shared by both stay as they are."""
        compat.replace_tracked_layer(self, self.network, network)
        self.network = network
        self._reset_compiled_functions()

    def _reset_compiled_functions(self):
        # a traced step captured the old lists or network: make Keras trace a new one
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.distillation is not None and training:
            # scaled by 1/replicas as Keras scales its own losses (gradients are summed)
            data_loss = compat.aggregate_additional_loss(
                self, keras.ops.mean(self.distillation(x, y, y_pred)))
            loss = data_loss + sum(compat.aggregate_additional_loss(self, l) for l in self.losses)
        else:
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                        training=training)
        if training:
            for name, regularizer in self.regularizers.items():
                term = tf.cast(regularizer(self), loss.dtype)
                self._regularizer_values[name] = term
                loss = loss + compat.aggregate_additional_loss(self, term)
        return loss

    def train_step(self, data):
        for hook in self.step_hooks:
            hook(self)
        self._regularizer_values = {}
        from tf_lottery.sparsity.engine import run_updates

        run_updates(self, [u for u in self.mask_updaters if not u.needs_dense_gradients])
        with_gradients = [u for u in self.mask_updaters if u.needs_dense_gradients]
        if with_gradients:
            logs = self._train_step_with_dense_gradients(data, with_gradients)
        else:
            logs = super().train_step(data)
        for name, value in self._regularizer_values.items():
            logs[name] = value
        return self._for_cross_worker_mean(logs)

    def _train_step_with_dense_gradients(self, data, updaters):
        """Keras's train step, plus ∂L/∂(θ ⊙ m) of the updaters' layers handed to them before the
        optimizer applies the gradients (a zero probe added to each effective kernel)."""
        from tf_lottery.sparsity.engine import run_updates

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        layers = {layer.name: layer for updater in updaters for layer in updater.layers}
        probes = {name: tf.zeros(layer.raw_kernel.shape, tf.float32)
                  for name, layer in layers.items()}
        with tf.GradientTape() as tape:
            tape.watch(list(probes.values()))
            for name, layer in layers.items():
                object.__setattr__(layer, "_dense_gradient_probe", probes[name])
            try:
                y_pred = self(x, training=True)
            finally:
                for layer in layers.values():
                    object.__setattr__(layer, "_dense_gradient_probe", None)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=True)
            compat.update_loss_metric(self, loss, x)
            loss = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        gradients = tape.gradient(loss, list(weights) + list(probes.values()))
        dense = gradients[len(weights):]
        scale = getattr(self.optimizer, "dynamic_scale", None)  # LossScaleOptimizer
        if scale is not None:
            dense = [g / tf.cast(scale, g.dtype) for g in dense]
        run_updates(self, updaters, dict(zip(probes, dense)))
        self.optimizer.apply_gradients(zip(gradients[:len(weights)], weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        return self._for_cross_worker_mean(super().test_step(data))

    # Keras 3.15 and MultiWorkerMirroredStrategy (keras-team/keras#20585): two places where
    # Keras's own code fails for every model; only the shapes Keras sees change, not the values
    # (the other one, the symbolic build, is compat.LocalBatchSymbolicBuild's).

    def _for_cross_worker_mean(self, logs):
        """Logs as 1-element vectors under a multi-worker strategy: Keras averages step logs
        across workers with strategy.reduce('MEAN', value, axis=0), which rejects scalars."""
        if not is_multi_worker(self.distribute_strategy):
            return logs
        return {name: tf.reshape(value, [1]) if len(getattr(value, "shape", ())) == 0 else value
                for name, value in logs.items()}

    def get_config(self):
        return {**super().get_config(),
                "network": keras.saving.serialize_keras_object(self.network)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        return cls(network, **config)
