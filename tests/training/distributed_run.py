"""Runs for the tf.distribute tests, each in its own process (devices and TF_CONFIG must be set
before TensorFlow initialises).

    python -m tests.training.distributed_run mirrored OUT_DIR
        one process, 2 logical CPUs: every search below once on one device and once under
        MirroredStrategy over both, same global batch; writes OUT_DIR/<kind>_<strategy>.npz
    python -m tests.training.distributed_run optimizer OUT_NPZ
        one process, 2 logical CPUs: PyTorchSGD/PyTorchAdam with coupled weight decay fitted
        on one device and under MirroredStrategy (the decay must be added once)
    python -m tests.training.distributed_run multi_worker OUT_JSON WORKDIR
        one worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG from the environment):
        a tiny soft iEP round through bin/train's code path; writes what it saw to OUT_JSON
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, TRAIN_EXAMPLES, TEST_EXAMPLES = 64, 256, 128


def _fixed_mask_search():
    """A FixedMask search with what other searches add to training: a regulariser, a per-step
    hook (replica context) and a per-batch schedule (ScheduleCallback, cross-replica)."""
    import keras
    import tensorflow as tf

    from tf_lottery import masks as masks_lib
    from tf_lottery.layers.mask_rules import FixedMask
    from tf_lottery.pruning import magnitude_masks, random_masks
    from tf_lottery.search.base import RoundSearch
    from tf_lottery.training.callbacks import ScheduleCallback
    from tf_lottery.training.recipe import TrainingRecipe
    from tf_lottery.training.schedules import GhostBetaSchedule
    from tf_lottery.training.sparse_model import SparseModel

    class FixedMaskSearch(RoundSearch):
        algorithm = "fixed_mask"

        def build(self, experiment):
            network = experiment.build_network(
                mask_rule=FixedMask(), kernel_initializer=keras.initializers.GlorotUniform(3))
            with experiment.strategy.scope():
                model = SparseModel(network)
            layers = masks_lib.masked_layers(network)
            model.add_regularizer("l2", lambda m: 1e-3 * tf.add_n(
                [tf.reduce_sum(tf.square(layer.kernel)) for layer in layers]))
            hooked = network.get_layer("ghost_fc")
            model.add_step_hook(lambda m: hooked.beta.assign(
                1.0 + tf.cast(m.optimizer.iterations, tf.float32) / 4.0))
            return model

        def begin_round(self, model, index, experiment):
            if index == 0:
                masks = random_masks(model.network, prune_fraction=0.5, seed=7)
            else:
                masks = magnitude_masks(model.network, prune_fraction=0.5)
            masks_lib.set_masks(model.network, masks)

        def round_callbacks(self, model, index, experiment):
            ghost = model.network.get_layer("ghost_conv")
            return [ScheduleCallback([(ghost.set_beta, GhostBetaSchedule(4, 1.0, 3.0))],
                                     per_batch=True)]

    return FixedMaskSearch(num_rounds=2, recipe=TrainingRecipe(epochs=1, learning_rate=0.05))


def fixed_mask_net(input_shape, num_classes, mask_rule=None, kernel_initializer=None, **_):
    import keras

    from tf_lottery.layers import MaskedConv2D, MaskedDense
    from tf_lottery.layers.ghosts import GhostActivation

    inputs = keras.Input(input_shape)
    x = MaskedConv2D(4, 3, name="conv", mask_rule=mask_rule,
                     kernel_initializer=kernel_initializer)(inputs)
    # synchronized: batch statistics over the global batch, as on one device
    x = keras.layers.BatchNormalization(synchronized=True, name="bn")(x)
    x = GhostActivation(name="ghost_conv")(x)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    x = MaskedDense(16, name="fc", mask_rule=mask_rule, kernel_initializer=kernel_initializer)(x)
    x = GhostActivation(name="ghost_fc")(x)
    outputs = MaskedDense(num_classes, name="output", mask_rule=mask_rule,
                          kernel_initializer=kernel_initializer)(x)
    return keras.Model(inputs, outputs)


def edge_popup_net(input_shape, num_classes, mask_rule=None, kernel_initializer=None,
                   score_initializer=None, affine=False):
    import keras

    from tf_lottery.layers import MaskedConv2D, MaskedDense

    masking = dict(mask_rule=mask_rule, kernel_initializer=kernel_initializer,
                   score_initializer=score_initializer, use_bias=False)
    inputs = keras.Input(input_shape)
    x = MaskedConv2D(4, 3, name="conv", **masking)(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    x = MaskedDense(16, activation="relu", name="fc", **masking)(x)
    outputs = MaskedDense(num_classes, name="output", **masking)(x)
    return keras.Model(inputs, outputs)


def _edge_popup_search(cycles=2):
    from tf_lottery.search.edge_popup import EdgePopupSearch
    from tf_lottery.training.recipe import TrainingRecipe

    return EdgePopupSearch(variant="soft_lr", cycles=cycles, shrinkage=0.5,
                           recipe=TrainingRecipe(epochs=1, learning_rate=0.1))


def _data():
    from tf_lottery.data import load_dataset

    return load_dataset(batch_size=BATCH, train_examples=TRAIN_EXAMPLES,
                        test_examples=TEST_EXAMPLES)


def _state(search, workdir, results):
    """Arrays to compare: every round's ticket masks and metrics, the final variables."""
    import keras
    import numpy as np

    from tf_lottery.search import rounds

    state = {}
    for result in results:
        index = result["round"]
        for name, mask in rounds.load_round_masks(workdir, index).items():
            state[f"round{index}/mask/{name}"] = mask
        for key in ("test_accuracy", "test_loss", "train_loss"):
            state[f"round{index}/{key}"] = np.float64(result[key])
    for variable in search.model.network.weights:
        state[f"final/{variable.path}"] = keras.ops.convert_to_numpy(variable)
    return state


