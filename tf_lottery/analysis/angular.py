"""Angular distance between sparse networks (Maene, "Towards Understanding Iterative Magnitude
Pruning: Why Lottery Tickets Win", Sec. 4.1): d(θ1⊙m, θ2⊙m) = 2·∠(θ1⊙m, θ2⊙m)/π over the
shared connections m = m1⊙m2, all layers flattened and concatenated.

d is 0 for parallel weight vectors, 1 for orthogonal ones (what unrelated high-dimensional
networks give), 2 for opposite ones. A network is a (weights, masks) pair of dicts keyed by layer
name (a layer missing from masks is dense), or a live Keras model, read as its raw kernels and
its binary ticket masks.
"""
import keras
import numpy as np

from tf_lottery import masks as masks_lib
from tf_lottery.analysis._common import kernel_arrays
from tf_lottery.errors import ConfigError


def network_state(model):
    """(weights, masks) of a live model: raw kernels of every kernel layer, binary masks of its
    masked layers. Snapshot it after each round to compare rounds later."""
    return kernel_arrays(model, effective=False), masks_lib.get_masks(model)


def _as_network(network):
    if isinstance(network, keras.Model):
        return network_state(network)
    if isinstance(network, tuple):
        weights, masks = network
        return weights, masks or {}
    return network, {}  # a weights dict alone: a dense network


def _shared_vectors(weights_a, weights_b, masks_a, masks_b):
    if set(weights_a) != set(weights_b):
        raise ConfigError(f"the networks have different layers: "
                          f"{sorted(set(weights_a) ^ set(weights_b))[:5]}")
    for masks in (masks_a, masks_b):
        unknown = sorted(set(masks) - set(weights_a))
        if unknown:
            raise ConfigError(f"masks name layers without weights: {unknown[:5]}")
    parts_a, parts_b = [], []
    for name in sorted(weights_a):
        a = np.asarray(weights_a[name], dtype=np.float64)
        b = np.asarray(weights_b[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ConfigError(f"layer {name} has shapes {a.shape} and {b.shape}")
        shared = np.ones(a.shape)
        for masks in (masks_a, masks_b):
            if name in masks:
                shared = shared * np.asarray(masks[name], dtype=np.float64)
        parts_a.append((a * shared).ravel())
        parts_b.append((b * shared).ravel())
    return np.concatenate(parts_a), np.concatenate(parts_b)


def angle(v1, v2):
    """∠(v1, v2) in radians, by 2·atan2(|u1 − u2|, |u1 + u2|) on unit vectors (exact at 0 and π,
    where arccos of a rounded cosine is not); NaN if either vector is zero."""
    n1, n2 = np.linalg.norm(v1), np.linalg.norm(v2)
    if n1 == 0 or n2 == 0:
        return float("nan")
    u1, u2 = v1 / n1, v2 / n2
    return float(2.0 * np.arctan2(np.linalg.norm(u1 - u2), np.linalg.norm(u1 + u2)))


def angular_distance(network_a, network_b):
    """d = 2·∠(θa⊙m, θb⊙m)/π with m = ma⊙mb (Maene, Sec. 4.1).

    Each network is a (weights, masks) pair, a weights dict alone (dense), or a Keras model.
    """
    weights_a, masks_a = _as_network(network_a)
    weights_b, masks_b = _as_network(network_b)
    v1, v2 = _shared_vectors(weights_a, weights_b, masks_a, masks_b)
    return 2.0 * angle(v1, v2) / np.pi


def angular_distance_matrix(networks, initialization=None):
    """Symmetric matrix of angular distances between all pairs of `networks` (e.g. one per
    pruning round); with `initialization` it gets a last row and column comparing every network
    with it, as in Maene Fig. 4 (a weights dict alone counts as dense, so each comparison
    runs over that round's own mask)."""
    networks = [_as_network(n) for n in networks]
    if initialization is not None:
        networks.append(_as_network(initialization))
    size = len(networks)
    distances = np.zeros((size, size))
    for i in range(size):
        for j in range(i + 1, size):
            distances[i, j] = distances[j, i] = angular_distance(networks[i], networks[j])
    return distances
