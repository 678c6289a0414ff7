"""ToST: train ANY given sparse mask from scratch with the sparse-training toolkit of Jaiswal et al.
("Training your sparse neural network better with any mask", ICML 2022; and "Spending your
winning lottery better after drawing it"). Every tweak can be switched on or off on its own:

* GSk, ghost skips (§2.2, Fig. 4): α·P(block input) added to the output of every 3x3 conv block
  before its activation;
* GSw, ghost smooth neurons (§2.2): every ReLU becomes PSwish x·σ(βx) (or Mish);
  "gradually increase the β value of GSw ... and replace it with ReLU right before the first
  learning rate decay"; α of GSk is decreased "and finally set α = 0 ... right before the first
  learning rate decay". So from `ghost_end_epoch` (default: the recipe's first LR decay epoch)
  on, α is exactly 0 and every ghost neuron is exactly ReLU; a ScheduleCallback drives β and α
  (schedules.GhostBetaSchedule / GhostAlphaSchedule) and logs them (history, TensorBoard);
* LRsI (§2.3): one learned scale per layer's kernel, GradInit's objective (training/lrsi.py);
* LS (§2.3): label smoothing y_k(1 − α) + α/K: the recipe's `label_smoothing`;
* KD ("Spending...", §3.2, L_KD = KL(q^τ, p^τ)): distillation from a teacher instead of LS,
  through `SparseModel.distillation`; the teacher is a dense network trained first in
  workdir/teacher/ (teacher='dense') or a saved .keras model (teacher='path/to/model.keras').

The mask comes from `mask_source`:
  'criterion': a prune-at-init criterion (pruning.get_criterion) at the initialisation θ0,
               removing `prune_fraction` of the prunable weights;
  'ticket':    a ticket file (export.save_ticket), started from its stored weights by default;
  'round':     round `source_round` of an earlier run's workdir (its masks.npz), started from
               this run's θ0.
A list of prune fractions, ticket paths or source rounds trains one mask per round (a sweep, e.g.
one row of ToST's Table 2); every round starts again from θ0.

A round: restore θ0 -> set the mask (and the ticket's weights) -> put the ghosts in -> LRsI ->
train -> take the ghosts out (the trained network is the original architecture again; as the
ghosts have faded its outputs are bit-identical) -> measure -> save.
"""
import json
import os

import gin
import keras

from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError, TrainingError, check_choice, check_fraction
from tf_lottery.export.ticket_file import (load_ticket, read_ticket_header, read_ticket_masks,
                                           ticket_variables)
from tf_lottery.layers.ghosts import SMOOTH_KINDS, ghost_modules, ghosts_faded
from tf_lottery.layers.initializers import weight_initializer
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.pruning.registry import criterion_masks, get_criterion
from tf_lottery.search import rounds
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.side_run import read_side_run, train_side_run
from tf_lottery.training.callbacks import ScheduleCallback, bind_ghost_schedules
from tf_lottery.training.ghost_insertion import insert_ghosts
from tf_lottery.training.losses import Distillation
from tf_lottery.training.lrsi import layerwise_rescaled_init, rescalable_layers
from tf_lottery.training.schedules import GhostAlphaSchedule, GhostBetaSchedule
from tf_lottery.training.sparse_model import SparseModel

MASK_SOURCES = ("criterion", "ticket", "round")
DENSE_TEACHER = "dense"
TEACHER_DIR = "teacher"
LRSI_SCALES_FILE = "lrsi_scales.json"


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def first_decay_epoch(recipe):
    """The epoch of the recipe's first learning-rate decay (step schedules), else None."""
    if recipe.lr_schedule == "step" and recipe.lr_drop_epochs:
        return min(recipe.lr_drop_epochs)
    return None


