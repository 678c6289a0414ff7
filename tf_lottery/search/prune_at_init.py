"""Pruning at initialisation as a one-round search: compute a mask from the initial weights θ0
with a criterion (random, magnitude, SNIP, GraSP, SynFlow: tf_lottery/pruning/), then train the
masked network m ⊙ θ0 from there (the sparse masks ToST trains, Jaiswal et al. 2022, Sec. 4).

The mask is computed once and kept in workdir/init/, so a rerun trains exactly the same mask.
SNIP and GraSP score on `num_batches` training batches of epoch 0 taken together as one batch
(the mean gradient over them); SynFlow is data-free; random pruning is seeded by the experiment's
seed. The criteria's own options (scope, SynFlow iterations, GraSP's loss) are set through gin,
e.g. `snip_masks.scope = 'layerwise'`.
"""
import os

import gin
import tensorflow as tf

from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError, check_fraction
from tf_lottery.pruning.registry import BATCH_CRITERIA, criterion_masks, get_criterion
from tf_lottery.search import rounds
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.fixed_mask import build_fixed_mask_model, layer_masks
from tf_lottery.search.side_run import RoundModelTrainer


@gin.configurable
class PruneAtInitSearch(RoundSearch):
    """Prune θ0 with `criterion`, then train the ticket for one round.

    Args:
      criterion: 'random', 'magnitude', 'snip', 'grasp' or 'synflow' (pruning.get_criterion).
      prune_fraction: fraction of the prunable weights removed (the sparsity of the ticket).
      num_batches: training batches the data-driven criteria (SNIP, GraSP) score on.
      recipe: the TrainingRecipe of the round.
      weight_init: the kernel initialisation, seeded by the experiment's seed.
      exclude: masked layers never pruned, by name or pattern (masks.excluded_names).
      model_kwargs: extra keyword arguments for the experiment's model_fn.
    """

    algorithm = "prune_at_init"

    def __init__(self, criterion="snip", prune_fraction=0.9, num_batches=1, recipe=None,
                 weight_init="kaiming_normal", exclude=(), model_kwargs=None):
        get_criterion(criterion)  # a ConfigError naming the closest criterion
        if int(num_batches) < 1:
            raise ConfigError(f"PruneAtInitSearch.num_batches must be >= 1, got {num_batches!r}")
        super().__init__(num_rounds=1, recipe=recipe)
        self.criterion = criterion
        self.prune_fraction = check_fraction("PruneAtInitSearch.prune_fraction", prune_fraction)
        self.num_batches = int(num_batches)
        self.weight_init = weight_init
        self.exclude = masks_lib.check_exclude(exclude, "PruneAtInitSearch.exclude")
        self.model_kwargs = dict(model_kwargs or {})

    def build(self, experiment):
        model, self.layers = build_fixed_mask_model(experiment, self.weight_init, self.exclude,
                                                    self.model_kwargs)
        return model

    def ticket_weights(self, experiment):
        """The ticket is trained from θ0."""
        return os.path.join(rounds.init_dir(experiment.workdir), rounds.WEIGHTS_FILE)

    def masks_path(self, experiment):
        return os.path.join(rounds.init_dir(experiment.workdir), f"{self.criterion}_masks.npz")

    def begin_round(self, model, index, experiment):
        path = self.masks_path(experiment)
        if os.path.exists(path):
            masks = rounds.load_masks(path)
        else:
            masks = self.compute_masks(model.network, experiment)
            rounds.save_masks(path, masks)
        masks_lib.set_masks(model.network, masks)

    def compute_masks(self, network, experiment):
        """The criterion's masks of the network at its current (initial) weights."""
        return criterion_masks(self.criterion, network, self.prune_fraction,
                               batch=lambda: self.scoring_batch(experiment.dataset),
                               seed=experiment.seed, exclude=self.exclude)

    def scoring_batch(self, dataset):
        """The first `num_batches` training batches of epoch 0, concatenated."""
        batches = list(dataset.train_epoch(0).take(self.num_batches))
        if len(batches) < self.num_batches:
            raise ConfigError(f"PruneAtInitSearch.num_batches={self.num_batches} but an epoch "
                              f"has {len(batches)} batches")
        return (tf.concat([x for x, _ in batches], 0), tf.concat([y for _, y in batches], 0))

    def ticket_masks(self, model):
        return layer_masks(self.layers)

    def ticket_trainer(self, model, index, experiment):
        """The round trains the ticket from θ0: controls and LMC copies train as it did."""
        return RoundModelTrainer(self, model, index, experiment)

    def round_metrics(self, model, index, experiment):
        return {"criterion": self.criterion, "prune_fraction": self.prune_fraction,
                "target_density": 1.0 - self.prune_fraction,
                "density": masks_lib.density(self.ticket_masks(model)),
                "num_batches": self.num_batches if self.criterion in BATCH_CRITERIA else 0}

    def describe_round(self, index, metrics):
        return (f"[{self.criterion}] remaining {metrics['remaining_fraction']:.4f}, "
                f"test accuracy {metrics['test_accuracy']:.4f}")
