import json

import keras
import numpy as np
import pytest

from tests.search.helpers import constant_recipe, mlp, mlp_experiment, tiny_data
from tf_lottery.errors import ConfigError
from tf_lottery.layers import MaskedDense
from tf_lottery.layers.mask_rules import FixedMask, SigmoidScores
from tf_lottery.search.rewind import (RewindPointSaver, assign_dense_weights,
                                      check_rewind_point, dense_weights, load_dense_weights,
                                      rewind_steps, save_dense_weights)
from tf_lottery.search.ticket_evaluation import retrain_ticket, ticket_model
from tf_lottery.training.fitting import fit_round
from tf_lottery.training.sparse_model import SparseModel


def test_rewind_point_names():
    assert rewind_steps("init", 100) == 0
    assert rewind_steps("2ep", 390) == 780  # the CS paper's "epoch 2 (780 parameter updates)"
    assert rewind_steps("500it", 390) == 500
    assert check_rewind_point(None) is None
    for bad in ("2", "ep2", "2 ep", 2, "last"):
        with pytest.raises(ConfigError):
            check_rewind_point(bad)
    with pytest.raises(ConfigError):
        check_rewind_point(None, allow_none=False)


def test_dense_weights_move_between_mask_rules(tmp_path):
    search_network = mlp((28, 28, 1), 10, mask_rule=SigmoidScores())
    weights = dense_weights(search_network)
    assert sorted(weights) == ["fc1/bias", "fc1/kernel", "output/bias", "output/kernel"]
    path = str(tmp_path / "point.npz")
    save_dense_weights(path, search_network)
    plain = mlp((28, 28, 1), 10, mask_rule=FixedMask())
    assign_dense_weights(plain, load_dense_weights(path))
    for name in ("fc1", "output"):
        np.testing.assert_array_equal(plain.get_layer(name).raw_kernel.numpy(),
                                      search_network.get_layer(name).raw_kernel.numpy())
    with pytest.raises(ConfigError, match="do not fit"):
        assign_dense_weights(mlp((28, 28, 1), 10, hidden=8), {"fc1/kernel": np.zeros(1)})
    with pytest.raises(ConfigError, match="no rewind point"):
        load_dense_weights(str(tmp_path / "absent.npz"))


def _sequential(name, mask_rule=None):
    return keras.Sequential([keras.Input((6,)), MaskedDense(4, name="fc1", mask_rule=mask_rule),
                             MaskedDense(3, name="output", mask_rule=mask_rule)], name=name)


def test_rewind_keys_do_not_carry_the_network_name(tmp_path):
    # A Sequential builds its layers under its own name ('sequential_3/fc1/kernel'), often an
    # automatic one that the next build of the same model does not share.
    saved = _sequential("sequential_3", SigmoidScores())
    assert sorted(dense_weights(saved)) == ["fc1/bias", "fc1/kernel", "output/bias",
                                            "output/kernel"]
    path = str(tmp_path / "point.npz")
    save_dense_weights(path, saved)
    loaded = _sequential("sequential_4", FixedMask())
    assign_dense_weights(loaded, load_dense_weights(path))
    for name in ("fc1", "output"):
        np.testing.assert_array_equal(loaded.get_layer(name).raw_kernel.numpy(),
                                      saved.get_layer(name).raw_kernel.numpy())


def test_rewind_files_keyed_by_variable_path_still_load():
    # the older format: every key is the variable's path, led by the model's (automatic) name
    old = _sequential("sequential_7")
    values = {v.path: v.numpy() + 1.0 for v in old.weights if v.name in ("kernel", "bias")}
    assert sorted(values)[0] == "sequential_7/fc1/bias"
    network = _sequential("sequential")
    assign_dense_weights(network, values)
    np.testing.assert_array_equal(network.get_layer("output").raw_kernel.numpy(),
                                  values["sequential_7/output/kernel"])
    with pytest.raises(ConfigError, match="do not fit"):
        assign_dense_weights(network, {k: v for k, v in values.items() if "fc1" not in k})


