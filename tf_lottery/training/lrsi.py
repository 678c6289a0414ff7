"""Layer-wise re-scaled initialisation (LRsI, ToST §2.3) after GradInit (Zhu et al. 2021).

ToST keeps the (masked) initial weights of every layer and multiplies each layer's kernel by one
learned positive scalar: "we optimized a small set of scalar coefficients to make the first update
step (e.g., using SGD) as effective as possible at lowering the training loss". That is GradInit's
problem (Zhu et al. 2021; its SGD form, the one the ToST README runs):

    min_m  L(S̃; θ_m − η·g / ‖g‖)      s.t.  ‖g‖₂ ≤ γ,   m_l ≥ min_scale,
    g = ∇_θ L(S; θ_m),   θ_m = (m_l · W_l for each rescaled kernel, other parameters as they are)

solved as GradInit's code does (copied by the ToST code's `gradinit`): on each iteration, if
‖g‖₂ > γ take a step of Adam on the scales that lowers ‖g‖₂ (the constraint), else one that
lowers L(S̃; θ_m − η·g/‖g‖)/η (the objective); each branch has its own Adam state (as in
GradInit's RescaleAdam), gradients are clipped per scale to ±scale_gradient_clip and the scales
are clamped to [min_scale, max_scale]. BatchNorm uses batch statistics (training mode) and its
moving averages are left untouched. At the end every kernel variable is multiplied by its scale:
masks and the pattern of zeros are unchanged.

Departures from GradInit: scales only on the kernels of the chosen layers (ToST: one scalar per
layer), not on biases/BatchNorm parameters, though the simulated SGD step moves every trainable
variable; S is one batch and S̃ its first half joined with the second half of the next batch
(GradInit: S = B0 ∪ B1, S̃ = B0 ∪ B2); dropout, if any, stays on (training mode).
Defaults are the ToST README's (η 0.1, γ 1, normalised gradient, lr 1e-2, min scale 0.01,
180 iterations, clip 1).
"""
import gin
import keras
import numpy as np
import tensorflow as tf

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.masked import MaskedLayerMixin, masked_layers


def _kernel_variable(layer):
    if isinstance(layer, MaskedLayerMixin):
        return layer.raw_kernel
    kernel = compat.stored_weight(layer, "kernel")
    if kernel is None:
        kernel = getattr(layer, "kernel", None)
    return kernel if hasattr(kernel, "assign") else None


def rescalable_layers(model):
    """The masked layers of `model`; for a model without any, every layer with a kernel."""
    layers = masked_layers(model)
    if layers:
        return layers
    flat = compat.sublayers(model)
    return [layer for layer in flat if _kernel_variable(layer) is not None]


