"""Gradual magnitude pruning on one device and under MirroredStrategy over 2 logical CPUs, in its
own process (logical devices must be set before TensorFlow initialises):

    python -m tests.sparsity.distributed_gmp OUT_NPZ

writes each run's masks, and for the mirrored run every replica's copy of each mask and the
dense gradient a gradient-asking updater received.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, STEPS = 16, 4


def main(out_path):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from tf_lottery.layers import masked_layers
    from tf_lottery.sparsity import MaskUpdater, PolynomialDecay, prune_low_magnitude
    from tf_lottery.training.strategy import make_strategy

    class Probe(MaskUpdater):
        """Keeps the dense gradient of `fc` received at step 2."""

        needs_dense_gradients = True

        def build(self, model):
            super().build(model)
            self.seen = tf.Variable(tf.zeros(self.layers[0].mask.shape),
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

        def is_update_step(self, step):
            return tf.equal(step, 2)

        def update(self, step, dense_gradients=None):
            self.seen.assign(dense_gradients[self.layers[0].name])

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS, 12)).astype("float32")
    y = rng.integers(0, 3, BATCH * STEPS)
    out = {}
    for run in ("one_device", "mirrored"):
        strategy = (make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"]) if run == "mirrored"
                    else tf.distribute.get_strategy())
        with strategy.scope():
            keras.utils.set_random_seed(1)
            inputs = keras.Input((12,))
            h = keras.layers.Dense(16, activation="relu", name="fc")(inputs)
            base = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
            model = prune_low_magnitude(
                base, PolynomialDecay(0.0, 0.75, begin_step=1, end_step=3, frequency=1),
                distribution="erk")
            probe = Probe(exclude=["out"])
            model.add_mask_updater(probe)
            model.compile(keras.optimizers.SGD(0.05),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        out["replicas_" + run] = np.int64(strategy.num_replicas_in_sync)
        out[f"{run}/gradient"] = probe.seen.numpy()
        for layer in masked_layers(model):
            out[f"{run}/{layer.name}"] = layer.mask.numpy()
            if run == "mirrored":
                copies = layer.mask.value.values  # the MirroredVariable's per-device copies
                for index, copy in enumerate(copies):
                    out[f"{run}/{layer.name}/replica{index}"] = copy.numpy()
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:])
