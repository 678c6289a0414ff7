"""Mask rules: how a masked layer turns its `mask` (and maybe `scores`) into the mask it applies.

A rule is a small serialisable object chosen by the search procedure, never by the layer. Its
state (scores, temperature, keep fraction) lives in variables of the layer, created by
`rule.build(layer)`, so changing a keep fraction or a temperature between rounds or steps needs
no retracing. Every rule offers

* `mask(layer, training)`: the (possibly soft) mask multiplied into the kernel in the forward
  pass, differentiable where the algorithm needs it;
* `binary_mask(layer)`: the 0/1 ticket mask this rule stands for (what export folds in).
"""
import keras
import tensorflow as tf

from tf_lottery.errors import check_fraction

_PACKAGE = "tf_lottery"


class MaskRule:
    """Base class: subclasses set `needs_scores` and implement `mask`/`binary_mask`."""

    needs_scores = False

    def build(self, layer):
        """Create the rule's variables on `layer` (called once the kernel exists)."""

    def mask(self, layer, training=None):
        raise NotImplementedError

    def binary_mask(self, layer):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(_PACKAGE)
class FixedMask(MaskRule):
    """A fixed 0/1 mask: effective kernel θ ⊙ m (IMP, prune-at-init, ToST; Frankle & Carbin 2019)."""

    def mask(self, layer, training=None):
        return layer.mask

    def binary_mask(self, layer):
        return tf.convert_to_tensor(layer.mask)


def keep_count(keep_fraction, n):
    """Edges kept out of n: k = ⌈keep_fraction·n⌉, with keep_fraction·n first rounded to 6
    decimals so that floating-point noise (0.3·10 = 3.0000000000000004) adds no edge."""
    product = tf.cast(keep_fraction, tf.float64) * tf.cast(n, tf.float64)
    return tf.cast(tf.math.ceil(tf.round(product * 1e6) / 1e6), tf.int32)


def _order_key(values):
    """int32 keys ordered like the float32 values (IEEE-754 bits, negatives flipped)."""
    bits = tf.bitcast(tf.cast(values, tf.float32), tf.int32)
    return tf.where(bits >= 0, bits, bits ^ tf.constant(0x7FFFFFFF, tf.int32))


def top_k_mask(scores, k, allowed=None):
    """0/1 tensor shaped like scores with ones at the k largest entries (of those allowed).

    Exactly k ones; among equal scores the earlier positions win. The k-th largest value is
    found by bisection on the float bits (32 passes of compare-and-count, no sort), which keeps
    shapes static (XLA-friendly), lets k be a tensor that changes between rounds, and is several
    times faster on CPU than sorting a large layer every step.
    """
    key = _order_key(tf.reshape(scores, [-1]))
    if allowed is not None:
        key = tf.where(tf.reshape(allowed, [-1]) > 0, key, tf.int32.min)
    k = tf.cast(k, tf.int32)
    lo, hi = tf.constant(-2**31, tf.int64), tf.constant(2**31 - 1, tf.int64)
    for _ in range(33):  # invariant: count(key >= lo) >= k > count(key > hi)
        mid = (lo + hi + 1) // 2
        enough = tf.reduce_sum(tf.cast(key >= tf.cast(mid, tf.int32), tf.int32)) >= k
        lo, hi = tf.where(enough, mid, lo), tf.where(enough, hi, mid - 1)
    threshold = tf.cast(lo, tf.int32)
    above, tie = key > threshold, key == threshold
    ties_kept = k - tf.reduce_sum(tf.cast(above, tf.int32))
    keep = above | (tie & (tf.cumsum(tf.cast(tie, tf.int32)) <= ties_kept))
    keep = keep & (k > 0)
    return tf.reshape(tf.cast(keep, scores.dtype), tf.shape(scores))


