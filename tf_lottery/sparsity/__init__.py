"""Masks that change during training: the mask-update engine, its updaters, sparsity schedules
with tfmot's names, and layer-wise sparsity distributions.

* schedules: ConstantSparsity, PolynomialDecay (tfmot semantics);
* distributions: layer_densities(model, sparsity, distribution) — uniform, er, erk, global, dict;
* engine: MaskUpdater, called in-graph by SparseModel.train_step;
* gmp: GradualMagnitudePruning (Zhu & Gupta 2017), also with block sparsity;
* dst: dynamic sparse training: StaticSparse, SparseEvolutionaryTraining (SET, Mocanu et al.
  2018), RigL (Evci et al. 2020), and their mask rules as pure functions rigl_update,
  set_update, random_sparse_mask;
* n_m: N:M structured sparsity: n_m_mask, is_n_m_sparse, the updater NMMagnitudePruning and
  the SR-STE mask rule NMMask (Zhou et al. 2021);
* channel_graph / channels: channel groups of a Keras graph and channel (filter) pruning:
  prune_channels (l1, l2, bn_gamma), the updater GradualChannelPruning, SlimmingPenalty
  (Network Slimming's λΣ|γ|); export.thin cuts the pruned channels out;
* api: prune_low_magnitude (also sparsity_m_by_n), strip_pruning, UpdatePruningStep,
  PruningSummaries (tfmot's calls).
"""
from tf_lottery.sparsity.api import (PruningSummaries, UpdatePruningStep, prune_low_magnitude,
                                     strip_pruning)
from tf_lottery.sparsity.channel_graph import channel_groups
from tf_lottery.sparsity.channels import GradualChannelPruning, SlimmingPenalty, prune_channels
from tf_lottery.sparsity.distributions import (DISTRIBUTIONS, erdos_renyi_densities,
                                               layer_densities)
from tf_lottery.sparsity.dst import (RigL, SparseEvolutionaryTraining, StaticSparse,
                                     random_sparse_mask, rigl_update, set_update)
from tf_lottery.sparsity.engine import MaskUpdater
from tf_lottery.sparsity.gmp import GradualMagnitudePruning
from tf_lottery.sparsity.magnitude import global_magnitude_masks, keep_count, magnitude_mask
from tf_lottery.sparsity.n_m import NMMagnitudePruning, NMMask, is_n_m_sparse, n_m_mask
from tf_lottery.sparsity.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

__all__ = ["PruningSummaries", "UpdatePruningStep", "prune_low_magnitude", "strip_pruning",
           "DISTRIBUTIONS", "erdos_renyi_densities", "layer_densities", "MaskUpdater",
           "GradualMagnitudePruning", "global_magnitude_masks", "keep_count", "magnitude_mask",
           "ConstantSparsity", "PolynomialDecay", "PruningSchedule", "RigL",
           "SparseEvolutionaryTraining", "StaticSparse", "random_sparse_mask", "rigl_update",
           "set_update", "NMMagnitudePruning", "NMMask", "is_n_m_sparse", "n_m_mask",
           "channel_groups", "GradualChannelPruning", "SlimmingPenalty", "prune_channels"]
