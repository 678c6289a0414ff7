"""Iterative magnitude pruning (IMP): rounds of train -> prune -> rewind (Frankle & Carbin 2019;
Savarese et al. 2020, Algorithm 1), with weight rewinding, learning-rate rewinding, fine-tuning,
one-shot pruning, random controls and the repulsion/attraction loss of Maene et al.

Round r (0-based) trains the network under mask m_r, with m_0 = 1 (round 0 trains dense).
`begin_round(r > 0)` starts from the trained state θ_T of round r-1 (which RoundSearch restores
from disk on a rerun) and

1. prunes (Algorithm 1, line 3): m_r = m_{r-1} minus the unpruned weights of smallest |θ_T|,
   `prune_fraction` of the remaining ones, ranked over all layers (scope='global') or per layer
   (scope='layerwise', with per-layer fractions, e.g. Frankle & Carbin's 20% dense / 15% conv /
   half for the output layer via `frankle_carbin_fractions`); the masks are nested round to round;
2. sets the weights round r starts from (Algorithm 1, line 5), `rewind_to`:

    rewind_to       round r starts from                      and trains with
    'init'          θ0 (Frankle & Carbin 2019)               the recipe's full schedule
    '2ep', '0.5ep', θ_k, k steps into round 0 (weight        steps k..T of the schedule: T-k
    '500it'         rewinding, Frankle et al. 2020a:         steps, rounded up to whole epochs
                    A^{k->T}(m⊙θ_k))
    'lr'            θ_T of round r-1 (Renda et al. 2020)     the full schedule, restarted
    'finetune'      θ_T of round r-1                         a constant rate: round r-1's last

The rewind points are search/rewind.py's, as for every search: dense weights in
workdir/init/rewind_<rewind_to>.npz, θ_k saved by its RewindPointSaver during round 0 (a workdir
of an older version, with init/rewind_<k>it.weights.h5, still resumes: rewind.load_rewind_point).

`structure='channels'` prunes whole channels instead of weights (sparsity.channels): step 1
removes `prune_fraction` of the remaining channels of each channel group (scope='layerwise') or
of all groups ranked together ('global') by `channel_criterion` ('l1', 'l2' filter norms or
'bn_gamma'), with the input rows of the layers that read them, so that `export.thin` cuts
them out; `slimming_strength` λ > 0 adds Network Slimming's λΣ|γ| to every round's loss
(Liu et al. 2017, Eq. 1). Network Slimming (Sec. 4.2: prune, then fine-tune with the
training's own settings) is structure='channels', channel_criterion='bn_gamma', scope='global',
rewind_to='lr' (gin_configs/network_slimming_fashion_mnist.gin).

The ticket of round r is m_r (the mask round r trained with) with those starting weights; each
round's metrics.json records its test accuracy against its remaining fraction.

One-shot magnitude pruning (OMP) is the two-round case: round 0 trains dense, begin_round(1)
prunes to the target sparsity at once, round 1 trains the ticket (`one_shot=True,
target_sparsity=s` is prune_fraction=s, num_rounds=2).

Controls (`evaluate_controls=True`) and linear mode connectivity (`linear_connectivity`) are the
evaluators of search/evaluators.py, which any search can have (Experiment.evaluators); IMP's
arguments build them: after round r trains its ticket, the same round trains a control for the
same epochs with the same optimizer and loss, in round_NN/control/ (a side run: resumable), and
records `control_test_accuracy`: control='reinit' keeps the mask m_r and draws fresh weights
with another seed (Frankle & Carbin 2019, random reinitialisation); control='random_prune' keeps
the starting weights and places each layer's kept count at random (random_masks_like; Frankle et
al. 2020b). Round 0 is dense and has no control. IMP's side runs train on its own model as the
round did (side_run.RoundModelTrainer: the round's optimizer, epochs, loss and regularisers).

`repulsion_strength` λ_r != 0 adds Maene et al.'s J_r (training/repulsion.py) in every round
r > 0, over the trained weights of all rounds before it.

Linear mode connectivity (`linear_connectivity`, analysis/connectivity.py): test error at
`connectivity_points` evenly spaced points of a straight line between two trained networks and
its error barrier max_α E(θ(α)) − (E(θa) + E(θb))/2, BatchNorm statistics recomputed at every
point from `connectivity_bn_batches` training batches:

    'copies'  (metrics['lmc'], Frankle et al. 2020 instability) a copy of the round is trained in
              round_NN/lmc_copy/ (resumable) from the round's own starting weights and mask with
              different SGD noise (another data order and augmentation seed); the line joins
              the ticket's trained weights and the copy's;
    'rounds'  (metrics['lmc_rounds'], Maene Sec. 4.3) the line joins round r-1's and round r's
              trained networks (r > 0).
"""
import dataclasses
import math
import os

