"""Channel (filter) pruning: remove whole output channels of Conv/Dense layers, with the input
rows of every layer that reads them (channel_graph: residual additions, concatenations,
depthwise layers and BatchNorm are followed), so that `export.thin` can cut them out exactly.

Criteria, one score per channel c of a group (the mean over the group's producers or norms, so
that a residual stream written by several convolutions is scored once, on the scale of a single
layer's channels, and global ranking does not favour such groups; torch-pruning's default
group reduction):

* 'l1': Σ|F_c|, the L1 norm of the filter (Li et al. 2017, "Pruning Filters for Efficient
  ConvNets", Sec. 3.1: s_j = Σ|K_l|);
* 'l2': ‖F_c‖₂, the L2 norm of the filter (He et al. 2018, soft filter pruning);
* 'bn_gamma': |γ_c| of the BatchNorm layers the group passes through (Liu et al. 2017,
  "Network Slimming", Sec. 3: the scaling factor is the channel's importance); pair it with
  `SlimmingPenalty` (their Eq. 1 L1 term on γ) while training.

Filters are the effective weights θ ⊙ m, so a pruned channel scores 0; with 'bn_gamma' a pruned
channel also scores 0 (its γ is not masked). Two ways to prune:

* `prune_channels` (IMP's pruning step): remove round-half-up(p · remaining) of the remaining
  channels of each group (scope='layerwise') or of all groups ranked together (scope='global',
  network slimming's global threshold; 'l1'/'l2' scores are then compared across layers as
  they are, unnormalised);
* `GradualChannelPruning` (a mask updater of the gradual engine, in-graph): at each step its
  schedule selects, keep k = max(1, round(C·(1 − s_t))) channels of each group (tfmot's count).

Every group keeps at least one channel. The masks zero a producer's filter (kernel output axis)
and the consumers' rows; a kernel that is a producer of one group and a consumer of another
gets the product. A group is pruned only when all its kernels are masked and may be pruned
(channel_graph.channel_groups says why not otherwise).
"""
import gin
import numpy as np
import tensorflow as tf

from tf_lottery.errors import ConfigError, check_choice, check_fraction
from tf_lottery.ops import top_k_mask
from tf_lottery.masks import prunable_layers
from tf_lottery.pruning.selection import SCOPES, check_scope, prune_count, remove_lowest
from tf_lottery.sparsity.channel_graph import channel_groups
from tf_lottery.sparsity.engine import MaskUpdater
from tf_lottery.sparsity.magnitude import keep_count
from tf_lottery.sparsity.schedules import check_schedule

CRITERIA = ("l1", "l2", "bn_gamma")


def check_criterion(criterion):
    return check_choice("channel criterion", criterion, CRITERIA)


def _effective(layer):
    kernel = tf.convert_to_tensor(layer.raw_kernel)
    mask = getattr(layer, "mask", None)
    return kernel if mask is None else kernel * tf.cast(mask, kernel.dtype)


def _per_channel(tensor, axis, reduce):
    rank = len(tensor.shape)
    axes = [a for a in range(rank) if a != axis % rank]
    return reduce(tensor, axis=axes)


def active_channels(group):
    """Bool tensor (size,): channels some producer's mask still keeps."""
    active = tf.zeros([group.size], tf.bool)
    for layer, axis in group.producers:
        mask = getattr(layer, "mask", None)
        if mask is None:
            return tf.ones([group.size], tf.bool)
        active |= _per_channel(tf.cast(mask, tf.float32) > 0, axis, tf.reduce_any)
    return active


def group_scores(group, criterion):
    """Float32 tensor (size,): the criterion's score of each channel (module docstring)."""
    check_criterion(criterion)
    scores = tf.zeros([group.size], tf.float32)
    if criterion == "bn_gamma":
        norms = [layer for layer in group.norms if layer.scale]
        if not norms:
            raise ConfigError(f"criterion 'bn_gamma' needs a BatchNormalization with a scale "
                              f"(γ) after the channels of {group.name}")
        for layer in norms:
            scores += tf.abs(tf.cast(layer.gamma, tf.float32))
        return scores / len(norms) * tf.cast(active_channels(group), tf.float32)
    for layer, axis in group.producers:
        weights = tf.cast(_effective(layer), tf.float32)
        if criterion == "l1":
            scores += _per_channel(tf.abs(weights), axis, tf.reduce_sum)
        else:
            scores += tf.sqrt(_per_channel(tf.square(weights), axis, tf.reduce_sum))
    return scores / len(group.producers)


