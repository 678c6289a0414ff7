"""Dynamic sparse training: static sparse training, SET and RigL as mask updaters on the engine.

Every layer starts from a random mask with exactly its distribution's target count of ones,
k_l = max(1, round(n_l·density_l)) (`magnitude.keep_count`), drawn with the stateless RNG from
(seed, step 0, layer index). Static sparse training keeps it; SET and RigL, at every step t with
t % ΔT == 0 and t <= T_end (the k-th batch is step k, `engine`), drop and regrow connections:

* drop: n_drop = ⌊ζ_t·n_active⌋ (the reference code's cast to int; n·ζ first rounded to 6
  decimals), the active positions with the smallest |θ|; among equal |θ| the later position
  is dropped (the earlier one kept, `top_k_mask`'s tie rule);
* grow: n_drop inactive positions, by the largest |∂L/∂(θ ⊙ m)| of the dense gradient (RigL)
  or uniformly at random (SET, stateless RNG from (seed, step, layer index): a resumed run draws
  what an uninterrupted one draws); ties to the earlier position. By default a position dropped
  in this update is not a candidate (`regrow_dropped=False`), and n_drop is capped at the number
  of positions inactive before the update, so the count of ones never changes;
* ζ_t = ζ/2·(1 + cos(π·t/T_end)) ('cosine', RigL Sec. 3) or ζ ('constant');
* a grown connection starts at θ = 0 with its optimizer state (momentum, Adam's m and v) zeroed.

The updaters' state (number of updates, last drop fraction, connections moved, positions ever
active) lives in tf.Variables that `SparseModel` checkpoints with the model.
"""
import math
import numbers

import keras
import tensorflow as tf

from tf_lottery.compat import optimizer_slots
from tf_lottery.errors import ConfigError, check_choice, check_fraction
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.ops import top_k_mask
from tf_lottery.layers.masked import masked_layers
from tf_lottery.sparsity.distributions import check_distribution, layer_densities
from tf_lottery.sparsity.engine import MaskUpdater
from tf_lottery.sparsity.magnitude import keep_count

DECAYS = ("cosine", "constant")