import gin
import numpy as np

from tf_lottery import masks as masks_lib
from tf_lottery.errors import (ConfigError, TrainingError, check_choice, check_fraction,
                               check_subset)
from tf_lottery.pruning.magnitude import frankle_carbin_fractions, magnitude_masks
from tf_lottery.pruning.selection import SCOPES, prune_count
from tf_lottery.search import rounds
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.evaluators import CONNECTIVITY, CONTROLS, Control, LinearModeConnectivity
from tf_lottery.search.side_run import RoundModelTrainer
from tf_lottery.search.rewind import (INIT, check_rewind_point, load_rewind_point,
                                      rewind_point_saver, rewind_steps, rewind_to_point,
                                      save_init_point)
from tf_lottery.sparsity.channels import (SlimmingPenalty, channel_fraction,
                                          check_channel_pruning, check_structure,
                                          prune_channels)
from tf_lottery.search.fixed_mask import build_fixed_mask_model, layer_masks
from tf_lottery.training.repulsion import REPULSION, RepulsionLoss

REWIND_MODES = ("init", "lr", "finetune")  # besides the rewind points '<N>ep' and '<N>it'
SLIMMING = "slimming_penalty"
MAX_ROUNDS = 1000


def rounds_to_reach(layer_sizes, target_sparsity, prune_fraction=None, scope="global",
                    layer_prune_fractions=None):
    """Training rounds (round 0 dense) until the remaining fraction of the pruned weights is at
    most 1 - target_sparsity, counting exactly as magnitude_masks removes weights."""
    layer_prune_fractions = layer_prune_fractions or {}
    remaining = dict(layer_sizes)
    total = sum(remaining.values())
    allowed = (1.0 - target_sparsity) * total * (1 + 1e-12)
    prunings = 0
    while sum(remaining.values()) > allowed:
        before = sum(remaining.values())
        if scope == "global":
            remaining = {"all": before - prune_count(prune_fraction, before)}
        else:
            remaining = {name: n - prune_count(layer_prune_fractions.get(name, prune_fraction), n)
                         for name, n in remaining.items()}
        prunings += 1
        if sum(remaining.values()) == before or prunings >= MAX_ROUNDS:
            raise ConfigError(f"target_sparsity {target_sparsity} is not reached by pruning "
                              f"({sum(remaining.values())} of {total} weights remain after "
                              f"{prunings} prunings)")
    return prunings + 1