@keras.saving.register_keras_serializable(_PACKAGE)
class TopKScores(MaskRule):
    """Edge-popup (Ramanujan et al. 2020; soft iEP paper Eq. 1): keep the top keep_fraction of
    |s| per layer, m = h(|s|) with straight-through gradient ∂m/∂|s| = I (so ∂m/∂s = sign(s),
    as edge-popup's GetSubnet applied to scores.abs()); times `mask` (hard iEP).

    `keep_fraction` is the fraction of the edges *allowed by the layer's mask* that is kept
    (all edges while the mask is all ones): k = ⌈keep_fraction·n_allowed⌉, see `keep_count`.
    It lives in the layer variable `keep_fraction`, so a search can change it between cycles.
    The layer variable `ever_selected` is the running OR of every mask used in a training
    forward pass (for the dying ratio, soft iEP paper Eq. 2).
    """

    needs_scores = True

    def __init__(self, keep_fraction=0.5):
        self.keep_fraction = check_fraction("TopKScores.keep_fraction", keep_fraction,
                                            allow_one=True)

    def build(self, layer):
        layer.keep_fraction = layer.add_weight(
            name="keep_fraction", shape=(), dtype="float64", trainable=False,
            initializer=keras.initializers.Constant(self.keep_fraction),
            aggregation="only_first_replica")
        layer.ever_selected = layer.add_weight(
            name="ever_selected", shape=layer.mask.shape, trainable=False, initializer="zeros",
            aggregation="only_first_replica")

    def binary_mask(self, layer):
        allowed = tf.convert_to_tensor(layer.mask)
        scores = tf.abs(tf.convert_to_tensor(layer.scores))
        k = keep_count(layer.keep_fraction, tf.reduce_sum(tf.cast(allowed, tf.float64)))
        return top_k_mask(scores, k, allowed) * tf.cast(allowed, scores.dtype)

    def mask(self, layer, training=None):
        magnitude = tf.abs(tf.convert_to_tensor(layer.scores))
        hard = tf.stop_gradient(self.binary_mask(layer))
        if training:
            selected = tf.cast(hard, layer.ever_selected.dtype)
            layer.ever_selected.assign(tf.maximum(layer.ever_selected, selected))
        hard = tf.cast(hard, magnitude.dtype)
        # Straight-through: value `hard`, gradient passed to |s| unchanged.
        return (hard + (magnitude - tf.stop_gradient(magnitude))) * tf.cast(layer.mask,
                                                                           magnitude.dtype)

    def get_config(self):
        return {"keep_fraction": self.keep_fraction}


@keras.saving.register_keras_serializable(_PACKAGE)
class SigmoidScores(MaskRule):
    """Continuous sparsification (Savarese et al. 2020, Eq. 5-6): m = σ(β·s) ⊙ mask, with the
    temperature β a non-trainable layer variable; the ticket is b(s) = 1[s > 0] (Eq. 7)."""

    needs_scores = True

    def __init__(self, initial_beta=1.0):
        self.initial_beta = float(initial_beta)

    def build(self, layer):
        layer.beta = layer.add_weight(
            name="beta", shape=(), trainable=False,
            initializer=keras.initializers.Constant(self.initial_beta),
            aggregation="only_first_replica")

    def mask(self, layer, training=None):
        scores = tf.convert_to_tensor(layer.scores)
        beta = tf.cast(layer.beta, scores.dtype)
        return tf.sigmoid(beta * scores) * tf.cast(layer.mask, scores.dtype)

    def binary_mask(self, layer):
        scores = tf.convert_to_tensor(layer.scores)
        return tf.cast(scores > 0, scores.dtype) * tf.cast(layer.mask, scores.dtype)

    def get_config(self):
        return {"initial_beta": self.initial_beta}


@keras.saving.register_keras_serializable(_PACKAGE)
class BernoulliScores(MaskRule):
    """Stochastic sparsification (Savarese et al. 2020, Algorithm 2, after Srinivas et al.):
    m ~ Bernoulli(σ(s)) in training, straight-through ∂m/∂σ(s) = I; 1[σ(s) > 0.5] otherwise."""

    needs_scores = True

    def mask(self, layer, training=None):
        scores = tf.convert_to_tensor(layer.scores)
        prob = tf.sigmoid(scores)
        allowed = tf.cast(layer.mask, scores.dtype)
        if not training:
            return tf.cast(scores > 0, scores.dtype) * allowed
        sample = tf.cast(tf.random.uniform(tf.shape(prob), dtype=prob.dtype) < prob, prob.dtype)
        return (tf.stop_gradient(sample - prob) + prob) * allowed

    def binary_mask(self, layer):
        scores = tf.convert_to_tensor(layer.scores)
        return tf.cast(scores > 0, scores.dtype) * tf.cast(layer.mask, scores.dtype)


RULES = {"fixed": FixedMask, "topk": TopKScores, "sigmoid": SigmoidScores,
         "bernoulli": BernoulliScores}


def get_rule(rule):
    """A MaskRule from an instance, a name in RULES, a class, or a serialised config."""
    if rule is None:
        return FixedMask()
    if isinstance(rule, MaskRule):
        return rule
    if isinstance(rule, type) and issubclass(rule, MaskRule):
        return rule()
    if isinstance(rule, str):
        if rule not in RULES:
            from tf_lottery.errors import ConfigError

            raise ConfigError(f"unknown mask rule {rule!r}; choose one of {sorted(RULES)}")
        return RULES[rule]()
    if isinstance(rule, dict):
        return keras.saving.deserialize_keras_object(rule)
    raise TypeError(f"not a mask rule: {rule!r}")