def check_interval(name, value):
    """An integer >= 1 (a number of steps); ConfigError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1 (steps), got {value!r}")
    return int(value)


def check_decay(value):
    """A drop-fraction decay in DECAYS; ConfigError naming `drop_fraction_decay` otherwise."""
    return check_choice("drop_fraction_decay", value, DECAYS)


def _drop_count(n_active, n_candidates, drop_fraction):
    """min(⌊ζ·n_active⌋, n_candidates) as int32 (ζ·n rounded to 6 decimals first)."""
    product = tf.cast(n_active, tf.float64) * tf.cast(drop_fraction, tf.float64)
    count = tf.cast(tf.floor(tf.round(product * 1e6) / 1e6), tf.int32)
    return tf.minimum(count, tf.cast(n_candidates, tf.int32))


def _drop_and_grow(weights, mask, grow_scores, drop_fraction, regrow_dropped):
    """The new 0/1 mask (float32): drop the smallest |w| among the active, grow the largest
    grow_scores among the candidates (see module doc)."""
    mask = tf.cast(tf.convert_to_tensor(mask) > 0, tf.float32)
    n_active = tf.cast(tf.reduce_sum(mask), tf.int32)
    inactive = 1.0 - mask
    # without regrowing the dropped, only the positions inactive before can grow: cap n_drop
    cap = n_active if regrow_dropped else tf.cast(tf.reduce_sum(inactive), tf.int32)
    n_drop = _drop_count(n_active, cap, drop_fraction)
    kept = top_k_mask(tf.abs(tf.cast(weights, tf.float32)), n_active - n_drop, allowed=mask)
    candidates = 1.0 - kept if regrow_dropped else inactive
    grown = top_k_mask(tf.cast(grow_scores, tf.float32), n_drop, allowed=candidates)
    return kept + grown


def rigl_update(weights, mask, dense_grad, drop_fraction, regrow_dropped=False):
    """RigL's drop-and-grow (Evci et al. 2020, Sec. 3, Algorithm 1): drop ⌊ζ·n_active⌋ active
    weights of smallest |w|, grow as many inactive positions of largest |∂L/∂w|.

    Args:
      weights: the kernel θ (values at inactive positions are ignored).
      mask: its 0/1 mask.
      dense_grad: ∂L/∂(θ ⊙ m), the gradient of the dense kernel (nonzero where m = 0 too).
      drop_fraction: ζ in [0, 1].
      regrow_dropped: let a position dropped in this update be grown again (the reference
        code's behaviour); False (default): only positions inactive before the update grow.

    Returns:
      The new 0/1 mask (float32, shaped like `mask`) with as many ones as `mask`; ties go to
      the earlier position (C order) both when keeping and when growing.
    """
    return _drop_and_grow(weights, mask, tf.abs(tf.convert_to_tensor(dense_grad)),
                          drop_fraction, regrow_dropped)


def _seed_pair(seed):
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.stack([seed, tf.zeros_like(seed)]) if seed.shape.rank == 0 else seed


def set_update(weights, mask, drop_fraction, seed, regrow_dropped=False):
    """SET's prune-and-regrow (Mocanu et al. 2018, Sec. 2, Algorithm 1): drop ⌊ζ·n_active⌋
    active weights of smallest |w|, grow as many inactive positions uniformly at random.

    Args:
      weights: the kernel θ (values at inactive positions are ignored).
      mask: its 0/1 mask.
      drop_fraction: ζ in [0, 1].
      seed: an int or a pair of ints, the seed of tf.random.stateless_uniform (the same seed
        grows the same positions).
      regrow_dropped: as in `rigl_update` (True: the reference code's behaviour).

    Returns:
      The new 0/1 mask (float32, shaped like `mask`) with as many ones as `mask`.
    """
    scores = tf.random.stateless_uniform(tf.shape(mask), seed=_seed_pair(seed))
    return _drop_and_grow(weights, mask, scores, drop_fraction, regrow_dropped)


def random_sparse_mask(shape, density, seed):
    """A 0/1 mask (float32) with exactly keep_count(n, 1 − density) ones at uniformly random
    positions (stateless RNG from `seed`, an int or a pair)."""
    scores = tf.random.stateless_uniform(shape, seed=_seed_pair(seed))
    return top_k_mask(scores, keep_count(tf.size(scores), 1.0 - density))


def _layer_seed(seed, step, index):
    """The stateless seed of layer `index` at `step` (step 0: the initial mask)."""
    pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(pair, index)


class DynamicSparsityState(keras.layers.Layer):
    """The updaters' counters as non-trainable variables (a layer, so that a checkpoint of the
    model holds them): updates done, the last ζ_t, connections moved at the last update and in
    all, and per layer the positions ever active (in-time over-parameterisation)."""

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        scalar = dict(shape=(), trainable=False, initializer="zeros")
        self.updates = self.add_weight(name="updates", dtype="int64", **scalar)
        self.drop_fraction = self.add_weight(name="drop_fraction", dtype="float32", **scalar)
        self.moved = self.add_weight(name="moved", dtype="int64", **scalar)
        self.moved_total = self.add_weight(name="moved_total", dtype="int64", **scalar)
        self._layer_names = tuple(layer.name for layer in layers)
        for index, layer in enumerate(layers):
            # one attribute per variable: a checkpoint follows attributes, not dicts
            setattr(self, f"ever_active_{index}",
                    self.add_weight(name=f"ever_active_{layer.name}",
                                    shape=tuple(layer.mask.shape), trainable=False,
                                    initializer="zeros", dtype="float32"))
        self.built = True

    @property
    def ever_active(self):
        """{layer name: 0/1 variable, 1 where the position has ever been active}."""
        return {name: getattr(self, f"ever_active_{index}")
                for index, name in enumerate(self._layer_names)}


class StaticSparse(MaskUpdater):
    """Static sparse training (Evci et al. 2020, Sec. 4.1 'Static'; Mocanu et al. 2018's
    initial Erdős–Rényi topology): a random mask with exactly each layer's target count of
    ones, drawn when the updater is built, never changed.

    Args:
      sparsity: the global fraction of weights removed, in [0, 1).
      distribution: 'erk', 'er', 'uniform' or {layer name: sparsity} (`distributions`).
      seed: seed of the initial masks (and of SET's regrowth).
      exclude: names of masked layers left dense and out of the count.
    """

    def __init__(self, sparsity=0.9, distribution="erk", seed=0, exclude=()):
        super().__init__(exclude)
        self.sparsity = check_fraction("sparsity", sparsity)
        self.distribution = check_distribution(distribution)
        if self.distribution == "global":
            raise ConfigError("distribution 'global' ranks trained weights; dynamic sparse "
                              "training needs a per-layer one: 'erk', 'er', 'uniform' or a dict")
        self.seed = int(seed)
        self.densities = None
        self.state = None

    def build(self, model):
        super().build(model)
        for layer in self.layers:
            if not isinstance(layer.mask_rule, FixedMask):
                raise ConfigError(
                    f"{type(self).__name__}: layer {layer.name!r} has mask rule "
                    f"{type(layer.mask_rule).__name__}; dynamic sparse training needs FixedMask "
                    f"(kernel θ ⊙ m, whose dense gradient ∂L/∂(θ ⊙ m) RigL grows by)")
        chosen = {layer.name for layer in self.layers}
        others = [layer.name for layer in masked_layers(model) if layer.name not in chosen]
        self.densities = layer_densities(model, self.sparsity, self.distribution, others)
        self.state = DynamicSparsityState(self.layers, name=f"{type(self).__name__}_state")
        for index, layer in enumerate(self.layers):
            mask = random_sparse_mask(tuple(layer.mask.shape), self.densities[layer.name],
                                      _layer_seed(self.seed, 0, index))
            layer.mask.assign(tf.cast(mask, layer.mask.dtype))
            self.state.ever_active[layer.name].assign(mask)

    def target_counts(self):
        """{layer name: the number of ones its mask keeps}."""
        return {layer.name: int(keep_count(layer.mask.shape.num_elements(),
                                           1.0 - self.densities[layer.name]))
                for layer in self.layers}

    def is_update_step(self, step):
        return tf.constant(False)

    def new_masks(self, step, dense_gradients=None):
        return {}  # traced by the engine's tf.cond, never run

    def summary(self):
        """Python numbers for epoch logs: updates, last ζ_t, moved, ever-active fraction,
        density of every layer."""
        ever = sum(float(tf.reduce_sum(v)) for v in self.state.ever_active.values())
        total = sum(layer.mask.shape.num_elements() for layer in self.layers)
        logs = {"dst/updates": int(self.state.updates.numpy()),
                "dst/drop_fraction": float(self.state.drop_fraction.numpy()),
                "dst/moved": int(self.state.moved.numpy()),
                "dst/moved_total": int(self.state.moved_total.numpy()),
                "dst/ever_active_fraction": ever / total}
        for layer in self.layers:
            logs[f"dst/density/{layer.name}"] = float(tf.reduce_mean(
                tf.cast(layer.mask, tf.float32)))
        return logs


class SparseEvolutionaryTraining(StaticSparse):
    """SET (Mocanu et al. 2018, Sec. 2, Algorithm 1): every ΔT steps until T_end, drop the
    fraction ζ_t of active weights with the smallest |θ| and regrow as many inactive positions
    uniformly at random (module doc: counts, ties, ζ_t, grown weights and optimizer state).

    Args:
      sparsity, distribution, seed, exclude: as StaticSparse.
      update_interval: ΔT, steps between updates (>= 1).
      end_step: T_end, the last step that may update (>= 1).
      drop_fraction: ζ in [0, 1].
      drop_fraction_decay: 'cosine' (ζ_t = ζ/2·(1 + cos(πt/T_end))) or 'constant'.
      regrow_dropped: let a just-dropped position be regrown (the reference code's behaviour).
    """

    def __init__(self, sparsity=0.9, distribution="erk", update_interval=100, end_step=1000,
                 drop_fraction=0.3, drop_fraction_decay="cosine", regrow_dropped=False, seed=0,
                 exclude=()):
        super().__init__(sparsity, distribution, seed, exclude)
        self.update_interval = check_interval("update_interval", update_interval)
        self.end_step = check_interval("end_step", end_step)
        self.drop_fraction = check_fraction("drop_fraction", drop_fraction, allow_one=True)
        self.drop_fraction_decay = check_decay(drop_fraction_decay)
        self.regrow_dropped = bool(regrow_dropped)

    def is_update_step(self, step):
        step = tf.cast(step, tf.int64)
        return (step <= self.end_step) & (tf.math.floormod(step, self.update_interval) == 0)

    def drop_fraction_at(self, step):
        """ζ_t (float32); 0 after T_end."""
        if self.drop_fraction_decay == "constant":
            value = tf.constant(self.drop_fraction, tf.float32)
        else:
            progress = tf.minimum(tf.cast(step, tf.float32) / float(self.end_step), 1.0)
            value = 0.5 * self.drop_fraction * (1.0 + tf.cos(math.pi * progress))
        return tf.where(tf.cast(step, tf.int64) <= self.end_step, value, 0.0)

    def layer_mask(self, index, layer, step, drop_fraction, dense_gradients):
        """The new mask of one layer (SET: random regrowth)."""
        return set_update(layer.raw_kernel, layer.mask, drop_fraction,
                          _layer_seed(self.seed, step, index), self.regrow_dropped)

    def new_masks(self, step, dense_gradients=None):
        fraction = self.drop_fraction_at(step)
        return {layer.name: self.layer_mask(index, layer, step, fraction, dense_gradients)
                for index, layer in enumerate(self.layers)}

    needs_optimizer = True

    def update(self, step, dense_gradients=None, optimizer=None):
        """Assign the new masks; grown weights and their optimizer slots start at zero."""
        masks = self.new_masks(step, dense_gradients)
        moved = tf.constant(0, tf.int64)
        for layer in self.layers:
            old = tf.cast(layer.mask, tf.float32)
            new = masks[layer.name]
            grown = (new > 0) & (old == 0)
            kernel = layer.raw_kernel
            kernel.assign(tf.where(grown, tf.zeros_like(kernel), kernel))
            for slot in optimizer_slots(optimizer, kernel) if optimizer is not None else ():
                slot.assign(tf.where(grown, tf.zeros_like(slot), slot))
            layer.mask.assign(tf.cast(new, layer.mask.dtype))
            ever = self.state.ever_active[layer.name]
            ever.assign(tf.maximum(ever, new))
            moved += tf.reduce_sum(tf.cast(grown, tf.int64))
        self.state.updates.assign_add(1)
        self.state.drop_fraction.assign(self.drop_fraction_at(step))
        self.state.moved.assign(moved)
        self.state.moved_total.assign_add(moved)


class RigL(SparseEvolutionaryTraining):
    """RigL (Evci et al. 2020, Sec. 3, Algorithm 1): as SET, but regrow the inactive positions
    with the largest |∂L/∂(θ ⊙ m)| of the dense gradient of the update step's batch (handed over
    by the engine after the backward pass, before the optimizer step). Same Args as SET."""

    needs_dense_gradients = True

    def layer_mask(self, index, layer, step, drop_fraction, dense_gradients):
        return rigl_update(layer.raw_kernel, layer.mask, dense_gradients[layer.name],
                           drop_fraction, self.regrow_dropped)
