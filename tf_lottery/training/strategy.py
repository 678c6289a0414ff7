"""tf.distribute strategies by name (gin: `Experiment.strategy = 'mirrored'`).

* 'default': the default strategy (one device).
* 'mirrored': MirroredStrategy over every local GPU (or the logical CPUs you configured).
* 'multi_worker': MultiWorkerMirroredStrategy configured from the TF_CONFIG environment variable.
* 'tpu': TPUStrategy; the resolver takes `tpu` (name or grpc address; '' = local / Cloud TPU VM).

The batch size of load_dataset is the global batch: Keras splits each batch over replicas.
Every variable (network, masks, scores, rule state, optimizer slots) is created under
`strategy.scope()`; non-trainable rule state is aggregated 'only_first_replica', since every
replica computes the same value from the same mirrored scores.
"""
import gin
import tensorflow as tf

from tf_lottery.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# One MirroredStrategy per device list and process: a second one over the same devices reuses
# the collective instance keys of the first, and its all-reduces then fail with "Shape mismatch
# in the collective instance" (TF 2.21, CPU devices) as soon as both have trained.
_MIRRORED = {}


@gin.configurable
def make_strategy(name="default", devices=None, tpu=""):
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        key = tuple(devices) if devices is not None else None
        if key not in _MIRRORED:
            _MIRRORED[key] = tf.distribute.MirroredStrategy(devices=devices)
        return _MIRRORED[key]
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def is_chief(strategy):
    """Whether this process writes the run's files: always, except on the workers of a
    multi-worker strategy other than the chief (the 'chief' task, else worker 0, as Keras and
    tf.distribute decide it)."""
    try:
        return bool(strategy.extended.should_checkpoint)
    except NotImplementedError:
        return True


def is_multi_worker(strategy):
    """Whether `strategy` spans several worker processes (MultiWorkerMirroredStrategy)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(cluster.get("chief", [])) + len(cluster.get("worker", [])) > 1


def sync_workers(strategy):
    """Wait until every worker of a multi-worker strategy reaches this point (an all-reduce of
    one number); nothing to wait for otherwise."""
    if is_multi_worker(strategy):
        ones = strategy.run(lambda: tf.constant(1.0))
        strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)