def test_rewind_point_saver_keeps_the_iterate_after_k_steps(tmp_path):
    dataset = tiny_data(train_examples=512)
    network = mlp(dataset.info.input_shape, 10, mask_rule=FixedMask())
    model = SparseModel(network)
    path = str(tmp_path / "rewind_3it.npz")
    seen = {}

    class After3(RewindPointSaver):  # record the weights independently at step 3
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 3:
                seen.update(dense_weights(network))
            super().on_train_batch_end(batch, logs)

    r = constant_recipe()
    fit_round(model, dataset, r.make_optimizer(8), r.make_loss(), 1, str(tmp_path / "fit"),
              callbacks=[After3([(path, 3)], network)], jit_compile=False, verbose=0)
    saved = load_dense_weights(path)
    assert set(saved) == set(seen)
    for key in saved:
        np.testing.assert_array_equal(saved[key], seen[key])
    final = dense_weights(network)
    assert not np.array_equal(saved["fc1/kernel"], final["fc1/kernel"])


def _ticket(network, density_seed=0):
    rng = np.random.default_rng(density_seed)
    return {name: (rng.random(network.get_layer(name).mask.shape) < 0.3).astype(np.float32)
            for name in ("fc1", "output")}


def test_retrain_ticket_trains_the_masked_subnetwork_from_the_rewind_point(tmp_path):
    exp = mlp_experiment(tmp_path, search=None)
    start = mlp(exp.dataset.info.input_shape, 10, mask_rule=SigmoidScores())
    point = str(tmp_path / "init" / "rewind_init.npz")
    save_dense_weights(point, start)
    masks = _ticket(start)
    directory = tmp_path / "round_00" / "retrain"
    metrics = retrain_ticket(exp, masks, point, str(directory), constant_recipe(epochs=2))
    assert 0.1 < metrics["retrained_test_accuracy"] <= 1
    assert metrics["retrained_epochs"] == 2 and len(metrics["retrained_history"]) == 2
    assert metrics["retrained_remaining_fraction"] == pytest.approx(
        sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values()))
    assert json.loads((directory / "metrics.json").read_text()) == metrics
    # the retrained network: FixedMask, started from the point, pruned weights exactly zero
    model = ticket_model(exp, masks, load_dense_weights(point))
    layer = model.network.get_layer("fc1")
    assert isinstance(layer.mask_rule, FixedMask)
    np.testing.assert_array_equal(layer.raw_kernel.numpy(), start.get_layer("fc1").raw_kernel)
    np.testing.assert_array_equal(layer.mask.numpy(), masks["fc1"])
    # a finished evaluation is read back, not trained again
    assert retrain_ticket(exp, masks, point, str(directory), constant_recipe(epochs=2)) == metrics
    # a lost metrics file (killed after the last epoch): resumes from the checkpoint, no training
    (directory / "metrics.json").unlink()
    again = retrain_ticket(exp, masks, point, str(directory), constant_recipe(epochs=2))
    assert again["retrained_test_accuracy"] == pytest.approx(metrics["retrained_test_accuracy"])
    assert again["retrained_history"] == metrics["retrained_history"]


def test_retrained_pruned_weights_stay_zero(tmp_path):
    exp = mlp_experiment(tmp_path, search=None)
    start = mlp(exp.dataset.info.input_shape, 10, mask_rule=FixedMask())
    point = str(tmp_path / "point.npz")
    save_dense_weights(point, start)
    masks = _ticket(start, 1)
    directory = str(tmp_path / "retrain")
    sgd = constant_recipe(optimizer="sgd", momentum=0.9, learning_rate=0.1)
    retrain_ticket(exp, masks, point, directory, sgd)
    model = ticket_model(exp, masks, load_dense_weights(point))
    fit_round(model, exp.dataset, sgd.make_optimizer(8), sgd.make_loss(), 1, directory,
              jit_compile=False, verbose=0)  # restores the finished run's checkpoint
    kernel = model.network.get_layer("fc1").kernel.numpy()  # effective kernel
    assert np.all(kernel[masks["fc1"] == 0] == 0)
    trained = model.network.get_layer("fc1").raw_kernel.numpy()
    assert not np.array_equal(trained[masks["fc1"] == 1],
                              start.get_layer("fc1").raw_kernel.numpy()[masks["fc1"] == 1])
