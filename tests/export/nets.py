"""Tiny masked networks and training for the export tests."""
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

from tf_lottery.layers import (FixedMask, KaimingNormal, MaskedConv2D, MaskedDense,
                               MaskedDepthwiseConv2D, SignedKaimingConstant, TopKScores,
                               masked_layers, score_initializer)
from tf_lottery.search.edge_popup import freeze_weights
from tf_lottery.training.sparse_model import SparseModel

INPUT_SHAPE = (8, 8, 2)
NUM_CLASSES = 3


def conv_net(rule=None, seeded=True, seed=0, affine=True, initializer=KaimingNormal):
    """conv-BN-ReLU, depthwise conv-BN-ReLU, residual Add, pooling, dense, dense (logits).

    `rule` is the mask rule of every masked layer (FixedMask by default); `seeded` gives every
    kernel and score initialiser its own seed, so a rebuild from config draws the same values.
    """
    rule = rule or FixedMask()
    count = iter(range(100))

    def init():
        return initializer(seed=seed + next(count)) if seeded else "glorot_uniform"

    def masking():
        scores = score_initializer(seed=seed + 50 + next(count)) if seeded else "kaiming_uniform"
        return {"mask_rule": rule, "score_initializer": scores}

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = MaskedConv2D(4, 3, padding="same", use_bias=False, kernel_initializer=init(),
                     name="conv1", **masking())(inputs)
    x = keras.layers.BatchNormalization(center=affine, scale=affine, name="bn1")(x)
    block_in = keras.layers.ReLU(name="relu1")(x)
    y = MaskedDepthwiseConv2D(3, padding="same", use_bias=False,
                              depthwise_initializer=init(), name="depthwise", **masking())(block_in)
    y = keras.layers.BatchNormalization(center=affine, scale=affine, name="bn2")(y)
    y = keras.layers.Add(name="add")([y, block_in])
    y = keras.layers.ReLU(name="relu2")(y)
    y = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    y = MaskedDense(6, activation="relu", kernel_initializer=init(), name="fc", **masking())(y)
    outputs = MaskedDense(NUM_CLASSES, kernel_initializer=init(), name="logits",
                          **masking())(y)
    return keras.Model(inputs, outputs, name="tiny_conv")


def dense_net(density=0.1, seed=0, features=64, hidden=256):
    """features -> MaskedDense(hidden, relu) -> MaskedDense(NUM_CLASSES), random masks keeping
    `density` of each kernel: a model whose size is mostly its kernels (size tests)."""
    inputs = keras.Input((features,), name="features")
    x = MaskedDense(hidden, activation="relu", name="fc",
                    kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(inputs)
    outputs = MaskedDense(NUM_CLASSES, name="logits",
                          kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1))(x)
    network = keras.Model(inputs, outputs, name="tiny_dense")
    random_masks(network, density=density, seed=seed + 2)
    return network


def strong_conv_net(seed=0):
    """An edge-popup ticket: signed-constant weights (frozen), top-k scores, non-affine BN."""
    network = conv_net(rule=TopKScores(0.4), seed=seed, affine=False,
                       initializer=SignedKaimingConstant)
    freeze_weights(network)
    return network


def random_masks(network, density=0.5, seed=1):
    rng = np.random.default_rng(seed)
    for layer in masked_layers(network):
        layer.mask.assign((rng.random(layer.mask.shape) < density).astype("float32"))


def batch(n=8, seed=2):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, *INPUT_SHAPE)).astype("float32"),
            rng.integers(0, NUM_CLASSES, size=n))


def train(network, steps=3):
    """A few SGD steps through SparseModel.fit (moves what is trainable, and BN statistics)."""
    model = SparseModel(network)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)  # tracing the top-k bisection costs more than 3 steps
    x, y = batch(8 * steps, seed=3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model


# Run in a fresh interpreter without tf_lottery: -I ignores PYTHONPATH and the user site, and
# the editable install's finder and path hook are taken out before anything is imported.
_WITHOUT_TF_LOTTERY = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "tf_lottery" not in repr(f)
                    and "tf_lottery" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if "tf_lottery" not in p]
try:
    import tf_lottery
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("tf_lottery is importable: " + tf_lottery.__file__)
"""


def run_python(code, cwd, without_tf_lottery):
    """Run `code` in a fresh interpreter in `cwd`; fails the test on a non-zero exit."""
    prelude = _WITHOUT_TF_LOTTERY if without_tf_lottery else ""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" or not without_tf_lottery}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    flags = ["-I"] if without_tf_lottery else []
    result = subprocess.run([sys.executable, *flags, "-c", prelude + textwrap.dedent(code)],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout
