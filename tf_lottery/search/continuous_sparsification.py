"""Continuous Sparsification (CS; Savarese et al., "Winning the Lottery with Continuous
Sparsification", Algorithm 3) and the paper's baseline, Iterative Stochastic Sparsification
(ISS, Algorithm 2), as searches over rounds (RoundSearch).

CS re-parameterises the mask as m = σ(β·s) (Eq. 5; SigmoidScores) and minimises, per round,

    L_β(w, s) = L(f(x; σ(β·s) ⊙ w)) + λ·‖σ(β·s)‖₁                                    (Eq. 7)

while β is annealed within the round, β_t = β_0·(β_T/β_0)^{t/T} (Sec. 4.1: β_t = 100^{t/T}), so
σ(β·s) approaches b(s) = 1[s > 0] (Eq. 3, 6); at s = 0 exactly b(0) = 0, the weight is pruned
(σ(β·0) = 1/2 at every β; SigmoidScores). Between rounds (Algorithm 3, step 4; Sec. 3.2):

    s ← min(β_T·s_T, s_0),   β ← β_0,   optionally w ← w_k,

and the ticket of every round is b(s_T), never σ(β_T·s_T) (Sec. 3.2).

ISS samples m ~ Bernoulli(σ(s)) with a straight-through gradient (BernoulliScores) and minimises
E[L(f(x; m ⊙ w))] + λ·‖σ(s)‖₁ (Algorithm 2, step 2). Between rounds (step 4): w ← w_k and
s_i ← −∞ where s_{i,T} < s_{i,0}, here the constant REMOVED_SCORE = −1e4, whose σ is exactly 0
in float32 (so the weight is gone for good: its sample is 0 and its gradient 0). Its ticket is a
sample m ~ Ber(σ(s_T)) (step 3), or 1[s_T > 0] with ticket='threshold'.

Supermask mode (Sec. 4.1 after Zhou et al. 2019) freezes the weights at initialisation and learns
only s (batch-norm moving statistics, not weights, still follow the data).

Layers that `exclude` names (masks.excluded_names: names or patterns, e.g. ['*_shortcut',
'output'] for the paper's ResNet) have no mask parameters at all (Sec. 4.2: "their weights do
not have a correspondent mask m nor mask parameters s"): the network is built with the search's
rule and those layers are then swapped for FixedMask twins holding the same weights (the
model_fn takes one rule for the whole network; a copy keeps model_fn simple and works for any
functional or Sequential network). They stay dense in the ticket and out of its sparsity.

Every round records three test accuracies, all on its console line and in bin/report:

    test_accuracy            the search's own network at the round's end: for CS the soft mask
                             σ(β_T·s_T) ⊙ w, for ISS the mask 1[s_T > 0] ⊙ w
    ticket_test_accuracy     the binary ticket with the round's final weights, no training: the
                             round's ticket masks (CS: b(s_T), what export folds into the kernels,
                             so it is what the exported model scores) on a FixedMask copy
    retrained_test_accuracy  (evaluate_tickets) the ticket trained afresh from the rewind point
                             `evaluation_rewind_to` (ticket_evaluation.retrain_ticket), the
                             measure the paper compares tickets by
"""
import os

import gin
import keras
import numpy as np
import tensorflow as tf

from tf_lottery import compat
from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError, check_choice
from tf_lottery.layers.mask_rules import BernoulliScores, FixedMask, SigmoidScores
from tf_lottery.layers.masked import MaskedLayerMixin
from tf_lottery.search import rounds
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.edge_popup import freeze_weights
from tf_lottery.search.rewind import (INIT, check_rewind_point, dense_weights,
                                      load_rewind_point, rewind_path, rewind_point_saver,
                                      rewind_to_point, save_init_point)
from tf_lottery.search.ticket_evaluation import evaluate_ticket, retrain_ticket
from tf_lottery.training.sparse_model import SparseModel
from tf_lottery.training.split_optimizer import SCORES, ScoreSplitOptimizer

BETA_SCHEDULES = ("exponential", "linear")
SCORE_INITS = ("constant", "uniform")
ISS_TICKETS = ("sample", "threshold")
REMOVED_SCORE = -1e4  # ISS's s_i ← −∞: σ(−1e4) == 0.0 exactly in float32, and no inf anywhere


def annealed_beta(progress, initial_beta=1.0, final_beta=100.0, schedule="exponential"):
    """β after a fraction `progress` = t/T of a round (a float or a tensor in [0, 1]):
    exponential β_0·(β_T/β_0)^{t/T} (Sec. 4.1: β_t = 100^{t/T} with β_0 = 1, β_T = 100), or
    linear β_0 + (β_T − β_0)·t/T."""
    if schedule == "exponential":
        return initial_beta * (final_beta / initial_beta) ** progress
    check_choice("beta_schedule", schedule, BETA_SCHEDULES)
    return initial_beta + (final_beta - initial_beta) * progress  # linear