def check_imp_settings(prune_fraction, num_rounds, target_sparsity, scope,
                       layer_prune_fractions, one_shot, rewind_to, evaluate_controls, control,
                       repulsion_strength, linear_connectivity, connectivity_points,
                       connectivity_bn_batches, weight_init, exclude, model_kwargs, structure,
                       channel_criterion, slimming_strength):
    """Every check of IMPSearch's arguments (ConfigError on the first that fails); returns the
    settings IMPSearch keeps, {attribute: value}, normalised: one-shot pruning as
    prune_fraction = target_sparsity and num_rounds = 2; num_rounds None when the rounds are
    computed from target_sparsity at build; `slimming` the SlimmingPenalty of
    slimming_strength > 0, else None."""
    check_structure("IMPSearch", structure, channel_criterion, slimming_strength)
    if structure == "channels":
        if layer_prune_fractions is not None:
            raise ConfigError("structure='channels' removes prune_fraction of every channel "
                              "group; drop layer_prune_fractions")
        if target_sparsity is not None and not one_shot:
            raise ConfigError("structure='channels' takes num_rounds (the weight sparsity "
                              "of a channel count is not known in advance), or one_shot="
                              "True with target_sparsity as the fraction of channels")
        if evaluate_controls and control == "random_prune":
            raise ConfigError("the random_prune control draws unstructured masks; with "
                              "structure='channels' use control='reinit'")
    exclude = masks_lib.check_exclude(exclude, "IMPSearch.exclude")
    slimming = SlimmingPenalty(slimming_strength, exclude)  # validates the strength
    check_choice("IMPSearch.scope", scope, SCOPES)
    check_choice("IMPSearch.control", control, CONTROLS)
    linear_connectivity = check_subset("IMPSearch.linear_connectivity", linear_connectivity,
                                       CONNECTIVITY)
    if int(connectivity_points) < 2 or int(connectivity_bn_batches) < 1:
        raise ConfigError("IMPSearch.connectivity_points must be >= 2 and "
                          "connectivity_bn_batches >= 1")
    if layer_prune_fractions is not None and scope != "layerwise":
        raise ConfigError("IMPSearch.layer_prune_fractions needs scope='layerwise'")
    if one_shot:
        if target_sparsity is None or num_rounds is not None or prune_fraction is not None:
            raise ConfigError("one-shot pruning takes target_sparsity only (it prunes to it "
                              "at once after one dense round); drop num_rounds and "
                              "prune_fraction")
        if layer_prune_fractions is not None:
            raise ConfigError("one-shot pruning prunes target_sparsity in every layer; "
                              "drop layer_prune_fractions")
        prune_fraction, num_rounds = target_sparsity, 2
    elif (num_rounds is None) == (target_sparsity is None):
        raise ConfigError("give exactly one of IMPSearch.num_rounds and "
                          "IMPSearch.target_sparsity")
    if layer_prune_fractions == "frankle_carbin":
        if prune_fraction is not None:
            raise ConfigError("with layer_prune_fractions='frankle_carbin' the fractions "
                              "come from frankle_carbin_fractions.dense/conv/output_factor; "
                              "drop IMPSearch.prune_fraction")
    elif isinstance(layer_prune_fractions, str):
        raise ConfigError(f"IMPSearch.layer_prune_fractions must be None, 'frankle_carbin' "
                          f"or a dict, got {layer_prune_fractions!r}")
    elif prune_fraction is None:
        raise ConfigError("IMPSearch.prune_fraction is required")
    if prune_fraction is not None:
        prune_fraction = check_fraction("IMPSearch.prune_fraction", prune_fraction)
    if target_sparsity is not None:
        target_sparsity = check_fraction("IMPSearch.target_sparsity", target_sparsity)
    if num_rounds is not None and int(num_rounds) < 1:
        raise ConfigError(f"IMPSearch.num_rounds must be >= 1, got {num_rounds!r}")
    check_rewind_point(rewind_to, "IMPSearch.rewind_to", allow_none=False,
                       also=("lr", "finetune"))
    return dict(
        prune_fraction=prune_fraction, num_rounds=num_rounds, target_sparsity=target_sparsity,
        scope=scope, layer_prune_fractions=layer_prune_fractions, one_shot=bool(one_shot),
        rewind_to=rewind_to, evaluate_controls=bool(evaluate_controls), control=control,
        repulsion_strength=float(repulsion_strength),
        linear_connectivity=tuple(linear_connectivity),
        connectivity_points=int(connectivity_points),
        connectivity_bn_batches=int(connectivity_bn_batches), weight_init=weight_init,
        exclude=exclude, model_kwargs=dict(model_kwargs or {}), structure=structure,
        channel_criterion=channel_criterion, slimming=slimming if slimming_strength else None)


@dataclasses.dataclass
class IMPRunState:
    """What IMPSearch.build derives from the model and the data (run state, not configuration).

    Attributes:
      layers: the masked layers IMP prunes (the excluded ones left out).
      fractions: {layer: prune fraction} of scope='layerwise' ({} for prune_fraction in all).
      steps_per_epoch: the dataset's.
      rewind_step: k of weight rewinding, the optimizer steps of round 0 before the rewind point
        (None for 'init', 'lr' and 'finetune').
      rewind_point: the rewind.py point rounds r > 0 start from ('init' for k = 0), or None
        for 'lr' and 'finetune'.
      optima: {round: {layer: trained kernel}} of the rounds repulsion reads, kept in memory.
    """
    layers: list
    fractions: dict
    steps_per_epoch: int
    rewind_step: int = None
    rewind_point: str = None
    optima: dict = dataclasses.field(default_factory=dict)


