"""Optimizers with PyTorch's update rules, so that a paper's `weight_decay` means what it meant.

Every paper this toolkit implements trained with `torch.optim.SGD` or `torch.optim.Adam`, whose
`weight_decay` is an L2 term added to the gradient *before* momentum (coupled):

    SGD:   g ← ∇L(w) + wd·w;  b ← μ·b + g (b₁ = g₁);  w ← w − lr·b   (nesterov: w ← w − lr·(g + μ·b))
    Adam:  g ← ∇L(w) + wd·w;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
           w ← w − lr·(m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε)

Keras' `weight_decay` is decoupled (w ← w − lr·wd·w, outside momentum), which with momentum 0.9
shrinks the weights about 10× less per step; and Keras' SGD folds the learning rate into its
velocity (v ← μ·v − lr·g), which differs from PyTorch's buffer whenever the learning rate changes.
`PyTorchSGD` and `PyTorchAdam` transcribe PyTorch's rules (dampening 0, no amsgrad) as Keras
optimizers: they run in `model.fit`, under every tf.distribute strategy (the update runs on the
all-reduced gradient, so the decay is added once, not once per replica), with `jit_compile`,
mixed precision (inside Keras' LossScaleOptimizer) and checkpoints.

Variables excluded with Keras' own `optimizer.exclude_from_weight_decay(var_list=..., var_names=...)`
get no decay (CS's scores); everything else the optimizer trains is decayed, as PyTorch decays
every parameter handed to it (biases and BatchNorm included).
"""
import keras
from keras import ops

from tf_lottery import compat


class _CoupledWeightDecay:
    """Keeps `weight_decay` away from Keras' decoupled step and adds it to the gradient instead."""

    def _init_decay(self, weight_decay):
        weight_decay = float(weight_decay or 0.0)
        if not weight_decay >= 0:  # also NaN
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.coupled_weight_decay = weight_decay

    def _decayed_gradient(self, gradient, variable):
        gradient = ops.cast(gradient, variable.dtype)
        # Keras' own rule for exclude_from_weight_decay (by variable or by name pattern)
        if self.coupled_weight_decay and compat.uses_weight_decay(self, variable):
            gradient = gradient + ops.cast(self.coupled_weight_decay, variable.dtype) * variable
        return gradient


@keras.saving.register_keras_serializable("tf_lottery")
class PyTorchSGD(_CoupledWeightDecay, keras.optimizers.Optimizer):
    """torch.optim.SGD's rule: g ← ∇L + wd·w; b ← μ·b + g; w ← w − lr·b (nesterov: lr·(g + μ·b))."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 name="pytorch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._init_decay(weight_decay)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if nesterov and not momentum:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = (self.add_optimizer_variables(variables, "momentum_buffer")
                                 if self.momentum else [])

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = self._decayed_gradient(gradient, variable)
        if self.momentum:
            buffer = self.momentum_buffers[compat.variable_index(self, variable)]
            mu = ops.cast(self.momentum, variable.dtype)
            # PyTorch starts the buffer at g₁; μ·0 + g₁ is the same.
            self.assign(buffer, mu * buffer + g)
            g = g + mu * buffer if self.nesterov else buffer
        self.assign_sub(variable, lr * g)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov,
                      weight_decay=self.coupled_weight_decay)
        return config


@keras.saving.register_keras_serializable("tf_lottery")
class PyTorchAdam(_CoupledWeightDecay, keras.optimizers.Optimizer):
    """torch.optim.Adam's rule: g ← ∇L + wd·w; w ← w − lr·m̂ / (√v̂ + ε) with bias-corrected
    moments m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ) (ε outside the square root, PyTorch's default 1e-8)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 weight_decay=0.0, name="pytorch_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self._init_decay(weight_decay)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.exp_avgs, self.exp_avg_sqs = self.add_optimizer_variables(
            variables, ["exp_avg", "exp_avg_sq"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = self._decayed_gradient(gradient, variable)
        index = compat.variable_index(self, variable)
        m, v = self.exp_avgs[index], self.exp_avg_sqs[index]
        b1, b2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        self.assign(m, b1 * m + (1 - b1) * g)
        self.assign(v, b2 * v + (1 - b2) * ops.square(g))
        denominator = ops.sqrt(v / (1 - ops.power(b2, t))) + ops.cast(self.epsilon, dtype)
        self.assign_sub(variable, lr / (1 - ops.power(b1, t)) * m / denominator)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                      weight_decay=self.coupled_weight_decay)
        return config


def last_applied_learning_rate(optimizer):
    """The learning rate the optimizer used in its last step (γ at step t−1): under a decaying
    schedule this is the rate a fine-tuning cycle continues at (soft iEP Table 3's γ*_{i−1},
    Renda et al.'s fine-tuning), not the schedule's value after the last step (0 under cosine)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    optimizer = getattr(optimizer, "weight_optimizer", optimizer)  # ScoreSplitOptimizer
    schedule = compat.learning_rate_schedule(optimizer)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        step = max(int(ops.convert_to_numpy(optimizer.iterations)) - 1, 0)
        return float(ops.convert_to_numpy(schedule(step)))
    return float(ops.convert_to_numpy(optimizer.learning_rate))