def cs_score_reset(scores, final_beta, initial_scores):
    """Algorithm 3, step 4 (Sec. 3.2): s ← min(β_T·s_T, s_0). Removed weights (s_T < 0) keep a
    negative score, kept ones restart from s_0 so that they can still be removed."""
    return np.minimum(final_beta * np.asarray(scores), np.asarray(initial_scores))


def iss_score_reset(scores, initial_scores):
    """Algorithm 2, step 4: s_i ← −∞ (REMOVED_SCORE) where s_{i,T} < s_{i,0}, else s_{i,T}."""
    scores = np.asarray(scores)
    return np.where(scores < np.asarray(initial_scores), np.float32(REMOVED_SCORE), scores)


def initial_score_array(kind, value, shape, rng):
    """s_0 of one layer: the constant `value` everywhere (the paper's choice, Sec. 4), or
    U(−|value|, |value|) drawn from the numpy Generator `rng` ('uniform')."""
    if kind == "constant":
        return np.full(shape, value, np.float32)
    if kind == "uniform":
        bound = abs(float(value))
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    check_choice("score_init", kind, SCORE_INITS)


def with_fixed_masks(network, exclude):
    """A copy of `network` whose masked layers that `exclude` names (masks.excluded_names: names
    and patterns) use FixedMask (all-ones mask, no scores); every other layer keeps its rule; all
    variables are copied."""
    names = masks_lib.excluded_names(network, exclude)
    if not compat.is_graph_model(network):
        raise ConfigError(f"excluding layers needs a functional or Sequential model, got "
                          f"{type(network).__name__}")
    pairs = []

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, MaskedLayerMixin) and layer.name in names:
            config["mask_rule"] = FixedMask()
        clone = layer.__class__.from_config(config)
        pairs.append((layer, clone))
        return clone

    copy = keras.models.clone_model(network, clone_function=clone_layer, recursive=True)
    for original, clone in pairs:
        if isinstance(original, MaskedLayerMixin) and original.name in names:
            # kernel, bias and mask (names unique within a masked layer); scores and rule
            # state have no counterpart
            targets = {variable.name: variable for variable in clone.weights}
            for variable in original.weights:
                if variable.name in targets:
                    targets[variable.name].assign(variable)
        else:
            clone.set_weights(original.get_weights())
    return copy


