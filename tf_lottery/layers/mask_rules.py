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
from tf_lottery.ops.topk import top_k_threshold
from tf_lottery.serializable import ConfigSerializable

_PACKAGE = "tf_lottery"


class MaskRule(ConfigSerializable):
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


def _straight_through(value, source, gate, all_open=False):
    """`value` in the forward pass (0 wherever gate is 0); the gradient reaches `source` as
    upstream ⊙ gate, i.e. ∂value/∂source = I on the gated edges. The same as
    (value + source - stop_gradient(source)) ⊙ gate, without its three passes over the layer
    (and without the product where the boolean tensor `all_open` says the gate is all ones)."""
    @tf.custom_gradient
    def forward(source):
        def gradient(upstream):
            return tf.cond(all_open, lambda: tf.identity(upstream), lambda: upstream * gate)
        return tf.identity(value), gradient
    return forward(source)


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
        # The threshold of the latest training step: a hint for the next step's search
        # (ops.topk; any value gives the same mask), so not one of the layer's weights: it is
        # neither saved nor restored, and a resumed run starts the search afresh once.
        with tf.init_scope():
            hint = tf.Variable(0, dtype=tf.int32, trainable=False, name="top_k_hint",
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        object.__setattr__(layer, "_top_k_hint", hint)

    def _hard_mask(self, layer, magnitude, allowed, hint=None):
        """(0/1 at the top k of |s| among the allowed edges, its threshold, whether every edge
        is allowed); k counts the allowed edges."""
        edges = allowed.shape.num_elements()
        # 0/1 masks sum exactly in float32 below 2^24 edges
        total = tf.reduce_sum(allowed if edges is not None and edges < 2**24
                              else tf.cast(allowed, tf.float64))
        all_allowed = tf.equal(total, tf.cast(tf.size(allowed), total.dtype))
        k = keep_count(layer.keep_fraction, total)
        # |s| >= 0, so its float bits already order like its values; -1 ranks below them all
        key = tf.bitcast(tf.reshape(tf.cast(magnitude, tf.float32), [-1]), tf.int32)
        key = tf.cond(all_allowed, lambda: key,
                      lambda: tf.where(tf.reshape(allowed, [-1]) > 0, key, -1))
        keep, threshold = top_k_threshold(key, k, hint)
        hard = tf.reshape(tf.cast(keep, magnitude.dtype), tf.shape(magnitude))
        return hard, threshold, all_allowed

    def binary_mask(self, layer):
        magnitude = tf.abs(tf.convert_to_tensor(layer.scores))
        allowed = tf.cast(tf.convert_to_tensor(layer.mask), magnitude.dtype)
        return self._hard_mask(layer, magnitude, allowed)[0]  # k <= the allowed edges

    def mask(self, layer, training=None):
        magnitude = tf.abs(tf.convert_to_tensor(layer.scores))
        allowed = tf.cast(tf.convert_to_tensor(layer.mask), magnitude.dtype)
        hint = getattr(layer, "_top_k_hint", None) if training else None
        hard, threshold, all_allowed = self._hard_mask(layer, magnitude, allowed, hint)
        hard = tf.stop_gradient(hard)
        if training:
            if hint is not None:
                hint.assign(threshold)
            selected = tf.cast(hard, layer.ever_selected.dtype)
            layer.ever_selected.assign(tf.maximum(layer.ever_selected, selected))
        return _straight_through(hard, magnitude, allowed, all_allowed)

    def get_config(self):
        return {"keep_fraction": self.keep_fraction}


@keras.saving.register_keras_serializable(_PACKAGE)
class SigmoidScores(MaskRule):
    """Continuous sparsification (Savarese et al. 2020, Eq. 5-6): m = σ(β·s) ⊙ mask, with the
    temperature β a non-trainable layer variable; the ticket is b(s) = 1[s > 0] (Eq. 3) ⊙ mask.

    At s = 0 exactly, where the paper leaves b undefined (s ∈ ℝ≠0), b(0) = 0: the weight is
    pruned, as in the authors' code (`(s > 0)`), while its soft mask is σ(β·0) = 1/2 at every β,
    so no annealing decides it. With s_0 = 0 (ContinuousSparsificationSearch's default) the
    ticket before any training is empty, and a weight is kept only once training has pushed its
    score above 0; a score that never moves (zero gradient throughout, e.g. λ = 0 and an input
    that is always 0) stays pruned, and the reset min(β_T·s_T, s_0) keeps it at 0.

    The backward pass uses ∂m/∂s = β·m·(1 - m), the chain rule's values for a 0/1 mask in one
    fused op (`SigmoidGrad`), a pass fewer than automatic differentiation.

    Args:
      initial_beta: β at the start (the search anneals it, layer.beta).
    """

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
        allowed = tf.cast(layer.mask, scores.dtype)

        @tf.custom_gradient
        def gated_sigmoid(scores):
            m = tf.sigmoid(beta * scores) * allowed

            def gradient(upstream):
                # ∂m/∂s = β σ(βs)(1 - σ(βs)) ⊙ mask = β m (1 - m) for a 0/1 mask: the same
                # values as the chain rule, one pass fewer
                return tf.raw_ops.SigmoidGrad(y=m, dy=upstream) * beta
            return m, gradient

        return gated_sigmoid(scores)

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
