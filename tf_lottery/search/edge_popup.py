"""Strong-ticket search: edge-popup (EP) and its iterative variants, hard and soft iEP.

Edge-popup (Ramanujan et al. 2020; soft iEP paper Eq. 1) trains only scores s: the weights stay
at their random initialisation θ0 and each layer keeps the top fraction of |s| (TopKScores).
Iterative EP runs `cycles` rounds with shrinkage rate p; Table 3 of the soft iEP paper
(Okoshi et al.) defines the variants, i = 1..cycles:

    variant              prune rate k_i     score init s        learning rate   search space
    ep                   1-(1-p)^i          s0                  γ (rewound)     θ0
    hard_ft              p                  s*_{i-1}            γ*_{i-1} const  m*_{i-1}⊙θ0
    hard_srw             p                  s0                  γ               m*_{i-1}⊙θ0
    hard_sri             p                  fresh s~            γ               m*_{i-1}⊙θ0
    hard_lr              p                  s*_{i-1}            γ               m*_{i-1}⊙θ0
    soft_lr (default)    1-(1-p)^i          s*_{i-1}            γ               θ0
    soft_ft              1-(1-p)^i          s*_{i-1}            γ*_{i-1} const  θ0
    soft_lr_zero_init    1-(1-p)^i          m*_{i-1}⊙s*_{i-1}   γ               θ0
    soft_srw_zero_init   1-(1-p)^i          m*_{i-1}⊙s0         γ               θ0

For the hard variants k_i = p is the fraction pruned *within* the search space m*_{i-1}, so
(1-p)^i of all edges remain after cycle i for every variant. The dying ratio (Eq. 2) is counted
per cycle from each layer's `ever_selected` (reset at the start of every cycle); for hard iEP
`dying_ratio` is Fig. 5a's worst case and `apparent_dying_ratio` counts within m*_{i-1}.
"""
import gin
import tensorflow as tf

from tf_lottery import masks as masks_lib
from tf_lottery.analysis.callbacks import DyingRatioCallback
from tf_lottery.analysis.dying import model_dying_stats
from tf_lottery.errors import ConfigError, check_choice, check_fraction
from tf_lottery.layers.initializers import score_initializer, weight_initializer
from tf_lottery.layers.mask_rules import FixedMask, TopKScores
from tf_lottery.masks import freeze_weights
from tf_lottery.search.base import RoundSearch
from tf_lottery.training.sparse_model import SparseModel

# variant: (hard, score init, learning rate) with score init in
# {'inherit', 's0', 'fresh', 'zero_inherit', 'zero_s0'} and learning rate in {'rewind', 'last'}
VARIANTS = {
    "ep": (False, "s0", "rewind"),
    "hard_ft": (True, "inherit", "last"),
    "hard_srw": (True, "s0", "rewind"),
    "hard_sri": (True, "fresh", "rewind"),
    "hard_lr": (True, "inherit", "rewind"),
    "soft_lr": (False, "inherit", "rewind"),
    "soft_ft": (False, "inherit", "last"),
    "soft_lr_zero_init": (False, "zero_inherit", "rewind"),
    "soft_srw_zero_init": (False, "zero_s0", "rewind"),
}


def shrinkage_for_target(target_remaining, cycles):
    """p with (1-p)^cycles = target_remaining, e.g. 30% in 3 cycles: p = 1 - 0.3^(1/3)."""
    return 1.0 - target_remaining ** (1.0 / cycles)


def remaining_after(cycle, shrinkage):
    """Fraction of all edges kept after cycle i (1-based): (1-p)^i."""
    return (1.0 - shrinkage) ** cycle