class MaskLearningSearch(RoundSearch):
    """What CS and ISS share: scores s on every masked layer but the excluded ones, λ·‖σ(·)‖₁,
    the rewinding, supermask mode, and the ticket evaluation. Subclasses give the rule, the soft
    mask under the L1 penalty, and the score reset between rounds."""

    network_mask = "the search's mask"  # what test_accuracy measures, said on the console line

    def __init__(self, num_rounds, recipe, l1_penalty, score_init, initial_score, rewind_to,
                 supermask, exclude, score_recipe, evaluate_tickets, evaluation_rewind_to,
                 evaluation_recipe, model_kwargs):
        if int(num_rounds) < 1:
            raise ConfigError(f"{type(self).__name__}.num_rounds must be >= 1, got {num_rounds!r}")
        if not l1_penalty >= 0:
            raise ConfigError(f"{type(self).__name__}.l1_penalty (λ) must be >= 0, "
                              f"got {l1_penalty!r}")
        check_choice(f"{type(self).__name__}.score_init", score_init, SCORE_INITS)
        super().__init__(num_rounds=num_rounds, recipe=recipe)
        self.l1_penalty = float(l1_penalty)
        self.score_init = score_init
        self.initial_score = float(initial_score)
        self.rewind_to = check_rewind_point(rewind_to, "rewind_to")
        self.supermask = bool(supermask)
        self.exclude = masks_lib.check_exclude(exclude, f"{type(self).__name__}.exclude")
        self.score_recipe = score_recipe
        self.evaluate_tickets = bool(evaluate_tickets)
        self.evaluation_rewind_to = check_rewind_point(evaluation_rewind_to,
                                                       "evaluation_rewind_to", allow_none=False)
        self.evaluation_recipe = evaluation_recipe
        self.model_kwargs = dict(model_kwargs or {})

    # -- what a subclass says ----------------------------------------------------------------

    def make_rule(self):
        raise NotImplementedError

    def soft_mask(self, layer):
        """The mask whose ℓ1 norm is penalised (σ(β·s) for CS, σ(s) for ISS)."""
        raise NotImplementedError

    def reset_scores(self, layer):
        """The layer's scores for the next round, from its state after the last one."""
        raise NotImplementedError

    # -- RoundSearch hooks -------------------------------------------------------------------

    def build(self, experiment):
        self.seed = experiment.seed
        network = experiment.build_network(mask_rule=self.make_rule(),
                                           score_initializer="zeros", **self.model_kwargs)
        if self.exclude:
            with experiment.strategy.scope():
                network = with_fixed_masks(network, self.exclude)
        with experiment.strategy.scope():
            model = SparseModel(network)
        self.layers = masks_lib.searched_layers(network, self.exclude, type(self).__name__)
        rng = np.random.default_rng(experiment.seed)
        for layer in self.layers:  # s_0 (saved with workdir/init, so a rerun keeps it)
            layer.scores.assign(initial_score_array(self.score_init, self.initial_score,
                                                    tuple(layer.scores.shape), rng))
        if self.supermask:
            freeze_weights(network)
        model.add_regularizer("mask_l1", self._l1_penalty)
        return model

    def _l1_penalty(self, model):
        """λ·‖soft mask‖₁ over the searched layers (Eq. 7; Algorithm 2, step 2)."""
        total = tf.add_n([tf.reduce_sum(self.soft_mask(layer)) for layer in self.layers])
        return self.l1_penalty * total

    def on_init(self, model, experiment):
        self.initial_scores = {layer.name: layer.scores.numpy() for layer in self.layers}
        save_init_point(experiment.workdir, model.network)

    def begin_round(self, model, index, experiment):
        self._ticket = None
        if index == 0:
            return
        for layer in self.layers:
            layer.scores.assign(self.reset_scores(layer))
        if self.rewind_to is not None and not self.supermask:  # supermask: w never moves
            rewind_to_point(model.network, experiment.workdir, self.rewind_to,
                            experiment.dataset.steps_per_epoch)

    def make_optimizer(self, index, experiment):
        steps = experiment.dataset.steps_per_epoch
        # Sec. 4.2: "we do not apply weight decay to the mask parameters s"
        weights = self.recipe.make_optimizer(steps, exclude_from_weight_decay=[SCORES])
        if self.score_recipe is None:
            return weights
        scores = self.score_recipe.make_optimizer(steps, exclude_from_weight_decay=[SCORES])
        return scores if self.supermask else ScoreSplitOptimizer(weights, scores)

    def rewind_points(self, evaluators=()):
        """The step-based rewind points round 0 must save (for rewinding, for evaluation, and
        for the evaluators' side runs, which train tickets from evaluation_rewind_to)."""
        specs = {self.rewind_to} if not self.supermask else set()
        if self.evaluate_tickets or self.evaluators or evaluators:
            specs.add(self.evaluation_rewind_to)
        return sorted(spec for spec in specs if spec not in (None, INIT))

    def round_callbacks(self, model, index, experiment):
        if index > 0:
            return []
        steps_per_epoch = experiment.dataset.steps_per_epoch
        points = self.rewind_points(getattr(experiment, "evaluators", ()))
        saver = rewind_point_saver(model.network, experiment.workdir, points, steps_per_epoch,
                                   self.round_epochs(0) * steps_per_epoch)
        return [saver] if saver is not None else []

    def ticket_start_weights(self, model, experiment):
        """Tickets train from evaluation_rewind_to (as ticket evaluation retrains them)."""
        return load_rewind_point(model.network, experiment.workdir, self.evaluation_rewind_to,
                                 experiment.dataset.steps_per_epoch)

    def ticket_recipe(self):
        return self.evaluation_recipe or self.recipe

    def ticket_masks(self, model):
        return {layer.name: np.asarray(layer.binary_mask(), np.float32) for layer in self.layers}

    def describe_round(self, index, metrics):
        text = (f"{super().describe_round(index, metrics)} ({self.network_mask}), ticket test "
                f"accuracy {metrics['ticket_test_accuracy']:.4f} (binary mask)")
        if metrics.get("retrained_test_accuracy") is not None:
            text += f", retrained {metrics['retrained_test_accuracy']:.4f}"
        return text

    def round_metrics(self, model, index, experiment):
        ticket = self.ticket_masks(model)
        recipe = self.evaluation_recipe or self.recipe
        current = evaluate_ticket(experiment, ticket, dense_weights(model.network), recipe,
                                  self.model_kwargs)
        metrics = {"l1_penalty": self.l1_penalty, "supermask": self.supermask,
                   "rewind_to": self.rewind_to, "ticket_test_accuracy": current["accuracy"],
                   "ticket_test_loss": current["loss"]}
        if self.evaluate_tickets:
            directory = os.path.join(rounds.round_dir(experiment.workdir, index), "retrain")
            metrics.update(retrain_ticket(
                experiment, ticket, rewind_path(experiment.workdir, self.evaluation_rewind_to),
                directory, recipe, model_kwargs=self.model_kwargs))
        return metrics


