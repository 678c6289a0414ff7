"""Ghost modules of ToST (Jaiswal et al., ICML 2022, §2.2): temporary smooth neurons and skips.

* `GhostActivation` ("GSw"): parametric Swish f(x) = x·σ(βx) (or parametric Mish
  f(x) = x·tanh(softplus(βx))) in place of a ReLU. β is raised by a schedule (PSwish goes from
  the identity at β = 0 to ReLU as β → ∞) and the neuron is switched to exactly ReLU right before
  the first learning-rate decay.
* `GhostSkip` ("GSk", Fig. 4): adds α·P(block input) to the output of a 3x3 conv block before its
  activation; α fades from 1 to exactly 0 by the first learning-rate decay.

β, the ReLU switch and α are non-trainable variables written by a schedule callback; once faded
the modules compute exactly what the original architecture computes (bit for bit), so
`remove_ghosts` can drop them without changing a single output.
"""
import math

import keras
from keras import ops

from tf_lottery import compat
from tf_lottery.errors import ConfigError, check_choice

_PACKAGE = "tf_lottery"
SMOOTH_KINDS = ("swish", "mish")


@keras.saving.register_keras_serializable(_PACKAGE)
class GhostActivation(keras.layers.Layer):
    """ReLU stand-in: x·σ(βx) ('swish') or x·tanh(softplus(βx)) ('mish'); exactly ReLU when `relu`.

    ToST §2.2 defines PSwish f(x) = x·sigmoid(βx); Swish is β = 1. The papers use Mish
    (Misra 2019) only in its plain form x·tanh(softplus(x)); scaling its input by β is our choice,
    and like PSwish it tends to ReLU as β → ∞ and equals Mish at β = 1.

    Variables (non-trainable, `only_first_replica`): `beta` (float) and `relu` (bool). When `relu`
    is true the output is `keras.activations.relu(x)` itself. `set_beta(value)` is the setter a
    schedule drives: a finite value sets β and clears `relu`; `math.inf` sets `relu`.

    Args:
      kind: 'swish' or 'mish'.
      initial_beta: β before any schedule runs.
      relu: start switched to ReLU.
      replaced_layer: serialised config of the activation layer this one replaced (kept by
        `insert_ghosts` so `remove_ghosts` can put it back); None for a plain `keras.layers.ReLU`.
    """

    def __init__(self, kind="swish", initial_beta=1.0, relu=False, replaced_layer=None, **kw):
        super().__init__(**kw)
        check_choice("GhostActivation kind", kind, SMOOTH_KINDS)
        if not initial_beta >= 0 or math.isinf(initial_beta):
            raise ConfigError(f"initial_beta must be finite and >= 0, got {initial_beta!r}")
        self.kind = kind
        self.initial_beta = float(initial_beta)
        self.initial_relu = bool(relu)
        self.replaced_layer = replaced_layer
        self.beta = self.add_weight(name="beta", shape=(), trainable=False,
                                    initializer=keras.initializers.Constant(self.initial_beta),
                                    aggregation="only_first_replica")
        # "ones"/"zeros", not Constant(bool): Constant multiplies, and TF 2.16 has no bool Mul
        self.relu = self.add_weight(name="relu", shape=(), dtype="bool", trainable=False,
                                    initializer="ones" if self.initial_relu else "zeros",
                                    aggregation="only_first_replica")
        self.built = True

    def set_beta(self, value):
        """Schedule setter: β = value, or exactly ReLU from now on when value is +inf."""
        value = float(value)
        if math.isinf(value) and value > 0:
            self.relu.assign(True)
        else:
            self.beta.assign(value)
            self.relu.assign(False)

    def smooth(self, x):
        """The parametric smooth activation at the current β (ignores the ReLU switch)."""
        beta = ops.cast(self.beta, x.dtype)
        if self.kind == "swish":
            return x * ops.sigmoid(beta * x)
        return x * ops.tanh(ops.softplus(beta * x))

    def call(self, inputs):
        return ops.cond(ops.equal(self.relu, True),
                        lambda: keras.activations.relu(inputs),
                        lambda: self.smooth(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "initial_beta": self.initial_beta,
                "relu": self.initial_relu, "replaced_layer": self.replaced_layer}


def _project_shape(in_shape, out_shape, strides):
    """Check that P can map in_shape to out_shape; return the spatial strides it subsamples by."""
    if len(in_shape) != len(out_shape) or len(in_shape) < 2:
        raise ConfigError(f"GhostSkip needs inputs of equal rank >= 2, got {in_shape} and "
                          f"{out_shape}")
    spatial_in, spatial_out = in_shape[1:-1], out_shape[1:-1]
    if strides is None:
        strides = [1 if (i is None or o is None) else max(1, -(-i // o))  # ceil(i / o)
                   for i, o in zip(spatial_in, spatial_out)]
    strides = list(strides)
    if len(strides) != len(spatial_in):
        raise ConfigError(f"GhostSkip strides {strides} do not match spatial shape {spatial_in}")
    for i, o, s in zip(spatial_in, spatial_out, strides):
        if i is not None and o is not None and -(-i // s) < o:
            raise ConfigError(f"GhostSkip cannot map spatial size {i} (stride {s}) to {o}")
    return strides


@keras.saving.register_keras_serializable(_PACKAGE)
class GhostSkip(keras.layers.Layer):
    """call([block_input, block_output]) -> block_output + α·P(block_input) (ToST Fig. 4).

    P is parameter-free (ResNet "option A", He et al. 2016): spatial subsampling x[:, ::s, ::s]
    by the block's stride (given, or ceil(in/out) per axis, which is exact for 'same' padding),
    then a centred crop if the block shrank the map further ('valid' padding), then zero padding
    of the channels at the end when the block widens them, or keeping the first channels when it
    narrows them. α is a non-trainable `only_first_replica` variable; at α == 0 the layer returns
    block_output itself (bit for bit, even where the input holds inf or NaN).

    Channels-last only (NHWC, or (batch, features) for rank 2).
    """

    def __init__(self, initial_alpha=1.0, strides=None, **kw):
        super().__init__(**kw)
        if not initial_alpha >= 0:
            raise ConfigError(f"initial_alpha must be >= 0, got {initial_alpha!r}")
        self.initial_alpha = float(initial_alpha)
        self.strides = None if strides is None else tuple(int(s) for s in strides)
        self.alpha = self.add_weight(name="alpha", shape=(), trainable=False,
                                     initializer=keras.initializers.Constant(self.initial_alpha),
                                     aggregation="only_first_replica")
        self._projection_strides = None

    def build(self, input_shape):
        in_shape, out_shape = (tuple(s) for s in input_shape)
        self._projection_strides = _project_shape(in_shape, out_shape, self.strides)

    def project(self, block_input, out_shape):
        """P(block_input): parameter-free map to the block output's shape (see class doc)."""
        x = block_input
        if len(x.shape) > 2:
            index = [slice(None)] + [slice(None, None, s) for s in self._projection_strides]
            x = x[tuple(index)]
            shape = ops.shape(x)
            starts, sizes = [0], [shape[0]]
            for axis, size in enumerate(out_shape[1:-1], start=1):
                starts.append((shape[axis] - size) // 2)
                sizes.append(size)
            x = ops.slice(x, starts + [0], sizes + [shape[-1]])
        c_in, c_out = x.shape[-1], out_shape[-1]
        if c_in < c_out:
            pad = [[0, 0]] * (len(x.shape) - 1) + [[0, c_out - c_in]]
            x = ops.pad(x, pad)
        elif c_in > c_out:
            x = x[..., :c_out]
        return x

    def call(self, inputs):
        block_input, block_output = inputs
        out_shape = ops.shape(block_output)

        def with_skip():
            skip = self.project(block_input, out_shape)
            return block_output + ops.cast(self.alpha, block_output.dtype) * skip

        return ops.cond(ops.equal(self.alpha, 0.0),
                        lambda: block_output, with_skip)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        return {**super().get_config(), "initial_alpha": self.initial_alpha,
                "strides": self.strides}


def ghost_modules(model):
    """(GhostActivation layers, GhostSkip layers) of a model, nested models included."""
    layers = compat.sublayers(model)
    return ([layer for layer in layers if isinstance(layer, GhostActivation)],
            [layer for layer in layers if isinstance(layer, GhostSkip)])


def ghosts_faded(model):
    """True when every ghost module of `model` has faded (ReLU switched on, α == 0)."""
    activations, skips = ghost_modules(model)
    return (all(bool(ops.convert_to_numpy(layer.relu)) for layer in activations)
            and all(float(ops.convert_to_numpy(layer.alpha)) == 0.0 for layer in skips))
