"""tf.distribute strategies by name (gin: `Experiment.strategy = 'mirrored'`).

* 'default': the default strategy (one device).
* 'mirrored': MirroredStrategy over every local GPU (or the logical CPUs you configured).
* 'multi_worker': MultiWorkerMirroredStrategy configured from the TF_CONFIG environment variable.
* 'tpu': TPUStrategy; the resolver takes `tpu` (name or grpc address; '' = local / Cloud TPU VM).

The batch size of load_dataset is the global batch: Keras splits each batch over replicas.
"""
import gin
import tensorflow as tf

from tf_lottery.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


@gin.configurable
def make_strategy(name="default", devices=None, tpu=""):
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
