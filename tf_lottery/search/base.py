"""RoundSearch: the loop every ticket search shares (jaxpruner-style: algorithms are small classes
behind one interface; open_lth-style: rounds on disk make resumption and comparison trivial).

A subclass says how to build the model and what each round starts from; the base class does the
rest the same way for every algorithm:

    build -> save/restore workdir/init -> for each unfinished round:
        begin_round (set masks / scores / weights from the state after the previous round)
        fit_round   (model.fit with epoch checkpoints: a kill resumes mid-round)
        end_training (e.g. take training-only modules out again)
        measure     (test accuracy, loss, sparsity per layer and global, MACs, the size of the
                     folded weights raw and gzip'd, epochs, steps, time)
        evaluators  (search/evaluators.py: controls, linear mode connectivity, for any search:
                     the search's own `evaluators` and Experiment.evaluators; they train the
                     ticket again in side runs through `ticket_trainer`)
        save_round  (masks.npz, weights, metrics.json last)

On a rerun the completed rounds are skipped and the model is restored from the last of them, so
`begin_round` always sees the same state whether or not the run was interrupted.
"""
import os
import time

from tf_lottery import masks as masks_lib
from tf_lottery.analysis.callbacks import epoch_records
from tf_lottery.analysis.flops import flops_metrics
from tf_lottery.export.sizes import weights_sizes
from tf_lottery.layers.initializers import weight_initializer
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.search import rounds
from tf_lottery.search.evaluators import check_unique
from tf_lottery.search.rewind import INIT, load_rewind_point
from tf_lottery.search.side_run import FreshTicketTrainer
from tf_lottery.training.fitting import fit_round
from tf_lottery.training.optimizers import last_applied_learning_rate
from tf_lottery.training.recipe import TrainingRecipe


def plain_settings(obj):
    """{attribute: value} of the public attributes of `obj` that hold plain values (None, bool,
    numbers, strings, and lists, tuples and string-keyed dicts of them), sorted by name."""
    return {key: value for key, value in sorted(vars(obj).items())
            if not key.startswith("_") and _is_plain(value)}


def _is_plain(value):
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