@gin.configurable
class ContinuousSparsificationSearch(MaskLearningSearch):
    """Continuous Sparsification (Algorithm 3; see the module docstring).

    Args:
      num_rounds: iterations of Algorithm 3 (Sec. 4.1: 4 for Conv-6; Sec. 4.2: 5 for ResNet).
      recipe: TrainingRecipe of each round: its epochs, and the optimizer of w (and of s unless
        score_recipe is given).
      l1_penalty: λ of Eq. 7 (Sec. 4.1: 1e-10 for ticket search, 1e-11..1e-7 for supermasks).
      initial_beta, final_beta: β_0 and β_T (Sec. 4.1: 1 and 100; footnote 1: 500 suffices
        with SGD in float32).
      beta_schedule: 'exponential' (the paper's β_t = β_0·(β_T/β_0)^{t/T}) or 'linear'; t counts
        optimizer steps of the round, T its total steps.
      score_init, initial_score: s_0 = initial_score everywhere ('constant', the paper's
        choice: Sec. 4.1 varies s_0 in [−0.03, 0.03] across runs, Sec. 4.2 controls the
        tickets' sparsity by it), or s_0 ~ U(−a, a) with a = |initial_score| ('uniform').
        s_0 = 0 is the edge case: b(0) = 0, every weight starts pruned in the ticket (soft mask
        1/2) and is kept only if training raises its score above 0.
      rewind_to: w ← w_k between rounds: 'init', '<N>ep', '<N>it' or None (no rewinding, as
        Sec. 4.2 does for ResNets).
      supermask: freeze w at initialisation, learn only s (Sec. 4.1, "Learning a Supermask").
      exclude: masked layers without s, by name or pattern (masks.excluded_names; Sec. 4.2:
        the 1x1 shortcuts and the output layer, ['*_shortcut', 'output'] in the zoo).
      score_recipe: a TrainingRecipe whose optimizer trains s (None: the recipe's optimizer).
      evaluate_tickets: retrain each round's ticket from evaluation_rewind_to with
        evaluation_recipe (default: recipe) and record retrained_test_accuracy.
      model_kwargs: extra keyword arguments for the experiment's model_fn.
    """

    algorithm = "continuous_sparsification"
    network_mask = "soft mask σ(β_T·s)"

    def __init__(self, num_rounds=4, recipe=None, l1_penalty=1e-10, initial_beta=1.0,
                 final_beta=100.0, beta_schedule="exponential", score_init="constant",
                 initial_score=0.0, rewind_to=None, supermask=False, exclude=(),
                 score_recipe=None, evaluate_tickets=True, evaluation_rewind_to="init",
                 evaluation_recipe=None, model_kwargs=None):
        super().__init__(num_rounds, recipe, l1_penalty, score_init, initial_score, rewind_to,
                         supermask, exclude, score_recipe, evaluate_tickets,
                         evaluation_rewind_to, evaluation_recipe, model_kwargs)
        if not 0 < initial_beta <= final_beta:
            raise ConfigError(f"need 0 < initial_beta <= final_beta, got {initial_beta!r}, "
                              f"{final_beta!r}")
        annealed_beta(0.0, 1.0, 1.0, beta_schedule)  # checks the name
        self.initial_beta = float(initial_beta)
        self.final_beta = float(final_beta)
        self.beta_schedule = beta_schedule

    def make_rule(self):
        return SigmoidScores(self.initial_beta)

    def soft_mask(self, layer):
        # σ(β·s) (⊙ an all-ones mask): the forward pass's own tensor, not computed again
        return layer.forward_mask(training=True)

    def beta_at(self, step, total_steps):
        """β after `step` of `total_steps` optimizer steps of a round (floats or tensors)."""
        progress = tf.minimum(step / total_steps, 1.0) if tf.is_tensor(step) else min(
            step / total_steps, 1.0)
        return annealed_beta(progress, self.initial_beta, self.final_beta, self.beta_schedule)

    def build(self, experiment):
        model = super().build(experiment)
        model.add_step_hook(self._anneal_beta)
        return model

    def _anneal_beta(self, model):
        """Step hook, run inside the compiled train step before the forward pass: β_t for the
        optimizer's step t of this round (its iterations restart at 0 with every round's new
        optimizer and are restored with it on resume)."""
        step = tf.cast(model.optimizer.iterations, tf.float32)
        beta = self.beta_at(step, float(self._round_steps))
        for layer in self.layers:
            layer.beta.assign(tf.cast(beta, layer.beta.dtype))

    def begin_round(self, model, index, experiment):
        super().begin_round(model, index, experiment)  # s ← min(β_T·s_T, s_0) uses β_T
        self._round_steps = self.round_epochs(index) * experiment.dataset.steps_per_epoch
        for layer in self.layers:
            layer.beta.assign(self.initial_beta)  # β ← β_0

    def reset_scores(self, layer):
        return cs_score_reset(layer.scores.numpy(), float(layer.beta.numpy()),
                              self.initial_scores[layer.name])

    def measure(self, model, dataset, history, epochs):
        # The round ends at β_T: measure (and save) σ(β_T·s_T), whatever step the fit ended on.
        for layer in self.layers:
            layer.beta.assign(self.final_beta)
        return super().measure(model, dataset, history, epochs)

    def round_metrics(self, model, index, experiment):
        return {**super().round_metrics(model, index, experiment),
                "final_beta": self.final_beta, "beta_schedule": self.beta_schedule}