def remaining_per_cycle(cycles, shrinkage=None, target_remaining=None, remaining_schedule=None):
    """Check EdgePopupSearch's schedule arguments (exactly one of shrinkage, target_remaining
    and remaining_schedule) and return (cycles, shrinkage or None, [r_1, ..., r_cycles]), the
    fraction of weights remaining after each cycle."""
    if sum(x is not None for x in (shrinkage, target_remaining, remaining_schedule)) != 1:
        raise ConfigError("give exactly one of EdgePopupSearch.shrinkage, "
                          "EdgePopupSearch.target_remaining and "
                          "EdgePopupSearch.remaining_schedule")
    if remaining_schedule is not None:
        remaining = [check_fraction("EdgePopupSearch.remaining_schedule entry", r,
                                    allow_one=True) for r in remaining_schedule]
        if not remaining or min(remaining) == 0 or any(
                b > a for a, b in zip([1.0] + remaining, remaining)):
            raise ConfigError("EdgePopupSearch.remaining_schedule must be a non-empty, "
                              f"non-increasing list of fractions in (0, 1], got "
                              f"{list(remaining_schedule)!r}")
        cycles, shrinkage = len(remaining), None
    elif int(cycles) < 1:
        raise ConfigError(f"EdgePopupSearch.cycles must be >= 1, got {cycles!r}")
    if target_remaining is not None:
        target = check_fraction("EdgePopupSearch.target_remaining", target_remaining,
                                allow_one=True)
        if target == 0:
            raise ConfigError("EdgePopupSearch.target_remaining must be > 0")
        shrinkage = shrinkage_for_target(target, int(cycles))
    if shrinkage is not None:
        shrinkage = check_fraction("EdgePopupSearch.shrinkage", shrinkage)
        remaining = [remaining_after(i, shrinkage) for i in range(1, int(cycles) + 1)]
    return int(cycles), shrinkage, remaining


