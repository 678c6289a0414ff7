"""Gradual magnitude pruning (Zhu & Gupta 2017) as a mask updater."""
import tensorflow as tf

from tf_lottery.errors import ConfigError
from tf_lottery.sparsity.distributions import check_distribution, erdos_renyi_densities
from tf_lottery.sparsity.engine import MaskUpdater
from tf_lottery.sparsity.magnitude import check_block, global_magnitude_masks, magnitude_mask
from tf_lottery.sparsity.schedules import check_schedule


class GradualMagnitudePruning(MaskUpdater):
    """At every step the schedule selects, keep the largest |θ ⊙ m| of each layer at the
    schedule's sparsity s_t (Zhu & Gupta 2017, Sec. 3; count and ties in `magnitude`).

    Per-layer targets follow `distribution`: 'uniform' puts every layer at s_t (tfmot); 'er',
    'erk' and a dict {layer name: sparsity} fix each layer's final sparsity s_l at the schedule's
    final sparsity s_f and prune layer l to s_l·s_t/s_f at step t, so the global sparsity is s_t
    throughout; 'global' ranks all layers together at s_t. Scores are the effective weights
    θ ⊙ m: a pruned weight scores 0 (tfmot zeroes pruned weights in place); should the target
    sparsity fall, revived weights resume from their stored raw value.

    Args:
      pruning_schedule: a PruningSchedule (ConstantSparsity, PolynomialDecay).
      distribution: 'uniform', 'er', 'erk', 'global' or {layer name: sparsity} (see above).
      exclude: layers left dense, by name or pattern (masks.excluded_names).
      block_size, block_pooling_type: prune (height, width) blocks of 2-D kernels scored by the
        'AVG' or 'MAX' of |w| (tfmot's block sparsity).
    """

    def __init__(self, pruning_schedule, distribution="uniform", exclude=(), block_size=(1, 1),
                 block_pooling_type="AVG"):
        super().__init__(exclude)
        self.schedule = check_schedule(pruning_schedule)
        self.distribution = check_distribution(distribution)
        self.block_size, self.block_pooling_type = check_block(block_size, block_pooling_type)
        if self.distribution == "global" and self.block_size != (1, 1):
            raise ConfigError("block_size needs a per-layer distribution, not 'global'")
        self.scale = None

    def build(self, model):
        super().build(model)
        names = [layer.name for layer in self.layers]
        if self.block_size != (1, 1):
            bad = [layer.name for layer in self.layers if len(layer.mask.shape) != 2]
            if bad:
                raise ConfigError(f"block_size needs 2-D kernels (Dense); exclude {bad}")
        final = self.schedule.final_sparsity
        if self.distribution in ("uniform", "global"):
            self.scale = {name: 1.0 for name in names}
        elif final == 0:
            self.scale = {name: 0.0 for name in names}
        else:
            if isinstance(self.distribution, dict):
                unknown = sorted(set(self.distribution) - set(names))
                if unknown:
                    raise ConfigError(f"distribution names layers that are not pruned: {unknown}")
                sparsities = {name: self.distribution.get(name, final) for name in names}
            else:
                shapes = {layer.name: tuple(layer.mask.shape) for layer in self.layers}
                densities = erdos_renyi_densities(shapes, final,
                                                  kernel=self.distribution == "erk")
                sparsities = {name: 1.0 - density for name, density in densities.items()}
            self.scale = {name: sparsities[name] / final for name in names}

    def is_update_step(self, step):
        return self.schedule.should_prune(step)

    def target_sparsities(self, step):
        """{layer name: sparsity tensor} the layers are pruned to at `step`."""
        sparsity = tf.cast(self.schedule.sparsity_at(step), tf.float64)
        return {name: tf.minimum(sparsity * scale, 1.0) for name, scale in self.scale.items()}

    def new_masks(self, step, dense_gradients=None):
        weights = [layer.raw_kernel * tf.cast(layer.mask, layer.raw_kernel.dtype)
                   for layer in self.layers]
        if self.distribution == "global":
            sparsity = self.schedule.sparsity_at(step)
            masks = global_magnitude_masks(weights, sparsity)
            return {layer.name: mask for layer, mask in zip(self.layers, masks)}
        targets = self.target_sparsities(step)
        return {layer.name: magnitude_mask(weight, targets[layer.name], self.block_size,
                                           self.block_pooling_type)
                for layer, weight in zip(self.layers, weights)}