@gin.configurable
class IterativeStochasticSparsificationSearch(MaskLearningSearch):
    """Iterative Stochastic Sparsification (Algorithm 2; see the module docstring).

    Args:
      num_rounds: iterations of Algorithm 2 (Sec. 4.1: 30; one round is Stochastic
        Sparsification, Zhou et al.'s supermask method, with supermask=True).
      recipe: TrainingRecipe of each round (Sec. 4.1: Adam 3e-4 for w, 40 epochs).
      l1_penalty: λ of Algorithm 2 (Sec. 4.1: 1e-8).
      score_init, initial_score: s_0 (Sec. 4.1: the constant 1; -5..5 for supermasks).
      rewind_to: w ← w_k between rounds (Algorithm 2, step 4); default 'init'.
      score_recipe: optimizer of s (Sec. 4.1: SGD, learning rate 20; 100 for supermasks).
      ticket: 'sample' (m ~ Ber(σ(s_T)), Algorithm 2, step 3; seeded by the experiment seed
        and the round) or 'threshold' (1[s_T > 0], the most likely mask).
      supermask, exclude, evaluate_tickets, evaluation_rewind_to, evaluation_recipe,
      model_kwargs: as in ContinuousSparsificationSearch.
    """

    algorithm = "iterative_stochastic_sparsification"
    network_mask = "mask 1[s > 0]"

    def __init__(self, num_rounds=30, recipe=None, l1_penalty=1e-8, score_init="constant",
                 initial_score=1.0, rewind_to="init", supermask=False, exclude=(),
                 score_recipe=None, ticket="sample", evaluate_tickets=True,
                 evaluation_rewind_to="init", evaluation_recipe=None, model_kwargs=None):
        super().__init__(num_rounds, recipe, l1_penalty, score_init, initial_score, rewind_to,
                         supermask, exclude, score_recipe, evaluate_tickets,
                         evaluation_rewind_to, evaluation_recipe, model_kwargs)
        self.ticket = check_choice("IterativeStochasticSparsificationSearch.ticket", ticket,
                                   ISS_TICKETS)

    def make_rule(self):
        return BernoulliScores()

    def soft_mask(self, layer):
        scores = tf.convert_to_tensor(layer.scores)
        return tf.sigmoid(scores) * tf.cast(layer.mask, scores.dtype)  # σ(s)

    def reset_scores(self, layer):
        return iss_score_reset(layer.scores.numpy(), self.initial_scores[layer.name])

    def begin_round(self, model, index, experiment):
        self._round = index
        super().begin_round(model, index, experiment)

    def ticket_masks(self, model):
        if self.ticket == "threshold":
            return super().ticket_masks(model)
        if self._ticket is None:  # one sample per round, the same on a rerun
            rng = np.random.default_rng([self.seed, self._round])
            self._ticket = {}
            for layer in self.layers:
                prob = tf.sigmoid(tf.convert_to_tensor(layer.scores)).numpy() * layer.mask.numpy()
                self._ticket[layer.name] = (rng.random(prob.shape) < prob).astype(np.float32)
        return self._ticket

    def round_metrics(self, model, index, experiment):
        removed = sum(int(np.sum(layer.scores.numpy() <= REMOVED_SCORE)) for layer in self.layers)
        return {**super().round_metrics(model, index, experiment), "ticket": self.ticket,
                "removed_weights": removed}