def _along(vector, axis, rank):
    shape = [1] * rank
    shape[axis % rank] = -1
    return tf.reshape(vector, shape)


def channel_masks(groups, keep):
    """{layer name: 0/1 kernel mask} of every kernel the groups touch, from keep {group name:
    0/1 vector}: producers' filters, consumers' rows and depthwise kernels of dropped channels
    are 0 (groups absent from `keep` keep all their channels)."""
    masks, layers = {}, {}

    def multiply(layer, axis, vector):
        rank = len(layer.raw_kernel.shape)
        current = masks.get(layer.name, tf.ones(layer.raw_kernel.shape, tf.float32))
        masks[layer.name] = current * _along(tf.cast(vector, tf.float32), axis, rank)
        layers[layer.name] = layer

    for group in groups:
        if group.name not in keep:
            continue
        vector = tf.cast(keep[group.name], tf.float32)
        for layer, axis in group.producers:
            multiply(layer, axis, vector)
        for consumer in group.consumers:
            length = consumer.layer.raw_kernel.shape[consumer.axis]
            rows = consumer.rows(np.arange(group.size))
            values = tf.tile(vector, [consumer.repeat])
            row_mask = tf.tensor_scatter_nd_update(tf.ones([length], tf.float32),
                                                   rows[:, None], values)
            multiply(consumer.layer, consumer.axis, row_mask)
        for layer in group.channel_layers:
            if hasattr(layer, "raw_kernel"):  # a masked DepthwiseConv: kernel (..., C, 1)
                multiply(layer, -2, vector)
    return masks


def prunable_groups(model, exclude=()):
    """The prunable channel groups of `model` whose kernels are all masked layers not excluded;
    ConfigError when there is none (with the reason of each group)."""
    layers = prunable_layers(model, exclude)
    groups = channel_groups(model, prunable=[layer.name for layer in layers])
    prunable = [group for group in groups if group.prunable]
    if not prunable:
        reasons = "; ".join(f"{g.name}: {g.reason}" for g in groups) or "no Conv/Dense layer"
        raise ConfigError(f"no channel group of the model can be pruned ({reasons})")
    return prunable


STRUCTURES = ("weights", "channels")


def check_structure(owner, structure, channel_criterion, slimming_strength):
    """A search's structure='weights'|'channels' with its channel options, or a ConfigError."""
    check_choice(f"{owner}.structure", structure, STRUCTURES)
    check_criterion(channel_criterion)
    if structure == "weights" and (channel_criterion != "l1" or slimming_strength):
        raise ConfigError(f"{owner}.channel_criterion and slimming_strength need "
                          f"structure='channels'")
    return structure


def check_channel_pruning(model, criterion, exclude=()):
    """The groups `criterion` prunes: the prunable groups, for 'bn_gamma' those that pass
    through a BatchNormalization with γ (the others keep all their channels, as in Network
    Slimming); a ConfigError when there is none."""
    check_criterion(criterion)
    groups = prunable_groups(model, exclude)
    if criterion == "bn_gamma":
        groups = [g for g in groups if any(layer.scale for layer in g.norms)]
        if not groups:
            raise ConfigError("criterion 'bn_gamma' needs a BatchNormalization with a scale (γ) "
                              "after the channels of a prunable group; the model has none")
    return groups


def channel_fraction(model, exclude=()):
    """Kept channels / all channels of the prunable groups (1.0 dense)."""
    groups = prunable_groups(model, exclude)
    kept = sum(int(np.sum(active_channels(g).numpy())) for g in groups)
    return kept / sum(g.size for g in groups)


