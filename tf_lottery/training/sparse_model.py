"""SparseModel: a keras.Model around a network, whose loss adds registered regularisers and whose
training step first runs registered per-step hooks.

Training goes through plain `model.fit`, so callbacks, progress bars, TensorBoard, `jit_compile`,
mixed precision and tf.distribute strategies work as usual. Searches attach what they need:

* `regularizers`: callables `(model) -> scalar`, added to the training loss (continuous
  sparsification's L1 on the masks, repulsion/attraction against earlier optima, ...); each is
  also reported as a metric under its name;
* `step_hooks`: callables `(model) -> None` run at the start of every training step, inside the
  compiled step (e.g. set a temperature from `model.optimizer.iterations`).

Change either list before `compile` (or call `compile` again afterwards).
"""
import keras
import tensorflow as tf

_PACKAGE = "tf_lottery"


@keras.saving.register_keras_serializable(_PACKAGE)
class SparseModel(keras.Model):
    """Wraps `network` (any Keras model, usually built from masked layers)."""

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.regularizers = {}
        self.step_hooks = []
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

    def replace_network(self, network):
        """Run `network` from now on: e.g. the same layers in a graph with ToST's ghost modules
        put in (training) or taken out again. Variables shared by both stay as they are."""
        self._tracker.replace_tracked_value("layers", self.network, network)
        self.network = network
        self._reset_compiled_functions()

    def _reset_compiled_functions(self):
        # a traced step captured the old lists or network: make Keras trace a new one
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.distillation is not None and training:
            data_loss = self.distillation(x, y, y_pred)
            loss = data_loss + sum(self._aggregate_additional_loss(l) for l in self.losses)
        else:
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                        training=training)
        if training:
            for name, regularizer in self.regularizers.items():
                term = tf.cast(regularizer(self), loss.dtype)
                self._regularizer_values[name] = term
                loss = loss + self._aggregate_additional_loss(term)
        return loss

    def train_step(self, data):
        for hook in self.step_hooks:
            hook(self)
        self._regularizer_values = {}
        logs = super().train_step(data)
        for name, value in self._regularizer_values.items():
            logs[name] = value
        return logs

    def get_config(self):
        return {**super().get_config(),
                "network": keras.saving.serialize_keras_object(self.network)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        return cls(network, **config)