class RoundSearch:
    """Base class of the searches. Subclasses set `algorithm`, `num_rounds` and `recipe` and
    implement `build` and `begin_round`; the other hooks have sensible defaults.

    `num_rounds` is configuration: the rounds the search was given, or None when `build`
    computes them (IMP's target_sparsity) and sets `planned_rounds`, the rounds the run trains.
    """

    algorithm = "search"
    # A strong ticket's weights are its seeded initialisation (stored as seed + masks); a weak
    # ticket stores the weights it is trained from (see ticket_weights).
    strong_ticket = False

    CONTROL_SEED_STRIDE = 7919  # the control seed of round r > 0: the experiment's seed + stride·r

    def __init__(self, num_rounds, recipe=None, evaluators=()):
        self.num_rounds = None if num_rounds is None else int(num_rounds)
        self.recipe = recipe or TrainingRecipe()
        # kept out of vars()' plain settings (runner.describe_run): a run's identity is as before
        self._evaluators = check_unique(evaluators)
        self._planned_rounds = None  # run state: set by build when num_rounds is None
        self.round_start = None

    @property
    def planned_rounds(self):
        """The number of rounds the run trains: num_rounds, or what build computed when that is
        None (run state)."""
        return self.num_rounds if self._planned_rounds is None else self._planned_rounds

    @planned_rounds.setter
    def planned_rounds(self, value):
        self._planned_rounds = int(value)

    def run_identity(self):
        """The settings that make two runs of this search the same run (runner.describe_run):
        its plain public attributes."""
        return plain_settings(self)

    @property
    def evaluators(self):
        """The search's own evaluators (search/evaluators.py); Experiment.evaluators adds more."""
        return self._evaluators

    @evaluators.setter
    def evaluators(self, evaluators):
        self._evaluators = check_unique(evaluators)

    # -- hooks -------------------------------------------------------------------------------

    def build(self, experiment):
        """Return the SparseModel to train (its network built with experiment.build_network)."""
        raise NotImplementedError

    def on_init(self, model, experiment):
        """Called once the initial state is in place (fresh or restored from workdir/init)."""

    def begin_round(self, model, index, experiment):
        """Prepare round `index` from the model's state after round index-1 (or init)."""
        raise NotImplementedError

    def make_optimizer(self, index, experiment):
        return self.recipe.make_optimizer(experiment.dataset.steps_per_epoch)

    def round_epochs(self, index):
        return self.recipe.epochs

    def round_callbacks(self, model, index, experiment):
        return []

    def end_training(self, model, index, experiment):
        """Called right after the round's training, before it is measured and saved (e.g. to
        take training-only modules out of the network)."""

    def ticket_masks(self, model):
        """The round's ticket: {layer: 0/1 mask} (default: each layer's binary mask)."""
        return masks_lib.get_masks(model.network)

    def round_metrics(self, model, index, experiment):
        """Algorithm-specific entries of the round's metrics.json."""
        return {}

    def end_round(self, model, index, metrics, experiment):
        """Called after the round is saved (e.g. to print or to keep state in memory)."""

    def ticket_weights(self, experiment):
        """The weights the exported ticket file stores: None = the final weights, a path to
        a .weights.h5 or {key: array} of dense weights (e.g. the rewind point a weak ticket is
        retrained from)."""
        return None

    # -- how evaluators train the ticket again (search/side_run.py, search/evaluators.py) ----

    def ticket_trainer(self, model, index, experiment):
        """The trainer of round `index`'s side runs: by default FreshTicketTrainer (the ticket
        on a FixedMask network of its own, from ticket_start_weights, with ticket_recipe);
        searches whose round trains a fixed mask return a RoundModelTrainer."""
        return FreshTicketTrainer(self, model, index, experiment)

    def ticket_network(self, experiment, seed=None):
        """A FixedMask network of the search's architecture; with `seed`, its kernels drawn
        afresh from the search's `weight_init` ('kaiming_normal' if it has none) under that
        seed (a reinit control's weights)."""
        kwargs = dict(getattr(self, "model_kwargs", None) or {})
        if seed is not None:
            kwargs["kernel_initializer"] = weight_initializer(
                getattr(self, "weight_init", None) or "kaiming_normal", seed=seed)
        return experiment.build_network(mask_rule=FixedMask(), **kwargs)

    def ticket_start_weights(self, model, experiment):
        """The dense weights (rewind.dense_weights) a ticket of this search trains from: by
        default θ0, the run's initialisation (rewind point 'init')."""
        return load_rewind_point(model.network, experiment.workdir, INIT,
                                 experiment.dataset.steps_per_epoch)

    def ticket_recipe(self):
        """The TrainingRecipe a FreshTicketTrainer trains tickets with (default: the recipe)."""
        return self.recipe

    def control_seed(self, index, experiment):
        """The seed of round `index`'s control: the experiment's seed + 7919·index, and for
        round 0 (sparse already in searches other than IMP) seed + 7919·1000, so that no control
        is drawn with the run's own seed."""
        return experiment.seed + self.CONTROL_SEED_STRIDE * (index or 1000)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, experiment):
        workdir, dataset = experiment.workdir, experiment.dataset
        evaluators = check_unique([*self.evaluators, *getattr(experiment, "evaluators", ())])
        model = self.model = self.build(experiment)
        with experiment.strategy.scope():  # create every variable (in scope) before any restore
            model(next(iter(dataset.test))[0][:1])
        init_path = os.path.join(rounds.init_dir(workdir), rounds.WEIGHTS_FILE)
        if os.path.exists(init_path):
            model.network.load_weights(init_path)
        else:
            rounds.save_init(workdir, model.network)
        self.on_init(model, experiment)

        done = rounds.completed_rounds(workdir)
        results = [rounds.load_metrics(workdir, i) for i in done]
        if done:
            model.network.load_weights(rounds.round_weights_path(workdir, done[-1]))
        self.previous_metrics = results[-1] if results else None
        search_epochs = results[-1]["search_epochs"] if results else 0
        for index in range(len(done), self.planned_rounds):
            start = time.time()
            self.begin_round(model, index, experiment)
            # what the round starts from, for the evaluators' side runs (RoundModelTrainer)
            self.round_start = model.network.get_weights() if evaluators else None
            with experiment.strategy.scope():
                optimizer = self.make_optimizer(index, experiment)
            epochs = self.round_epochs(index)
            # callbacks that add to the epoch logs (schedules, analyses) before TensorBoard
            callbacks = [*self.round_callbacks(model, index, experiment),
                         *experiment.analysis_callbacks(index),
                         *experiment.tensorboard_callbacks(index)]
            history = fit_round(
                model, dataset, optimizer, self.recipe.make_loss(), epochs,
                rounds.round_dir(workdir, index), callbacks=callbacks,
                jit_compile=self.recipe.jit_compile, verbose=experiment.verbose)
            self.end_training(model, index, experiment)
            search_epochs += epochs
            metrics = self.measure(model, dataset, history, epochs)
            metrics.update(search_epochs=search_epochs, wall_time_s=time.time() - start,
                           # the rate of the round's last step: what fine-tuning continues at
                           final_learning_rate=last_applied_learning_rate(optimizer),
                           num_rounds=self.planned_rounds)
            records = epoch_records(callbacks)
            if records:  # what analysis callbacks measured during the round, by epoch
                metrics["analysis"] = records
            metrics.update(self.round_metrics(model, index, experiment))
            if evaluators:
                trainer = self.ticket_trainer(model, index, experiment)
                for evaluator in evaluators:
                    metrics.update(evaluator.evaluate(self, model, index, experiment, trainer))
            ticket = self.ticket_masks(model)
            rounds.save_round(workdir, index, model.network, ticket, metrics)
            self.previous_metrics = metrics
            results.append({"round": index, **metrics})
            experiment.write_round_summary(model.network, ticket, results)
            self.end_round(model, index, metrics, experiment)
            self.round_start = None
            if experiment.verbose:
                line = self.describe_round(index, metrics)
                for evaluator in evaluators:
                    words = evaluator.describe(metrics)
                    line += f", {words}" if words else ""
                print(line, flush=True)
        return results

    def measure(self, model, dataset, history, epochs):
        evaluation = model.evaluate(dataset.test, verbose=0, return_dict=True)
        ticket = self.ticket_masks(model)
        remaining, total = masks_lib.count(ticket)
        last = history[-1] if history else {}
        return {
            "algorithm": self.algorithm,
            "test_accuracy": float(evaluation["accuracy"]), "test_loss": float(evaluation["loss"]),
            "train_accuracy": last.get("accuracy"), "train_loss": last.get("loss"),
            "remaining_fraction": remaining / total if total else 1.0,
            "sparsity": 1 - remaining / total if total else 0.0,
            "remaining_weights": remaining, "total_weights": total,
            "layer_densities": masks_lib.layer_densities(ticket),
            **flops_metrics(model.network, ticket),  # macs, dense_macs, macs_fraction
            # the folded weights an export holds, float32, raw and gzip'd (zeros compress)
            **weights_sizes(model.network, ticket),  # weights_bytes, weights_gzip_bytes
            "epochs": epochs, "steps": epochs * dataset.steps_per_epoch, "history": history,
        }

    def describe_round(self, index, metrics):
        return (f"[{self.algorithm}] round {index + 1}/{self.planned_rounds}: remaining "
                f"{metrics['remaining_fraction']:.4f}, test accuracy "
                f"{metrics['test_accuracy']:.4f}")