@gin.configurable
def prune_channels(model, prune_fraction, criterion="l1", scope="layerwise", exclude=()):
    """IMP's pruning step on channels: remove round-half-up(p · remaining) of the remaining
    channels with the lowest score (module docstring), per group or globally; ties remove the
    later channel first; every group keeps at least one channel.

    Returns: {layer name: 0/1 numpy mask} of the kernels of every prunable group.
    """
    prune_fraction = check_fraction("prune_fraction", prune_fraction)
    check_criterion(criterion)
    check_scope(scope)
    groups = check_channel_pruning(model, criterion, exclude)
    scores = {g.name: group_scores(g, criterion).numpy() for g in groups}
    active = {g.name: active_channels(g).numpy().astype(np.float32) for g in groups}
    if scope == "layerwise":
        keep = {}
        for name in scores:
            remaining = int(active[name].sum())
            removed = min(prune_count(prune_fraction, remaining), remaining - 1)
            keep.update(remove_lowest({name: scores[name]}, {name: active[name]}, removed))
    else:
        remaining = int(sum(a.sum() for a in active.values()))
        keep = remove_lowest(scores, active, prune_count(prune_fraction, remaining))
        for name, vector in keep.items():  # a group emptied keeps its best channel
            if not vector.any():
                alive = np.flatnonzero(active[name])
                vector[alive[np.argmax(scores[name][alive])]] = 1.0
    return {name: mask.numpy() for name, mask in channel_masks(groups, keep).items()}


@gin.configurable
class GradualChannelPruning(MaskUpdater):
    """At every step the schedule selects, keep the k = max(1, round(C·(1 − s_t))) highest-scored
    channels of each group (scope 'layerwise'), or the round(N·(1 − s_t)) best of all N channels
    ranked together plus each group's best ('global'); Zhu & Gupta's gradual schedule applied to
    channels, scores and masks as in the module docstring.

    Args:
      pruning_schedule: a PruningSchedule; its sparsity is the fraction of *channels* removed.
      criterion: 'l1', 'l2' or 'bn_gamma'.
      scope: 'layerwise' (each group at s_t) or 'global'.
      exclude: layers whose own channels are never removed, by name or pattern (they still
        lose the input rows of channels removed upstream).
    """

    def __init__(self, pruning_schedule, criterion="l1", scope="layerwise", exclude=()):
        super().__init__(exclude)
        self.schedule = check_schedule(pruning_schedule)
        self.criterion = check_criterion(criterion)
        self.scope = check_scope(scope)
        self.groups = None

    def build(self, model):
        super().build(model)
        self.groups = check_channel_pruning(model, self.criterion, self.exclude)

    def is_update_step(self, step):
        return self.schedule.should_prune(step)

    def new_masks(self, step, dense_gradients=None):
        sparsity = self.schedule.sparsity_at(step)
        scores = [group_scores(group, self.criterion) for group in self.groups]
        if self.scope == "layerwise":
            keep = {g.name: top_k_mask(s, keep_count(g.size, sparsity))
                    for g, s in zip(self.groups, scores)}
        else:
            pooled = tf.concat(scores, axis=0)
            chosen = top_k_mask(pooled, keep_count(tf.size(pooled), sparsity))
            keep, start = {}, 0
            for group, group_score in zip(self.groups, scores):
                best = tf.one_hot(tf.argmax(group_score), group.size)
                keep[group.name] = tf.maximum(chosen[start:start + group.size], best)
                start += group.size
        return channel_masks(self.groups, keep)


@gin.configurable
class SlimmingPenalty:
    """λ Σ|γ| over the BatchNorm layers of the prunable channel groups: the sparsity term of
    Network Slimming (Liu et al. 2017, Eq. 1, g(s) = |s|; λ = 1e-4 or 1e-5 in the paper), added
    to the training loss so that unimportant channels' γ go to zero before 'bn_gamma' prunes
    them. A regularizer as `SparseModel.add_regularizer` takes: penalty(model) -> scalar.
    """

    def __init__(self, strength=1e-4, exclude=()):
        if not strength >= 0:
            raise ConfigError(f"SlimmingPenalty.strength must be >= 0, got {strength}")
        self.strength, self.exclude = float(strength), exclude
        self._gammas = None

    def gammas(self, model):
        """The γ variables penalised (found once, from the model's channel groups)."""
        if self._gammas is None:
            norms = {id(layer): layer for group in prunable_groups(model, self.exclude)
                     for layer in group.norms if layer.scale}
            if not norms:
                raise ConfigError("SlimmingPenalty: no BatchNormalization with γ in a prunable "
                                  "channel group")
            self._gammas = [layer.gamma for layer in norms.values()]
        return self._gammas

    def __call__(self, model):
        return self.strength * tf.add_n([tf.reduce_sum(tf.abs(g)) for g in self.gammas(model)])


__all__ = ["CRITERIA", "SCOPES", "GradualChannelPruning", "SlimmingPenalty", "active_channels",
           "channel_fraction", "channel_groups", "channel_masks", "check_channel_pruning",
           "group_scores", "prune_channels", "prunable_groups"]
