import json

import numpy as np
import pytest

from tests.search.helpers import constant_recipe, mlp, tiny_data
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.search import side_run
from tf_lottery.search.side_run import read_side_run, train_side_run
from tf_lottery.training.sparse_model import SparseModel


def _model(dataset):
    model = SparseModel(mlp(dataset.info.input_shape, 10, mask_rule=FixedMask()))
    model(next(iter(dataset.test))[0][:1])
    return model


def test_a_side_run_trains_once_keeps_its_result_and_weights_and_is_read_back(tmp_path,
                                                                              monkeypatch):
    dataset = tiny_data(train_examples=128)
    recipe = constant_recipe()
    directory = str(tmp_path / "side")
    args = (directory, dataset, lambda: recipe.make_optimizer(2), recipe.make_loss(), 1)
    model = _model(dataset)
    start = model.network.get_weights()
    result = train_side_run(model, *args, jit_compile=False)
    assert set(result) == {"test_accuracy", "test_loss", "train_accuracy", "history"}
    assert json.loads((tmp_path / "side" / "metrics.json").read_text()) == result
    trained = model.network.get_weights()
    assert not np.array_equal(trained[0], start[0])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished side run was trained again")

    monkeypatch.setattr(side_run, "fit_round", no_training)
    # read back: the result, and with keep_weights the trained weights into another model
    other = _model(dataset)
    assert train_side_run(other, *args, keep_weights=True) == result
    for a, b in zip(other.network.get_weights(), trained):
        np.testing.assert_array_equal(a, b)
    # a builder is not called when the result is read back without weights
    assert train_side_run(lambda: pytest.fail("built"), *args) == result
    monkeypatch.undo()
    # a folder of an older version (no weights file): fit_round restores its last checkpoint,
    # trains nothing, and the same result is written with the weights
    (tmp_path / "side" / "weights.weights.h5").unlink()
    assert read_side_run(directory, _model(dataset).network) is None
    again = _model(dataset)
    resumed = train_side_run(again, *args, keep_weights=True, jit_compile=False)
    assert resumed["history"] == result["history"]
    assert resumed["test_accuracy"] == pytest.approx(result["test_accuracy"])
    np.testing.assert_allclose(again.network.get_weights()[0], trained[0])