class _OneStep:
    """L(S), ‖g‖ and L(S̃) after one SGD step, as functions of the per-layer kernel scales."""

    def __init__(self, model, layers, loss_fn, learning_rate, normalize_gradient):
        if not model.built:
            raise ConfigError("build the model (call it once) before LRsI")
        self.model = model
        self.loss_fn = loss_fn or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.learning_rate = float(learning_rate)
        self.normalize_gradient = normalize_gradient
        trainable = model.trainable_variables
        self.kernel_index = []
        for layer in layers:
            kernel = _kernel_variable(layer)
            index = [i for i, v in enumerate(trainable) if v is kernel]
            if not index:
                raise ConfigError(f"layer {layer.name!r} has no trainable kernel to rescale")
            self.kernel_index.append(index[0])

    def _loss(self, trainable_values, non_trainable_values, x, y):
        outputs, _ = self.model.stateless_call(trainable_values, non_trainable_values, x,
                                               training=True)
        return tf.reduce_mean(self.loss_fn(y, outputs))

    def __call__(self, scales, x, y, lookahead_x, lookahead_y):
        """(‖g‖₂, L(S), L(S̃ after the step)) differentiable w.r.t. `scales`."""
        base = [tf.convert_to_tensor(v) for v in self.model.trainable_variables]
        non_trainable = [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]
        theta = list(base)
        for position, index in enumerate(self.kernel_index):
            theta[index] = tf.cast(scales[position], base[index].dtype) * base[index]
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss = self._loss(theta, non_trainable, x, y)
        grads = tape.gradient(loss, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad_norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
        divisor = grad_norm if self.normalize_gradient else 1.0
        stepped = [t - self.learning_rate * g / divisor for t, g in zip(theta, grads)]
        post_step_loss = self._loss(stepped, non_trainable, lookahead_x, lookahead_y)
        return grad_norm, loss, post_step_loss


class _ClippedAdam:
    """Adam on a vector with per-element gradient clipping (GradInit's RescaleAdam, one branch)."""

    def __init__(self, size, learning_rate, clip, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate, self.clip = learning_rate, clip
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.m, self.v, self.steps = np.zeros(size), np.zeros(size), 0

    def step(self, grad):
        grad = np.clip(grad, -self.clip, self.clip) if self.clip else grad
        self.steps += 1
        self.m = self.beta_1 * self.m + (1 - self.beta_1) * grad
        self.v = self.beta_2 * self.v + (1 - self.beta_2) * grad ** 2
        m_hat = self.m / (1 - self.beta_1 ** self.steps)
        v_hat = self.v / (1 - self.beta_2 ** self.steps)
        return -self.learning_rate * m_hat / (np.sqrt(v_hat) + self.epsilon)


def _batch_stream(batches):
    while True:
        seen = False
        for batch in batches:
            seen = True
            yield batch[0], batch[1]
        if not seen:
            raise ConfigError("LRsI got no batches (pass a list of (x, y) or a re-iterable "
                              "tf.data.Dataset)")


def _half_and_half(first, second):
    half = int(first.shape[0]) // 2
    return tf.concat([first[:half], second[half:]], axis=0)


def one_step_losses(model, x, y, scales=None, layers=None, loss_fn=None, learning_rate=0.1,
                    normalize_gradient=True):
    """{'gradient_norm', 'loss', 'post_step_loss'} on batch (x, y) with kernels scaled by
    `scales` (one per layer of `layers`, default all ones), S̃ = S: GradInit's quantities."""
    layers = rescalable_layers(model) if layers is None else list(layers)
    objective = _OneStep(model, layers, loss_fn, learning_rate, normalize_gradient)
    scales = tf.ones([len(layers)]) if scales is None else tf.constant(scales, tf.float32)
    grad_norm, loss, post = objective(scales, x, y, x, y)
    return {"gradient_norm": float(grad_norm), "loss": float(loss), "post_step_loss": float(post)}


@gin.configurable
def layerwise_rescaled_init(model, batches, layers=None, loss_fn=None, learning_rate=0.1,
                            gradient_norm_bound=1.0, normalize_gradient=True,
                            scale_learning_rate=1e-2, min_scale=0.01, max_scale=None,
                            scale_gradient_clip=1.0, iterations=180, verbose=False):
    """Learn one positive scale per layer (GradInit objective, see module doc), then multiply
    each layer's kernel variable by it in place. Returns {layer name: scale}.

    Args:
      model: a built Keras model whose outputs are logits (for the default loss).
      batches: a list of (x, y) batches or a tf.data.Dataset of them (cycled through).
      layers: layers whose kernels get a scale; default `rescalable_layers(model)`.
      loss_fn: loss(y_true, y_pred); default sparse categorical cross-entropy on logits.
      learning_rate: η of the simulated first SGD step.
      gradient_norm_bound: γ, the bound on ‖g‖₂ (inf disables the constraint).
      normalize_gradient: step along g/‖g‖ (the ToST setting) instead of g.
      scale_learning_rate, scale_gradient_clip: Adam on the scales, per-scale gradient clip.
      min_scale, max_scale: the scales stay in [min_scale, max_scale]; min_scale > 0.
      iterations: number of scale updates.
    """
    if not min_scale > 0:
        raise ConfigError(f"min_scale must be > 0 so scales stay positive, got {min_scale!r}")
    max_scale = np.inf if max_scale is None else float(max_scale)
    if max_scale < min_scale:
        raise ConfigError(f"max_scale {max_scale} < min_scale {min_scale}")
    layers = rescalable_layers(model) if layers is None else list(layers)
    if not layers:
        raise ConfigError("the model has no layer with a kernel to rescale")
    objective = _OneStep(model, layers, loss_fn, learning_rate, normalize_gradient)
    scales = tf.Variable(tf.ones([len(layers)]), trainable=True)
    bound = tf.constant(float(gradient_norm_bound))

    @tf.function
    def evaluate(x, y, lookahead_x, lookahead_y):
        with tf.GradientTape() as tape:
            grad_norm, loss, post = objective(scales, x, y, lookahead_x, lookahead_y)
            violated = grad_norm > bound
            target = tf.cond(violated, lambda: grad_norm, lambda: post / learning_rate)
        return violated, grad_norm, loss, post, tape.gradient(target, scales)

    optimizers = {True: _ClippedAdam(len(layers), scale_learning_rate, scale_gradient_clip),
                  False: _ClippedAdam(len(layers), scale_learning_rate, scale_gradient_clip)}
    stream = _batch_stream(batches)
    x, y = next(stream)
    for iteration in range(int(iterations)):
        next_x, next_y = next(stream)
        violated, grad_norm, loss, post, grad = evaluate(
            x, y, _half_and_half(x, next_x), _half_and_half(y, next_y))
        violated = bool(violated)
        update = optimizers[violated].step(grad.numpy().astype(np.float64))
        scales.assign(np.clip(scales.numpy() + update, min_scale, max_scale).astype(np.float32))
        if verbose:
            print(f"LRsI {iteration}: grad norm {float(grad_norm):.4g} "
                  f"{'(constraint step)' if violated else ''} loss {float(loss):.4g} "
                  f"post-step loss {float(post):.4g}")
        x, y = next_x, next_y
    learned = scales.numpy()
    for layer, scale in zip(layers, learned):
        kernel = _kernel_variable(layer)
        kernel.assign(kernel * float(scale))
    return {layer.name: float(scale) for layer, scale in zip(layers, learned)}