def mirrored(out_dir):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np

    from tf_lottery.experiment import Experiment
    from tf_lottery.training.strategy import make_strategy

    runs = {"fixed_mask": (_fixed_mask_search, fixed_mask_net),
            "edge_popup": (_edge_popup_search, edge_popup_net)}
    for kind, (make_search, net) in runs.items():
        for name in ("one_device", "mirrored"):
            strategy = (make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
                        if name == "mirrored" else "default")
            search = make_search()
            workdir = os.path.join(out_dir, f"{kind}_{name}")
            experiment = Experiment(workdir=workdir, search=search, model_fn=net, dataset=_data(),
                                    strategy=strategy, verbose=0, tensorboard=False)
            replicas = experiment.strategy.num_replicas_in_sync
            results = experiment.run()
            state = _state(search, workdir, results)
            state["replicas"] = np.int64(replicas)
            np.savez(os.path.join(out_dir, f"{kind}_{name}.npz"), **state)


def optimizer(out_path):
    """The same fit of a small Dense net with PyTorchSGD / PyTorchAdam (strong coupled weight
    decay) on one device and on two replicas; writes the final kernels."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from tf_lottery.training.optimizers import PyTorchAdam, PyTorchSGD
    from tf_lottery.training.strategy import make_strategy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 2))).astype("float32")
    makers = {"sgd": lambda wd: PyTorchSGD(0.05, momentum=0.9, weight_decay=wd),
              "adam": lambda wd: PyTorchAdam(0.01, weight_decay=wd)}
    out = {}
    for name, make in makers.items():
        for run, wd, strategy in (("one_device", 0.2, tf.distribute.get_strategy()),
                                  ("no_decay", 0.0, tf.distribute.get_strategy()),
                                  ("mirrored", 0.2, make_strategy("mirrored",
                                                                  devices=["/cpu:0", "/cpu:1"]))):
            with strategy.scope():
                model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(
                    2, use_bias=False, kernel_initializer=keras.initializers.Constant(0.5))])
                model.compile(optimizer=make(wd), loss="mse")
            model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)
            out[f"{name}_{run}"] = keras.ops.convert_to_numpy(model.layers[0].kernel)
            out["replicas"] = np.int64(strategy.num_replicas_in_sync)
    np.savez(out_path, **out)


def multi_worker(out_json, workdir):
    """One worker of the cluster in TF_CONFIG, through bin/train's code path and gin files."""
    import numpy as np

    from tf_lottery.cli.run import train
    from tf_lottery.config import parse_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parse_config([os.path.join(root, "gin_configs", "soft_iep.gin")], [
        "Experiment.strategy = 'multi_worker'", "Experiment.verbose = 0",
        f"load_dataset.batch_size = {BATCH}", f"load_dataset.train_examples = {TRAIN_EXAMPLES}",
        f"load_dataset.test_examples = {TEST_EXAMPLES}", "TrainingRecipe.epochs = 1",
        "EdgePopupSearch.cycles = 1", "build_model.plan = [4, 'pool']",
        "build_model.dense_units = [16]"])
    experiment, results = train(workdir, export=False)
    own = experiment.workdir
    masks = experiment.search.ticket_masks(experiment.search.model)
    np.savez(out_json + ".npz", **masks)
    with open(out_json, "w") as f:
        json.dump({"is_chief": experiment.is_chief, "workdir": own,
                   "replicas": experiment.strategy.num_replicas_in_sync,
                   "wrote_round": os.path.exists(os.path.join(own, "round_00", "metrics.json")),
                   "test_accuracy": results[-1]["test_accuracy"]}, f)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"mirrored": mirrored, "multi_worker": multi_worker, "optimizer": optimizer}[mode](*args)
