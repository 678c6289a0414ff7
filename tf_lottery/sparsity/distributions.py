"""Layer-wise sparsity distributions: how a global sparsity target is split over the prunable
layers. Shared by every algorithm that needs a target per layer (gradual magnitude pruning,
random masks, dynamic sparse training, prune-at-init).

* 'uniform': every layer at the global sparsity (tfmot's default);
* 'er': Erdős–Rényi (Mocanu et al. 2018; Evci et al. 2020), density ∝ (n_in + n_out)/(n_in·n_out)
  with n_in, n_out the last two kernel dimensions;
* 'erk': Erdős–Rényi-Kernel (Evci et al. 2020, RigL Sec. 3), density ∝ Σdims/Πdims of the kernel;
* 'global': global magnitude, one threshold on |w| over all layers (the densities follow from
  the current weights);
* a dict {layer name: sparsity}: those layers at the given sparsity, the others at the global one.

For 'er' and 'erk' the densities are ε·raw_l with ε chosen so the kept count equals that of
uniform pruning (Σ_l n_l − ⌊s·n_l⌋), and a layer whose density would exceed 1 is kept dense and ε
solved again over the others (as in the RigL and jaxpruner code).
"""
import difflib

import keras
import numpy as np

from tf_lottery import compat
from tf_lottery.errors import ConfigError, check_fraction
from tf_lottery.layers.masked import MASKED_TWINS, MaskedLayerMixin, masked_layers

DISTRIBUTIONS = ("uniform", "er", "erk", "global")


def check_distribution(distribution):
    """A valid distribution (a name in DISTRIBUTIONS or a dict); ConfigError naming it otherwise."""
    if isinstance(distribution, dict):
        for name, value in distribution.items():
            check_fraction(f"distribution[{name!r}]", value)
        return dict(distribution)
    if distribution in DISTRIBUTIONS:
        return distribution
    close = difflib.get_close_matches(str(distribution).lower(), DISTRIBUTIONS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown distribution {distribution!r}{hint} (choose one of "
                      f"{list(DISTRIBUTIONS)} or a dict {{layer name: sparsity}})")


def prunable_kernels(model, exclude=()):
    """{layer name: (layer, kernel)} of the prunable layers: the masked layers of `model` (raw
    kernel), or, in a model without any, its layers with a one-kernel masked twin (Dense, Conv,
    EinsumDense, Embedding, ...: MASKED_TWINS); minus the
    names in `exclude` (each of which must name a layer of the model)."""
    names = {exclude} if isinstance(exclude, str) else set(exclude)
    every = {layer.name for layer in compat.sublayers(model)}
    unknown = sorted(names - every)
    if unknown:
        raise ConfigError(f"exclude names layers the model does not have: {unknown}")
    masked = masked_layers(model)
    if masked:
        found = {layer.name: (layer, layer.raw_kernel) for layer in masked}
    else:
        found = {layer.name: (layer, getattr(layer, MASKED_TWINS[type(layer)].masked_weight))
                 for layer in compat.sublayers(model)
                 if issubclass(MASKED_TWINS.get(type(layer), object), MaskedLayerMixin)}
    return {name: pair for name, pair in found.items() if name not in names}


def erdos_renyi_densities(shapes, sparsity, kernel=True):
    """{name: density} for kernels of the given shapes at global `sparsity` (see module doc):
    density_l = ε·Σdims/Πdims ('erk', kernel=True) or ε·(n_in + n_out)/(n_in·n_out) ('er')."""
    sparsity = check_fraction("sparsity", sparsity)
    if not shapes:
        return {}
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    raw = {}
    for name, shape in shapes.items():
        dims = list(shape) if kernel else list(shape[-2:])
        raw[name] = float(np.sum(dims)) / float(np.prod(dims))
    dense = set()
    while True:
        rhs = sum(sizes[n] - int(np.floor(sparsity * sizes[n])) for n in shapes if n not in dense)
        rhs -= sum(int(np.floor(sparsity * sizes[n])) for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in shapes if n not in dense)
        if divisor == 0:  # every layer dense
            break
        epsilon = rhs / divisor
        largest = max(raw[n] for n in shapes if n not in dense)
        if largest * epsilon <= 1:
            break
        dense |= {n for n in shapes if n not in dense and raw[n] == largest}
    return {n: 1.0 if n in dense else float(epsilon * raw[n]) for n in shapes}


def _effective_kernel(layer, kernel):
    value = keras.ops.convert_to_numpy(kernel)
    mask = getattr(layer, "mask", None)
    return value if mask is None else value * keras.ops.convert_to_numpy(mask)


def _global_densities(kernels, sparsity):
    import tensorflow as tf

    from tf_lottery.sparsity.magnitude import global_magnitude_masks

    names = list(kernels)
    weights = [tf.constant(_effective_kernel(*kernels[n]), tf.float32) for n in names]
    masks = global_magnitude_masks(weights, sparsity)
    return {n: float(np.mean(m.numpy())) for n, m in zip(names, masks)}


def layer_densities(model, sparsity, distribution="erk", exclude=()):
    """{layer name: density} of the prunable layers of `model` for global `sparsity`.

    Args:
      model: a Keras model; its masked layers are the prunable ones, or, when it has none, its
        Dense, Conv2D and DepthwiseConv2D layers.
      sparsity: the global fraction of weights removed, in [0, 1).
      distribution: 'uniform', 'er', 'erk', 'global' or {layer name: sparsity} (module doc).
      exclude: names of layers left dense and out of the count.
    """
    sparsity = check_fraction("sparsity", sparsity)
    distribution = check_distribution(distribution)
    kernels = prunable_kernels(model, exclude)
    if isinstance(distribution, dict):
        unknown = sorted(set(distribution) - set(kernels))
        if unknown:
            raise ConfigError(f"distribution names layers that are not prunable: {unknown}")
        return {n: 1.0 - distribution.get(n, sparsity) for n in kernels}
    if distribution == "uniform":
        return {n: 1.0 - sparsity for n in kernels}
    if distribution == "global":
        return _global_densities(kernels, sparsity) if kernels else {}
    shapes = {n: tuple(kernel.shape) for n, (_, kernel) in kernels.items()}
    return erdos_renyi_densities(shapes, sparsity, kernel=distribution == "erk")