@gin.configurable
class EdgePopupSearch(RoundSearch):
    """EP / hard iEP / soft iEP over `cycles` rounds (see the module docstring for the variants).

    Args:
      variant: a key of VARIANTS ('soft_lr' is soft iEP as the paper uses it by default).
      cycles: number of pruning cycles (rounds).
      shrinkage: p, the fraction pruned per cycle; or give `target_remaining` instead.
      target_remaining: fraction of edges kept after the last cycle; sets p.
      remaining_schedule: instead of p, the fraction of all edges kept after each cycle (e.g.
        [0.5, 0.3, 0.1, 0.05]); sets `cycles`. Soft iEP/EP keep r_i of all edges in cycle i,
        hard iEP keeps r_i / r_{i-1} of its search space (the same as Table 3 for r_i=(1-p)^i).
      recipe: a TrainingRecipe for each cycle (epochs per cycle, SGD, cosine, ...).
      weight_init: 'signed_kaiming_constant' (EP default), 'kaiming_normal', 'kaiming_uniform'.
      scaled_init: divide the weight std by sqrt(final remaining fraction) (edge-popup's
        "scaled" variants).
      score_init: 'kaiming_uniform' (EP default), 'kaiming_normal' or 'zeros'.
      affine_batchnorm: BatchNorm with trainable γ/β (EP reference: non-affine).
      exclude: layers kept dense and frozen (not searched), by name or pattern
        (masks.excluded_names).
      model_kwargs: extra keyword arguments for the experiment's model_fn.
    """

    algorithm = "edge_popup"
    strong_ticket = True

    def __init__(self, variant="soft_lr", cycles=3, shrinkage=None, target_remaining=None,
                 remaining_schedule=None, recipe=None, weight_init="signed_kaiming_constant",
                 scaled_init=False, score_init="kaiming_uniform", affine_batchnorm=False,
                 exclude=(), model_kwargs=None):
        check_choice("EdgePopupSearch.variant", variant, VARIANTS)
        cycles, shrinkage, remaining = remaining_per_cycle(cycles, shrinkage, target_remaining,
                                                           remaining_schedule)
        super().__init__(num_rounds=cycles, recipe=recipe)
        self.shrinkage = shrinkage  # None when a remaining_schedule is given
        self.remaining = remaining
        self.variant = variant
        self.weight_init = weight_init
        self.scaled_init = bool(scaled_init)
        self.score_init = score_init
        self.affine_batchnorm = bool(affine_batchnorm)
        self.exclude = masks_lib.check_exclude(exclude, "EdgePopupSearch.exclude")
        self.model_kwargs = dict(model_kwargs or {})
        self.hard, self.score_rule, self.lr_rule = VARIANTS[variant]

    def keep_fraction(self, cycle):
        """The TopKScores keep fraction in cycle i (1-based): of the search space m*_{i-1}
        (hard: r_i / r_{i-1} = 1-p) or of all edges (soft, EP: r_i = (1-p)^i)."""
        if self.hard:
            return self.remaining[cycle - 1] / ([1.0] + self.remaining)[cycle - 1]
        return self.remaining[cycle - 1]

    def build(self, experiment):
        final_density = self.remaining[-1]
        kernel_init = weight_initializer(self.weight_init, scaled=self.scaled_init,
                                         density=final_density, seed=experiment.seed)
        network = experiment.build_network(
            mask_rule=TopKScores(self.keep_fraction(1)), kernel_initializer=kernel_init,
            score_initializer=score_initializer(self.score_init, seed=experiment.seed + 100_003),
            affine=self.affine_batchnorm, **self.model_kwargs)
        with experiment.strategy.scope():
            model = SparseModel(network)
        freeze_weights(network, train_batchnorm=self.affine_batchnorm)
        self.layers = masks_lib.searched_layers(network, self.exclude, "EdgePopupSearch")
        searched = {layer.name for layer in self.layers}
        for layer in masks_lib.masked_layers(network):
            if layer.name not in searched:  # excluded: dense and frozen, keep everything
                layer.keep_fraction.assign(1.0)
                layer.scores.trainable = False
        return model

    def on_init(self, model, experiment):
        self.initial_scores = {l.name: l.scores.numpy() for l in self.layers}

    def ticket_network(self, experiment, seed=None):
        """A FixedMask twin of the search's network (the evaluators train the strong ticket's
        mask as a weak ticket in it); with `seed`, weights drawn from `weight_init` (scaled as
        the search's) under that seed."""
        kwargs = dict(affine=self.affine_batchnorm, **self.model_kwargs)
        if seed is not None:
            kwargs["kernel_initializer"] = weight_initializer(
                self.weight_init, scaled=self.scaled_init, density=self.remaining[-1], seed=seed)
        return experiment.build_network(mask_rule=FixedMask(), **kwargs)

    def begin_round(self, model, index, experiment):
        """Set scores, mask and keep fraction for cycle i = index+1 from the state after
        cycle i-1 (Table 3)."""
        cycle = index + 1
        previous = {l.name: l.binary_mask().numpy() for l in self.layers} if cycle > 1 else None
        for layer in self.layers:
            if cycle > 1:
                s0 = self.initial_scores[layer.name]
                if self.score_rule == "s0":
                    layer.scores.assign(s0)
                elif self.score_rule == "fresh":
                    init = score_initializer(self.score_init, seed=experiment.seed + 1000 * cycle)
                    layer.scores.assign(init(tuple(layer.scores.shape)))
                elif self.score_rule == "zero_inherit":
                    layer.scores.assign(previous[layer.name] * layer.scores.numpy())
                elif self.score_rule == "zero_s0":
                    layer.scores.assign(previous[layer.name] * s0)
                if self.hard:
                    layer.mask.assign(previous[layer.name])
            layer.keep_fraction.assign(self.keep_fraction(cycle))
            layer.ever_selected.assign(tf.zeros_like(layer.ever_selected))

    def make_optimizer(self, index, experiment):
        steps = experiment.dataset.steps_per_epoch
        if self.lr_rule == "last" and index > 0:  # fine-tuning: go on at γ*_{i-1}
            last = self.previous_metrics["final_learning_rate"]
            return self.recipe.make_optimizer(steps, constant_learning_rate=last)
        return self.recipe.make_optimizer(steps)

    def round_callbacks(self, model, index, experiment):
        return [DyingRatioCallback()]

    def ticket_masks(self, model):
        return {l.name: m for l, m in zip(self.layers, _binary(self.layers))}

    def round_metrics(self, model, index, experiment):
        dying = model_dying_stats(model.network)
        return {"variant": self.variant, "cycle": index + 1, "shrinkage": self.shrinkage,
                "keep_fraction": self.keep_fraction(index + 1),
                "dying_ratio": dying.dying_ratio,  # Eq. 2; hard iEP's worst case
                "apparent_dying_ratio": dying.apparent_dying_ratio}  # within m*_{i-1}

    def describe_round(self, index, metrics):
        return (f"[{self.variant}] cycle {index + 1}/{self.planned_rounds}: remaining "
                f"{metrics['remaining_fraction']:.4f}, test accuracy "
                f"{metrics['test_accuracy']:.4f}, dying ratio {metrics['dying_ratio']:.4f}")


def _binary(layers):
    return [layer.binary_mask().numpy().astype("float32") for layer in layers]
