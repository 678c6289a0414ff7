"""Channel pruning in IMP rounds and in the gradual engine (structure='channels'), then thinned."""
import os

import keras
import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import tiny_net
from tests.search.mlp import small_dataset
from tf_lottery import masks as masks_lib
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.export.thin import thin
from tf_lottery.search import GradualMagnitudeSearch
from tf_lottery.search.imp import IMPSearch
from tf_lottery.training.recipe import TrainingRecipe

RECIPE = dict(optimizer="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0, epochs=1,
              lr_schedule="constant", jit_compile=False)


def _experiment(tmp_path, search):
    return Experiment(workdir=str(tmp_path), search=search, model_fn=tiny_net,
                      dataset=small_dataset(), verbose=0, tensorboard=False)


def _run(tmp_path, search):
    return _experiment(tmp_path, search).run()


def _kept(mask, axis=-1):
    """Channels (along `axis`) a mask keeps any weight of."""
    mask = np.moveaxis(mask, axis, -1)
    return mask.reshape(-1, mask.shape[-1]).any(axis=0)


@needs_fashion_mnist
def test_network_slimming_rounds_prune_channels_by_gamma_and_thin_exactly(tmp_path):
    # tiny_net: conv (8 channels) -> bn -> relu -> pool -> flatten -> fc (16) -> output; fc has
    # no BatchNorm, so 'bn_gamma' prunes conv's channels only (its γ ranked globally)
    search = IMPSearch(prune_fraction=0.5, num_rounds=2, structure="channels",
                       channel_criterion="bn_gamma", scope="global", rewind_to="finetune",
                       slimming_strength=1e-3, recipe=TrainingRecipe(**RECIPE))
    gammas, begin = [], search.begin_round

    def begin_round(model, index, experiment):  # |γ| as round 1 prunes (finetune: θ_T of 0)
        gammas.append(np.abs(model.network.get_layer("bn").gamma.numpy()))
        begin(model, index, experiment)

    search.begin_round = begin_round
    experiment = _experiment(tmp_path, search)
    results = experiment.run()
    network = search.model.network
    assert "slimming_penalty" in search.model.regularizers
    assert [r["structure"] for r in results] == ["channels"] * 2
    conv, fc = (network.get_layer(n).mask.numpy() for n in ("conv", "fc"))
    kept = _kept(conv)
    assert kept.sum() == 4  # of all channels of the prunable groups (conv and fc): 20 / 24
    assert results[1]["channel_fraction"] == pytest.approx(20 / 24)
    assert gammas[1][kept].min() >= gammas[1][~kept].max()
    # whole channels: a kept filter keeps every weight; fc reads only kept conv channels
    assert np.all(conv[..., kept] == 1) and np.all(conv[..., ~kept] == 0)
    rows = fc.reshape(-1, 8, fc.shape[-1]).any(axis=(0, 2))  # flatten: row p*8 + c
    np.testing.assert_array_equal(rows, kept)
    assert results[1]["macs_fraction"] < 0.6
    thinned = thin(search.model)
    x = next(iter(small_dataset().test))[0][:8]
    np.testing.assert_allclose(thinned(x, training=False), network(x, training=False),
                               atol=1e-5)
    assert thinned.get_layer("conv").filters == 4
    # the export ships the thinned network beside the masked one, and it is smaller
    exported = experiment.export()
    sizes = exported["sizes"]
    assert os.path.isfile(os.path.join(exported["thin_saved_model"], "saved_model.pb"))
    assert sizes["thin_saved_model"]["bytes"] < sizes["saved_model"]["bytes"]


@needs_fashion_mnist
def test_gradual_channel_pruning_reaches_its_channel_fraction_in_one_round(tmp_path):
    search = GradualMagnitudeSearch(final_sparsity=0.75, begin_step=1, end_step=3, frequency=1,
                                    structure="channels", channel_criterion="l2",
                                    recipe=TrainingRecipe(**RECIPE))
    (metrics,) = _run(tmp_path, search)
    network = search.model.network
    assert _kept(network.get_layer("conv").mask.numpy()).sum() == 2  # round(8 * 0.25)
    assert _kept(network.get_layer("fc").mask.numpy()).sum() == 4  # round(16 * 0.25)
    assert metrics["channel_fraction"] == pytest.approx(0.25)
    assert metrics["structure"] == "channels" and metrics["channel_criterion"] == "l2"
    assert masks_lib.sparsity(masks_lib.get_masks(network)) > 0.7


def test_bad_channel_settings_are_one_config_error():
    with pytest.raises(ConfigError, match="structure"):
        IMPSearch(prune_fraction=0.5, num_rounds=2, structure="filters")
    with pytest.raises(ConfigError, match="num_rounds"):
        IMPSearch(prune_fraction=0.5, target_sparsity=0.9, structure="channels")
    with pytest.raises(ConfigError, match="need structure='channels'"):
        IMPSearch(prune_fraction=0.5, num_rounds=2, channel_criterion="bn_gamma")
    with pytest.raises(ConfigError, match="random_prune"):
        IMPSearch(prune_fraction=0.5, num_rounds=2, structure="channels",
                  evaluate_controls=True, control="random_prune")
    with pytest.raises(ConfigError, match="'uniform' or 'global'"):
        GradualMagnitudeSearch(structure="channels", distribution="erk")
    with pytest.raises(ConfigError, match="criterion"):
        GradualMagnitudeSearch(structure="channels", channel_criterion="gamma")
    assert keras  # noqa
