"""Gradual magnitude pruning (Zhu & Gupta 2017) as a one-round search: train the network while a
GradualMagnitudePruning updater (tf_lottery.sparsity) raises its sparsity from
`initial_sparsity` to `final_sparsity` on tfmot's PolynomialDecay schedule, in steps (the k-th
training batch is step k). The masks change inside the training step, so a run killed mid-round
resumes from its epoch checkpoint (optimizer step included) on the same schedule.

With structure='channels' a GradualChannelPruning updater removes whole channels on the same
schedule (its sparsity is the fraction of channels removed per group, or of all channels with
distribution='global'), scored by `channel_criterion`; `slimming_strength` adds Network
Slimming's λΣ|γ| to the loss (sparsity.channels).
"""
import gin

from tf_lottery import masks as masks_lib
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.fixed_mask import build_fixed_mask_model, layer_masks
from tf_lottery.errors import ConfigError
from tf_lottery.sparsity.channels import (GradualChannelPruning, SlimmingPenalty,
                                          channel_fraction, check_structure)
from tf_lottery.sparsity.gmp import GradualMagnitudePruning
from tf_lottery.sparsity.schedules import PolynomialDecay


@gin.configurable
class GradualMagnitudeSearch(RoundSearch):
    """One round of training with gradual magnitude pruning.

    Args:
      final_sparsity, initial_sparsity, begin_step, end_step, power, frequency: the
        PolynomialDecay schedule (tfmot's arguments; steps are training batches).
      distribution: per-layer targets ('uniform', 'er', 'erk', 'global' or a dict).
      block_size, block_pooling_type: block sparsity of 2-D kernels (tfmot's).
      recipe: the TrainingRecipe of the round.
      weight_init: the kernel initialisation, seeded by the experiment's seed.
      exclude: names of masked layers never pruned.
      model_kwargs: extra keyword arguments for the experiment's model_fn.
      structure: 'weights' or 'channels' (GradualChannelPruning; distribution 'uniform' or
        'global', no blocks).
      channel_criterion: 'l1', 'l2' or 'bn_gamma' (structure='channels').
      slimming_strength: λ of Network Slimming's λΣ|γ| (structure='channels').
    """


    algorithm = "gmp"

    def __init__(self, final_sparsity=0.9, initial_sparsity=0.0, begin_step=0, end_step=1000,
                 power=3, frequency=100, distribution="uniform", block_size=(1, 1),
                 block_pooling_type="AVG", recipe=None, weight_init="kaiming_normal",
                 exclude=(), model_kwargs=None, structure="weights", channel_criterion="l1",
                 slimming_strength=0.0):
        super().__init__(num_rounds=1, recipe=recipe)
        check_structure("GradualMagnitudeSearch", structure, channel_criterion,
                        slimming_strength)
        self.schedule = PolynomialDecay(initial_sparsity, final_sparsity, begin_step, end_step,
                                        power=power, frequency=frequency)
        self.exclude = masks_lib.check_exclude(exclude, "GradualMagnitudeSearch.exclude")
        self.structure, self.distribution = structure, distribution
        self.slimming = SlimmingPenalty(slimming_strength, self.exclude)
        if structure == "channels":
            if distribution not in ("uniform", "global") or tuple(block_size) != (1, 1):
                raise ConfigError("structure='channels' takes distribution 'uniform' or "
                                  "'global' and no block_size")
            self.updater = GradualChannelPruning(
                self.schedule, channel_criterion, exclude=self.exclude,
                scope="global" if distribution == "global" else "layerwise")
        else:  # validates distribution and block arguments now, before anything is built
            self.updater = GradualMagnitudePruning(self.schedule, distribution=distribution,
                                                   exclude=self.exclude, block_size=block_size,
                                                   block_pooling_type=block_pooling_type)
        self.weight_init = weight_init
        self.model_kwargs = dict(model_kwargs or {})

    def build(self, experiment):
        model, self.layers = build_fixed_mask_model(experiment, self.weight_init, self.exclude,
                                                    self.model_kwargs)
        model.add_mask_updater(self.updater)
        if self.slimming.strength:
            model.add_regularizer("slimming_penalty", self.slimming)
        return model

    def begin_round(self, model, index, experiment):
        """Masks start at ones; the updater prunes during training."""

    def ticket_masks(self, model):
        return layer_masks(self.layers)

    def round_metrics(self, model, index, experiment):
        return {"schedule": self.schedule.get_config(),
                "distribution": self.distribution,
                "target_sparsity": float(self.schedule.sparsity_at(
                    int(model.optimizer.iterations.numpy()))),
                "density": masks_lib.density(self.ticket_masks(model)),
                "structure": self.structure,
                **({"channel_criterion": self.updater.criterion,
                    "channel_fraction": channel_fraction(model.network, self.exclude)}
                   if self.structure == "channels" else {})}
