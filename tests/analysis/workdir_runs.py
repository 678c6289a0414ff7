"""Tiny real runs whose workdirs the workdir, report and round-loop tests read (each trained once
per test session), with the live state of the network recorded at init and after every round."""
import keras
import pytest

from tests.search.helpers import tiny_data, tiny_net
from tf_lottery import masks as masks_lib
from tf_lottery.analysis.activations import activation_sparsity
from tf_lottery.analysis.angular import network_state
from tf_lottery.analysis.callbacks import ActivationSparsityCallback
from tf_lottery.analysis.connectivity import classification_eval_fn, interpolate
from tf_lottery.analysis.workdir import lmc_metrics
from tf_lottery.experiment import Experiment
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.pruning.magnitude import magnitude_masks
from tf_lottery.search.base import RoundSearch
from tf_lottery.search.edge_popup import EdgePopupSearch
from tf_lottery.training.recipe import TrainingRecipe
from tf_lottery.training.sparse_model import SparseModel

_RUNS = {}


class Run:
    """A finished tiny run: its workdir, the live (kernels, masks) after init and after each
    round, the activation sparsity measured live at each round's end, and the analysis callbacks
    the round loop made."""

    def __init__(self, workdir, search, experiment):
        self.workdir, self.search, self.experiment = workdir, search, experiment
        self.init_state, self.round_states, self.live_activation_sparsity = None, [], []
        self.callbacks = []


def _record(run, data):
    search = run.search
    on_init, end_round = search.on_init, search.end_round

    def init(model, experiment):
        on_init(model, experiment)
        run.init_state = network_state(model.network)

    def end(model, index, metrics, experiment):
        run.round_states.append(network_state(model.network))
        run.live_activation_sparsity.append(activation_sparsity(model, data))
        end_round(model, index, metrics, experiment)

    search.on_init, search.end_round = init, end


def _execute(tmp_path_factory, name, search, analysis=False):
    dataset = tiny_data()
    data = [(x, y) for x, y in dataset.test.take(1)]
    run = Run(str(tmp_path_factory.mktemp(name)), search, None)

    def factory(batches):
        run.callbacks.append(ActivationSparsityCallback(batches))
        return run.callbacks[-1]

    run.experiment = Experiment(workdir=run.workdir, search=search, model_fn=tiny_net,
                                dataset=dataset, verbose=0, tensorboard=False,
                                analysis_callbacks=[factory] if analysis else ())
    _record(run, data)
    run.results = run.experiment.run()
    return run


def edge_popup_run(tmp_path_factory):
    """Soft iEP, 2 cycles of 1 epoch, with activation sparsity measured during training."""
    if "edge_popup" not in _RUNS:
        search = EdgePopupSearch(variant="soft_lr", cycles=2, shrinkage=0.5,
                                 recipe=TrainingRecipe(epochs=1, learning_rate=0.1))
        _RUNS["edge_popup"] = _execute(tmp_path_factory, "edge_popup", search, analysis=True)
    return _RUNS["edge_popup"]


class MagnitudeRounds(RoundSearch):
    """A weak-ticket search small enough for tests: round 0 trains the dense network, each later
    round prunes half of the remaining weights by magnitude and trains on; from round 1 on, the
    round records the linear path from the previous round's network (metrics['lmc'])."""

    algorithm = "magnitude_rounds"

    def __init__(self):
        super().__init__(num_rounds=2, recipe=TrainingRecipe(epochs=1, learning_rate=0.05))

    def build(self, experiment):
        network = experiment.build_network(mask_rule=FixedMask())
        with experiment.strategy.scope():
            return SparseModel(network)

    def begin_round(self, model, index, experiment):
        if index:
            masks_lib.set_masks(model.network, magnitude_masks(model.network, prune_fraction=0.5))

    def round_metrics(self, model, index, experiment):
        if not index:
            return {}
        data = [(x, y) for x, y in experiment.dataset.test.take(2)]
        curve = interpolate(model.network, self.previous_weights, model.network.get_weights(),
                            classification_eval_fn(data), num_points=5)
        return {"lmc": lmc_metrics(curve, between=[index - 1, index])}

    def end_round(self, model, index, metrics, experiment):
        self.previous_weights = model.network.get_weights()


def magnitude_run(tmp_path_factory):
    """MagnitudeRounds: trained weights, so the rounds lie at nonzero angles."""
    if "magnitude" not in _RUNS:
        keras.utils.set_random_seed(0)
        _RUNS["magnitude"] = _execute(tmp_path_factory, "magnitude", MagnitudeRounds())
    return _RUNS["magnitude"]


# Module-scoped fixtures for the test modules that import them: one tiny run per module.
@pytest.fixture(scope="module")
def edge_popup(tmp_path_factory):
    return edge_popup_run(tmp_path_factory)


@pytest.fixture(scope="module")
def magnitude(tmp_path_factory):
    return magnitude_run(tmp_path_factory)