@gin.configurable
class ToSTSearch(RoundSearch):
    """Train the mask(s) of `mask_source` with the ToST tweaks (see the module docstring); the
    ghosts are gone "right before the first learning rate decay" (ToST §2.2). A search like the
    others, named like them; `ToSTTraining` is its former name, still registered with gin.

    Args:
      mask_source: 'criterion', 'ticket' or 'round'.
      criterion, prune_fraction: for 'criterion': the criterion's name and the fraction of the
        prunable weights it removes (a list: one round per fraction).
      ticket_path: for 'ticket': a ticket file (a list: one round per file).
      ticket_weights: for 'ticket': start from the ticket's stored weights (e.g. the lottery
        ticket's θ0) instead of this run's initialisation.
      source_workdir, source_round: for 'round': an earlier run's workdir and the index of a
        completed round in it (negative: from the last one; a list: one round per index).
      ghost_skips: GSk on/off.
      ghost_activation: GSw: 'swish' or 'mish', or None (off).
      ghost_end_epoch: the epoch from which the ghosts are gone (α = 0, exactly ReLU); default
        the recipe's first learning-rate decay (ToST §2.2); the last epoch(s) must come after it.
      ghost_schedule_per_batch: move β and α at every step (at the fractional epoch) rather
        than once per epoch: smoother fading for runs of few epochs.
      lrsi: LRsI on/off (layerwise_rescaled_init, options through gin).
      teacher: KD: None (off), 'dense' (train a dense network first, in workdir/teacher) or the
        path of a saved .keras model whose outputs are logits.
      distillation_temperature, distillation_alpha: τ and the weight of the soft term.
      teacher_epochs: epochs of the dense teacher (default: the recipe's).
      recipe: TrainingRecipe of every round (label smoothing = its `label_smoothing`).
      weight_init: kernel initialisation, seeded by the experiment's seed.
      exclude: masked layers the criterion does not prune, by name or pattern
        (masks.excluded_names).
      model_kwargs: extra keyword arguments for the experiment's model_fn.
    """

    algorithm = "tost"

    def __init__(self, mask_source="criterion", criterion="random", prune_fraction=0.9,
                 ticket_path=None, ticket_weights=True, source_workdir=None, source_round=-1,
                 ghost_skips=True, ghost_activation="swish", ghost_end_epoch=None,
                 ghost_schedule_per_batch=False, lrsi=True, teacher=None,
                 distillation_temperature=4.0, distillation_alpha=0.9, teacher_epochs=None,
                 recipe=None, weight_init="kaiming_normal", exclude=(), model_kwargs=None):
        name = type(self).__name__  # ToSTSearch, or ToSTTraining (its former name)
        check_choice(f"{name}.mask_source", mask_source, MASK_SOURCES)
        if mask_source == "criterion":
            get_criterion(criterion)  # a ConfigError naming the closest one
            self.mask_specs = [check_fraction(f"{name}.prune_fraction", p)
                               for p in _as_list(prune_fraction)]
        elif mask_source == "ticket":
            if not ticket_path:
                raise ConfigError(f"mask_source='ticket' needs {name}.ticket_path")
            self.mask_specs = [str(path) for path in _as_list(ticket_path)]
            missing = [path for path in self.mask_specs if not os.path.exists(path)]
            if missing:
                raise ConfigError(f"ticket file(s) not found: {missing}")
            for path in self.mask_specs:  # a file that is not a ticket: one line, now
                read_ticket_header(path)
        else:
            if not source_workdir:
                raise ConfigError(f"mask_source='round' needs {name}.source_workdir")
            self.mask_specs = [int(r) for r in _as_list(source_round)]
        if not self.mask_specs:
            raise ConfigError(f"{name} has no mask to train (an empty list)")
        check_choice(f"{name}.ghost_activation", ghost_activation,
                     (None, *SMOOTH_KINDS))
        super().__init__(num_rounds=len(self.mask_specs), recipe=recipe)
        self.mask_source = mask_source
        self.criterion = criterion
        self.ticket_weights_from_file = bool(ticket_weights)
        self.source_workdir = source_workdir
        self.ghost_skips = bool(ghost_skips)
        self.ghost_activation = ghost_activation
        self.ghost_end_epoch = None
        if self.ghosts:
            end = first_decay_epoch(self.recipe) if ghost_end_epoch is None else ghost_end_epoch
            if end is None:
                raise ConfigError("the ghosts fade by the first learning-rate decay, and the "
                                  "recipe has none: use TrainingRecipe.lr_schedule='step' with "
                                  f"lr_drop_epochs, or set {name}.ghost_end_epoch")
            if not 0 < end < self.recipe.epochs:
                raise ConfigError(f"{name}.ghost_end_epoch must be in (0, epochs = "
                                  f"{self.recipe.epochs}) so that the round ends with epochs "
                                  f"that train without ghosts, got {end!r}")
            self.ghost_end_epoch = float(end)
        self.ghost_schedule_per_batch = bool(ghost_schedule_per_batch)
        self.lrsi = bool(lrsi)
        if teacher is not None and self.recipe.label_smoothing:
            raise ConfigError("knowledge distillation replaces label smoothing (Jaiswal et al., "
                              "'Spending your winning lottery better', §4.6): set "
                              f"TrainingRecipe.label_smoothing = 0 or {name}.teacher = None")
        if teacher is not None and teacher != DENSE_TEACHER and not os.path.exists(teacher):
            raise ConfigError(f"{name}.teacher must be None, {DENSE_TEACHER!r} or the path "
                              f"of a saved .keras model; {teacher!r} does not exist")
        self.teacher = teacher
        self.distillation = Distillation(None, distillation_temperature, distillation_alpha)
        self.teacher_epochs = int(teacher_epochs or self.recipe.epochs)
        self.weight_init = weight_init
        self.exclude = masks_lib.check_exclude(exclude, f"{name}.exclude")
        self.model_kwargs = dict(model_kwargs or {})

    @property
    def ghosts(self):
        return self.ghost_skips or self.ghost_activation is not None

    def tweaks(self):
        """Which tweaks are on, as the round's metrics record them."""
        return {"ghost_skips": self.ghost_skips, "ghost_activation": self.ghost_activation,
                "lrsi": self.lrsi, "label_smoothing": self.recipe.label_smoothing,
                "distillation": self.teacher}

    # -- the network ---------------------------------------------------------------------------

    def _build_network(self, experiment):
        return experiment.build_network(
            mask_rule=FixedMask(),
            kernel_initializer=weight_initializer(self.weight_init, seed=experiment.seed),
            **self.model_kwargs)

    def build(self, experiment):
        network = self._build_network(experiment)
        masks_lib.excluded_names(network, self.exclude)  # names and patterns, checked
        with experiment.strategy.scope():
            model = SparseModel(network)
        # The original architecture; each round trains a graph that adds ghosts to its layers.
        self.plain_network = network
        self.ghost_network = None
        return model

    def on_init(self, model, experiment):
        self.init_path = os.path.join(rounds.init_dir(experiment.workdir), rounds.WEIGHTS_FILE)
        self.teacher_accuracy = None
        if self.teacher is not None:
            self.distillation.teacher = self._teacher(experiment)

    # -- masks ---------------------------------------------------------------------------------

    def source_masks(self, index, network, experiment):
        """The mask of round `index` for `network` (at θ0, every mask still all ones)."""
        spec = self.mask_specs[index]
        if self.mask_source == "ticket":
            return read_ticket_masks(spec)
        if self.mask_source == "round":
            return rounds.load_round_masks(self.source_workdir, self.source_round_index(spec))
        return criterion_masks(self.criterion, network, spec,
                               batch=lambda: next(iter(experiment.dataset.train_epoch(0))),
                               seed=experiment.seed, exclude=self.exclude)

    def source_round_index(self, spec):
        done = rounds.completed_rounds(self.source_workdir)
        if spec < 0 and -spec <= len(done):
            return done[spec]
        if spec in done:
            return spec
        raise ConfigError(f"{self.source_workdir} has no completed round {spec} (completed: "
                          f"{done})")

    def _load_ticket_weights(self, path, network):
        values = {key: v.numpy() for key, v in ticket_variables(load_ticket(path)).items()}
        variables = ticket_variables(network)
        if set(values) != set(variables):
            raise ConfigError(f"the ticket {path} is not of this network: variables only in the "
                              f"ticket {sorted(set(values) - set(variables))[:5]}, only in the "
                              f"network {sorted(set(variables) - set(values))[:5]}")
        for key, variable in variables.items():
            if tuple(values[key].shape) != tuple(variable.shape):
                raise ConfigError(f"the ticket {path} has {key} of shape {values[key].shape}, "
                                  f"the network {tuple(variable.shape)}")
            variable.assign(values[key])

    # -- one round -----------------------------------------------------------------------------

    def begin_round(self, model, index, experiment):
        """θ0 -> mask -> ghosts in -> LRsI (see the module docstring)."""
        network = self.plain_network
        if model.network is not network:  # a previous attempt stopped between in and out
            model.replace_network(network)
        network.load_weights(self.init_path)  # θ0, every mask all ones
        if self.mask_source == "ticket" and self.ticket_weights_from_file:
            self._load_ticket_weights(self.mask_specs[index], network)
        masks_lib.set_masks(network, self.source_masks(index, network, experiment))
        if self.ghosts:
            self.ghost_network = insert_ghosts(
                network, activations=self.ghost_activation is not None, skips=self.ghost_skips,
                kind=self.ghost_activation or "swish")
            self._check_ghosts_found(self.ghost_network)
            model.replace_network(self.ghost_network)
        self.lrsi_scales = self._rescale(model.network, index, experiment) if self.lrsi else None
        model.distillation = self.distillation if self.teacher is not None else None

    def _check_ghosts_found(self, network):
        activations, skips = ghost_modules(network)
        if self.ghost_activation is not None and not activations:
            raise ConfigError("ghost_activation is on but the network has no standalone ReLU "
                              "layer to replace (a ReLU fused into Conv2D/Dense is not one; "
                              "for the zoo's conv nets use build_model.batch_norm = True)")
        if self.ghost_skips and not skips:
            raise ConfigError("ghost_skips is on but the network has no 3x3 conv block ending "
                              "in a standalone activation layer to put a skip around")

    def _rescale(self, network, index, experiment):
        """LRsI on the network as it trains (ghosts in); the scales are kept in the round
        directory so a resumed round applies the same ones instead of learning them again."""
        path = os.path.join(rounds.round_dir(experiment.workdir, index), LRSI_SCALES_FILE)
        if os.path.exists(path):
            scales = _read_json(path)
            for layer in rescalable_layers(network):
                layer.raw_kernel.assign(layer.raw_kernel * scales[layer.name])
            return scales
        scales = layerwise_rescaled_init(network, experiment.dataset.train_epoch(0),
                                         loss_fn=self.recipe.make_loss())
        rounds.write_json(path, scales)
        return scales

    def round_callbacks(self, model, index, experiment):
        if not self.ghosts:
            return []
        return [ScheduleCallback(bind_ghost_schedules(
            model.network, GhostBetaSchedule(relu_epoch=self.ghost_end_epoch),
            GhostAlphaSchedule(zero_epoch=self.ghost_end_epoch)),
            per_batch=self.ghost_schedule_per_batch)]

    def end_training(self, model, index, experiment):
        """Take the ghosts out: the model runs the original architecture again."""
        if model.network is self.plain_network:
            return
        if not ghosts_faded(model.network):
            raise TrainingError("the ghost modules have not faded by the end of the round "
                                "(ghost_end_epoch is within the round, so this is a bug)")
        model.replace_network(self.plain_network)

    def round_metrics(self, model, index, experiment):
        spec = self.mask_specs[index]
        if self.mask_source == "criterion":
            mask = {"criterion": self.criterion, "prune_fraction": spec}
        elif self.mask_source == "ticket":
            mask = {"ticket_path": spec, "ticket_weights": self.ticket_weights_from_file}
        else:
            mask = {"source_workdir": self.source_workdir,
                    "source_round": self.source_round_index(spec)}
        return {"mask_source": self.mask_source, "mask": mask, "tweaks": self.tweaks(),
                "ghost_end_epoch": self.ghost_end_epoch, "lrsi_scales": self.lrsi_scales,
                "ghosts_removed": self.ghosts and model.network is self.plain_network,
                "teacher_test_accuracy": self.teacher_accuracy}

    def describe_round(self, index, metrics):
        names = {"ghost_skips": "GSk", "ghost_activation": "GSw", "lrsi": "LRsI",
                 "label_smoothing": "LS", "distillation": "KD"}
        on = "+".join(names[k] for k, v in self.tweaks().items() if v) or "no tweaks"
        return (f"[tost] round {index + 1}/{self.planned_rounds} ({self.mask_source} "
                f"{self.mask_specs[index]}, {on}): remaining "
                f"{metrics['remaining_fraction']:.4f}, test accuracy "
                f"{metrics['test_accuracy']:.4f}")

    # -- the teacher ---------------------------------------------------------------------------

    def _teacher(self, experiment):
        if self.teacher != DENSE_TEACHER:
            teacher = keras.models.load_model(self.teacher, compile=False)
            classes = experiment.dataset.info.num_classes
            if teacher.outputs and teacher.outputs[0].shape[-1] != classes:
                raise ConfigError(f"the teacher {self.teacher} has {teacher.outputs[0].shape[-1]}"
                                  f" outputs, the data {classes} classes")
            return teacher
        return self._dense_teacher(experiment)

    def _dense_teacher(self, experiment):
        """The dense network (all masks ones) trained from θ0 with the recipe, in
        workdir/teacher/ (a side run: resumable, trained once, read back after)."""
        directory = os.path.join(experiment.workdir, TEACHER_DIR)
        network = self._build_network(experiment)
        with experiment.strategy.scope():
            teacher = SparseModel(network)
        teacher(next(iter(experiment.dataset.test))[0][:1])
        result = read_side_run(directory, network)  # finished: its result and weights
        if result is None:
            network.load_weights(self.init_path)
            result = train_side_run(
                teacher, directory, experiment.dataset,
                lambda: self.recipe.make_optimizer(experiment.dataset.steps_per_epoch),
                self.recipe.make_loss(), self.teacher_epochs,
                jit_compile=self.recipe.jit_compile, verbose=experiment.verbose,
                keep_weights=True, summarize=lambda model, history, evaluation: {
                    "test_accuracy": float(evaluation["accuracy"]),
                    "epochs": self.teacher_epochs})
            if experiment.verbose:
                print(f"[tost] dense teacher: test accuracy {result['test_accuracy']:.4f}",
                      flush=True)
        self.teacher_accuracy = result["test_accuracy"]
        return network


@gin.configurable
class ToSTTraining(ToSTSearch):
    """ToSTSearch under its former name, so that gin files and code naming it keep working
    (`Experiment.search = @ToSTTraining()`, `ToSTTraining.prune_fraction = 0.9`); bindings of
    `ToSTSearch.*` apply to it too, its own win."""
