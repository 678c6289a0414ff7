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
from tf_lottery.search import rounds
from tf_lottery.training.fitting import fit_round
from tf_lottery.training.optimizers import last_applied_learning_rate
from tf_lottery.training.recipe import TrainingRecipe


class RoundSearch:
    """Base class of the searches. Subclasses set `algorithm`, `num_rounds` and `recipe` and
    implement `build` and `begin_round`; the other hooks have sensible defaults."""

    algorithm = "search"
    # A strong ticket's weights are its seeded initialisation (stored as seed + masks); a weak
    # ticket stores the weights it is trained from (see ticket_weights).
    strong_ticket = False

    def __init__(self, num_rounds, recipe=None):
        self.num_rounds = int(num_rounds)
        self.recipe = recipe or TrainingRecipe()

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
        """The weights the exported ticket file stores: None = the final weights, or a path to
        a .weights.h5 (e.g. the rewind point a weak ticket is retrained from)."""
        return None

    # -- the loop ------------------------------------------------------------------------------

    def run(self, experiment):
        workdir, dataset = experiment.workdir, experiment.dataset
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
        for index in range(len(done), self.num_rounds):
            start = time.time()
            self.begin_round(model, index, experiment)
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
                           num_rounds=self.num_rounds)
            records = epoch_records(callbacks)
            if records:  # what analysis callbacks measured during the round, by epoch
                metrics["analysis"] = records
            metrics.update(self.round_metrics(model, index, experiment))
            ticket = self.ticket_masks(model)
            rounds.save_round(workdir, index, model.network, ticket, metrics)
            self.previous_metrics = metrics
            results.append({"round": index, **metrics})
            experiment.write_round_summary(model.network, ticket, results)
            self.end_round(model, index, metrics, experiment)
            if experiment.verbose:
                print(self.describe_round(index, metrics), flush=True)
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
        return (f"[{self.algorithm}] round {index + 1}/{self.num_rounds}: remaining "
                f"{metrics['remaining_fraction']:.4f}, test accuracy "
                f"{metrics['test_accuracy']:.4f}")