@gin.configurable
class IMPSearch(RoundSearch):
    """Iterative (or one-shot) magnitude pruning; see the module docstring.

    Args:
      prune_fraction: fraction of the remaining weights removed before each round r > 0.
      num_rounds: rounds of training, round 0 dense: round r trains (1-p)^r of the weights.
        Give this or `target_sparsity`.
      target_sparsity: prune until at most 1 - target_sparsity of the weights remain; the number
        of rounds is computed from the layer sizes at build (`planned_rounds`; num_rounds stays
        None), and the last ticket may be a little sparser.
      scope: 'global' (rank all layers together, as Maene et al. A.3) or 'layerwise'.
      layer_prune_fractions: for scope='layerwise': None (prune_fraction in every layer),
        'frankle_carbin' (frankle_carbin_fractions: configure its dense/conv/output_factor
        through gin; prune_fraction is then not given) or a dict {layer name: fraction}.
      one_shot: one-shot pruning (OMP): two rounds, prune to `target_sparsity` at once.
      rewind_to: 'init', a time like '2ep' / '500it', 'lr' or 'finetune' (module docstring).
      evaluate_controls: train a control for every pruned round (round_NN/control/).
      control: which control: 'reinit' (same mask, fresh weights) or 'random_prune' (same
        starting weights, random masks with the same layer densities).
      repulsion_strength: λ_r of Maene et al.'s J_r (2 repels, -1 attracts, 0 off).
      linear_connectivity: which linear interpolations to measure after every round, a subset of
        ('copies', 'rounds') (module docstring); () measures none.
      connectivity_points: points on each line, ends included (20 as Maene Sec. 4.3).
      connectivity_bn_batches: training batches that recompute BatchNorm statistics at each
        point (models without BatchNorm need none).
      recipe: the TrainingRecipe of every round.
      weight_init: the kernel initialisation ('kaiming_normal', 'kaiming_uniform', ...), seeded
        by the experiment's seed.
      exclude: masked layers never pruned, by name or pattern (masks.excluded_names; they stay
        dense and are not counted).
      model_kwargs: extra keyword arguments for the experiment's model_fn.
      structure: 'weights' (unstructured) or 'channels' (whole channels; prune_fraction is then
        the fraction of the remaining channels removed per round; give num_rounds, or
        one_shot=True with target_sparsity as the fraction of channels removed).
      channel_criterion: for structure='channels': 'l1', 'l2' or 'bn_gamma'.
      slimming_strength: λ of Network Slimming's λΣ|γ| in every round (structure='channels').

    The arguments are checked once, by check_imp_settings, and kept as attributes of the same
    names (slimming_strength as `slimming`, its SlimmingPenalty); what build derives from the
    model and the data is run state, kept apart in an IMPRunState.
    """

    algorithm = "imp"

    def __init__(self, prune_fraction=None, num_rounds=None, target_sparsity=None,
                 scope="global", layer_prune_fractions=None, one_shot=False, rewind_to="init",
                 evaluate_controls=False, control="reinit", repulsion_strength=0.0,
                 linear_connectivity=(), connectivity_points=20, connectivity_bn_batches=10,
                 recipe=None, weight_init="kaiming_normal", exclude=(), model_kwargs=None,
                 structure="weights", channel_criterion="l1", slimming_strength=0.0):
        settings = check_imp_settings(
            prune_fraction=prune_fraction, num_rounds=num_rounds,
            target_sparsity=target_sparsity, scope=scope,
            layer_prune_fractions=layer_prune_fractions, one_shot=one_shot, rewind_to=rewind_to,
            evaluate_controls=evaluate_controls, control=control,
            repulsion_strength=repulsion_strength, linear_connectivity=linear_connectivity,
            connectivity_points=connectivity_points,
            connectivity_bn_batches=connectivity_bn_batches, weight_init=weight_init,
            exclude=exclude, model_kwargs=model_kwargs, structure=structure,
            channel_criterion=channel_criterion, slimming_strength=slimming_strength)
        evaluators = [Control(settings["control"])] if settings["evaluate_controls"] else []
        if settings["linear_connectivity"]:
            evaluators.append(LinearModeConnectivity(settings["linear_connectivity"],
                                                     settings["connectivity_points"],
                                                     settings["connectivity_bn_batches"]))
        super().__init__(num_rounds=settings.pop("num_rounds"), recipe=recipe,
                         evaluators=evaluators)
        vars(self).update(settings)  # the checked settings, one attribute each
        self._run = None  # IMPRunState, set by build

    def run_identity(self):
        identity = super().run_identity()
        if identity["num_rounds"] is None:  # as runs with a target_sparsity were recorded
            identity["num_rounds"] = 1      # before num_rounds was kept apart from the rounds
        return identity                     # computed at build: their workdirs still resume

    # -- setup -------------------------------------------------------------------------------

    def build(self, experiment):
        model, layers = build_fixed_mask_model(experiment, self.weight_init, self.exclude,
                                               self.model_kwargs)
        if self.layer_prune_fractions == "frankle_carbin":
            fractions = frankle_carbin_fractions(model.network, exclude=self.exclude)
        else:
            fractions = dict(self.layer_prune_fractions or {})
            unknown = sorted(set(fractions) - {layer.name for layer in layers})
            if unknown:
                raise ConfigError(f"IMPSearch.layer_prune_fractions names layers that are not "
                                  f"pruned: {unknown}")
        if self.structure == "channels":
            check_channel_pruning(model.network, self.channel_criterion, self.exclude)
            if self.slimming is not None:
                model.add_regularizer(SLIMMING, self.slimming)
        if self.num_rounds is None:  # target_sparsity: as many rounds as reach it
            sizes = {layer.name: int(np.prod(layer.mask.shape)) for layer in layers}
            self.planned_rounds = rounds_to_reach(sizes, self.target_sparsity,
                                                  self.prune_fraction, self.scope, fractions)
        steps_per_epoch = experiment.dataset.steps_per_epoch
        rewind_step, rewind_point = None, None
        if self.rewind_to == INIT:
            rewind_point = INIT
        elif self.rewind_to not in ("lr", "finetune"):
            rewind_step = rewind_steps(self.rewind_to, steps_per_epoch, "IMPSearch.rewind_to")
            rewind_point = self.rewind_to if rewind_step else INIT
            total = self.recipe.epochs * steps_per_epoch
            if rewind_step >= total:
                raise ConfigError(f"rewind_to={self.rewind_to!r} is step {rewind_step}, "
                                  f"not before the end of round 0 ({total} steps)")
        self._run = IMPRunState(layers, fractions, steps_per_epoch, rewind_step, rewind_point)
        return model

    def on_init(self, model, experiment):
        if self._run.rewind_point == INIT:
            save_init_point(experiment.workdir, model.network)

    def ticket_weights(self, experiment):
        """The weights the final ticket (the last round's mask) is trained from: θ0, θ_k (the
        rewind point's dense weights), or for 'lr'/'finetune' the trained weights of the round
        before it."""
        if self.planned_rounds > 1 and self.rewind_to in ("lr", "finetune"):
            return rounds.round_weights_path(experiment.workdir, self.planned_rounds - 2)
        if self.planned_rounds == 1 or self._run.rewind_point == INIT:
            return os.path.join(rounds.init_dir(experiment.workdir), rounds.WEIGHTS_FILE)
        return load_rewind_point(self.model.network, experiment.workdir, self._run.rewind_point,
                                 self._run.steps_per_epoch)

    # -- rounds ------------------------------------------------------------------------------

    def begin_round(self, model, index, experiment):
        network = model.network
        model.remove_regularizer(REPULSION)
        if index > 0 and self.structure == "channels":
            masks = prune_channels(network, self.prune_fraction, self.channel_criterion,
                                   self.scope, self.exclude)
        elif index > 0:
            masks = magnitude_masks(network, self.prune_fraction or 0.0, self.scope,
                                    self._run.fractions or None, self.exclude)
        if index > 0:
            self._rewind(network, experiment)
            masks_lib.set_masks(network, masks)
            if self.repulsion_strength:
                optima = [self._optimum(network, r, experiment) for r in range(index)]
                model.add_regularizer(REPULSION, RepulsionLoss(self._run.layers, optima,
                                                               self.repulsion_strength))

    def _rewind(self, network, experiment):
        if self._run.rewind_point is None:
            return  # 'lr', 'finetune': keep θ_T of the previous round
        try:
            rewind_to_point(network, experiment.workdir, self._run.rewind_point,
                            self._run.steps_per_epoch)
        except ConfigError as e:
            raise TrainingError(f"the rewind point {self.rewind_to!r} was not saved in round 0 "
                                f"(was round 0 run with another rewind_to?); rerun in a new "
                                f"workdir ({e})") from None

    def _optimum(self, network, index, experiment):
        """{layer: kernel} at the end of round `index` (kept in memory, else read from its
        weights file, e.g. after a restart)."""
        if index not in self._run.optima:
            current = network.get_weights()
            network.load_weights(rounds.round_weights_path(experiment.workdir, index))
            self._run.optima[index] = _kernels(self._run.layers)
            network.set_weights(current)
        return self._run.optima[index]

    def make_optimizer(self, index, experiment):
        steps_per_epoch = experiment.dataset.steps_per_epoch
        if index > 0 and self.rewind_to == "finetune":
            last = self.previous_metrics["final_learning_rate"]
            return self.recipe.make_optimizer(steps_per_epoch, constant_learning_rate=last)
        # weight rewinding trains steps k..T of the schedule (rewind_step k; 0 in round 0)
        start_step = self._run.rewind_step if index > 0 and self._run.rewind_step else 0
        return self.recipe.make_optimizer(steps_per_epoch, start_step=start_step)

    def round_epochs(self, index):
        if index > 0 and self._run.rewind_step:  # the remaining T - k steps, in whole epochs
            return math.ceil(self.recipe.epochs - self._run.rewind_step / self._run.steps_per_epoch
                             - 1e-9)
        return self.recipe.epochs

    def round_callbacks(self, model, index, experiment):
        if index == 0 and self._run.rewind_step:
            saver = rewind_point_saver(model.network, experiment.workdir, [self._run.rewind_point],
                                       self._run.steps_per_epoch,
                                       self.recipe.epochs * self._run.steps_per_epoch)
            return [saver]
        return []

    def ticket_masks(self, model):
        return layer_masks(self._run.layers)

    def round_metrics(self, model, index, experiment):
        metrics = {"pruning_steps": index, "scope": self.scope, "rewind_to": self.rewind_to,
                   "rewind_step": self._run.rewind_step, "one_shot": self.one_shot,
                   "prune_fraction": self.prune_fraction if index > 0 else None,
                   "layer_prune_fractions": self._run.fractions if index > 0 else None,
                   "repulsion_strength": self.repulsion_strength, "structure": self.structure}
        if self.structure == "channels":
            metrics.update(channel_criterion=self.channel_criterion,
                           slimming_strength=self.slimming.strength if self.slimming else 0.0,
                           channel_fraction=channel_fraction(model.network, self.exclude))
        regularizer = model.regularizers.get(REPULSION)
        if regularizer is not None:
            metrics["squared_cosines_to_previous"] = [
                float(c) for c in np.asarray(regularizer.squared_cosines())]
        return metrics

    def ticket_trainer(self, model, index, experiment):
        """Controls and LMC copies train on IMP's own model as the round did."""
        return RoundModelTrainer(self, model, index, experiment)

    def end_round(self, model, index, metrics, experiment):
        if self.repulsion_strength:
            self._run.optima[index] = _kernels(self._run.layers)


def _kernels(layers):
    return {layer.name: layer.raw_kernel.numpy().copy() for layer in layers}


def accuracy_table(workdir):
    """[(round, remaining fraction, test accuracy, control test accuracy or None)] of the
    completed rounds: the ticket-vs-control curve of an IMP run."""
    return [(m["round"], m["remaining_fraction"], m["test_accuracy"],
             m.get("control_test_accuracy")) for m in rounds.all_metrics(workdir)]
