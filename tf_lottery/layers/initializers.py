"""Initialisations for tickets: Kaiming (He et al. 2015) normal/uniform, signed Kaiming constant
(Ramanujan et al. 2020), their "scaled" variants for sparse layers, and score initialisations.

Fans follow PyTorch/Keras: fan_in = receptive field x input channels. `density` (the kept
fraction of the layer) scales the fan as in edge-popup's `scale_fan` option: std = gain /
sqrt(fan · density), i.e. the dense std times 1/sqrt(density).
"""
import math

import keras
import numpy as np

from tf_lottery.errors import ConfigError, check_fraction

_PACKAGE = "tf_lottery"


def compute_fans(shape):
    """(fan_in, fan_out) of a kernel: Dense (in, out), Conv (kh, kw, in, out)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def kaiming_std(shape, mode="fan_in", gain=math.sqrt(2.0), density=1.0):
    """σ = gain / sqrt(fan · density) (He et al. 2015, Eq. 10; relu gain √2)."""
    fan_in, fan_out = compute_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(mode)
    if fan is None:
        raise ConfigError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return gain / math.sqrt(fan * density)


class _Kaiming(keras.initializers.Initializer):
    def __init__(self, mode="fan_in", gain=math.sqrt(2.0), density=1.0, seed=None):
        self.mode, self.gain, self.seed = mode, float(gain), seed
        self.density = check_fraction("density", density, allow_one=True)
        if self.density == 0:
            raise ConfigError("density must be > 0 for a scaled initialisation")

    def std(self, shape):
        return kaiming_std(shape, self.mode, self.gain, self.density)

    def get_config(self):
        return {"mode": self.mode, "gain": self.gain, "density": self.density, "seed": self.seed}


@keras.saving.register_keras_serializable(_PACKAGE)
class KaimingNormal(_Kaiming):
    """w ~ N(0, σ²), σ = gain/sqrt(fan·density) (He et al. 2015; untruncated, like PyTorch)."""

    def __call__(self, shape, dtype=None):
        return keras.random.normal(shape, stddev=self.std(shape), dtype=dtype, seed=self.seed)


@keras.saving.register_keras_serializable(_PACKAGE)
class KaimingUniform(_Kaiming):
    """w ~ U(-√3σ, √3σ), σ = gain/sqrt(fan·density) (He et al. 2015)."""

    def __call__(self, shape, dtype=None):
        bound = math.sqrt(3.0) * self.std(shape)
        return keras.random.uniform(shape, -bound, bound, dtype=dtype, seed=self.seed)


@keras.saving.register_keras_serializable(_PACKAGE)
class SignedKaimingConstant(_Kaiming):
    """w = ±σ with a random sign, σ the Kaiming std (Ramanujan et al. 2020, "signed constant")."""

    def __call__(self, shape, dtype=None):
        signs = keras.ops.sign(keras.random.uniform(shape, -1.0, 1.0, dtype=dtype, seed=self.seed))
        signs = keras.ops.where(signs == 0, keras.ops.ones_like(signs), signs)
        return signs * self.std(shape)


@keras.saving.register_keras_serializable(_PACKAGE)
class DepthwiseInitializer(keras.initializers.Initializer):
    """Draws a depthwise kernel (kh, kw, channels, multiplier) as `initializer` would draw
    (kh, kw, 1, channels·multiplier): each output sees kh·kw inputs, so fan_in = kh·kw as in
    PyTorch, not kh·kw·channels as Keras's fans for a 4-D kernel would say."""

    def __init__(self, initializer):
        self.initializer = keras.initializers.get(initializer)

    def __call__(self, shape, dtype=None):
        kh, kw, channels, multiplier = shape
        values = self.initializer((kh, kw, 1, channels * multiplier), dtype=dtype)
        return keras.ops.reshape(values, shape)

    def get_config(self):
        return {"initializer": keras.saving.serialize_keras_object(self.initializer)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["initializer"]))


def score_initializer(name="kaiming_uniform", seed=None):
    """Score initialisations: 'kaiming_uniform' (edge-popup default: PyTorch's kaiming_uniform_
    with a=√5, i.e. U(-1/√fan_in, 1/√fan_in)), 'kaiming_normal' (N(0, 2/fan_in)) or 'zeros'."""
    if isinstance(name, keras.initializers.Initializer):
        return name
    if name == "kaiming_uniform":
        return KaimingUniform(gain=math.sqrt(1.0 / 3.0), seed=seed)
    if name == "kaiming_normal":
        return KaimingNormal(seed=seed)
    if name == "zeros":
        return keras.initializers.Zeros()
    try:
        return keras.initializers.get(name)
    except ValueError:
        raise ConfigError(f"unknown score initializer {name!r}; use 'kaiming_uniform', "
                          f"'kaiming_normal', 'zeros' or a Keras initializer") from None


WEIGHT_INITIALIZERS = {"kaiming_normal": KaimingNormal, "kaiming_uniform": KaimingUniform,
                       "signed_kaiming_constant": SignedKaimingConstant}


def weight_initializer(name="kaiming_normal", scaled=False, density=1.0, seed=None):
    """A ticket weight initialiser by name; `scaled` divides σ by sqrt(density)."""
    if name not in WEIGHT_INITIALIZERS:
        raise ConfigError(f"unknown weight initializer {name!r}; choose one of "
                          f"{sorted(WEIGHT_INITIALIZERS)}")
    return WEIGHT_INITIALIZERS[name](density=density if scaled else 1.0, seed=seed)
