"""masks.excluded_names / prunable_layers: the one reading of an `exclude` list."""
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.masks import excluded_names, prunable_layers
from tf_lottery.models import build_model

PAPER_DENSE = ["*_shortcut", "output"]  # CS paper, Sec. 4.2: 1x1 skip convolutions, output


def test_shortcut_pattern_and_output_are_the_1x1_convolutions_and_the_classifier():
    network = build_model("resnet20", (32, 32, 3), 10, width=4)
    one_by_one = {layer.name for layer in prunable_layers(network)
                  if len(layer.mask.shape) == 4 and tuple(layer.mask.shape[:2]) == (1, 1)}
    assert one_by_one == {"stage2_block1_shortcut", "stage3_block1_shortcut"}  # "the two"
    assert excluded_names(network, PAPER_DENSE) == one_by_one | {"output"}
    kept = [layer.name for layer in prunable_layers(network, PAPER_DENSE)]
    assert len(kept) == 19 and not {"output", *one_by_one} & set(kept)  # the 3x3 convolutions
    # the same list on a network without shortcuts: a pattern may match nothing
    lenet = build_model("lenet_300_100", (28, 28, 1), 10)
    assert excluded_names(lenet, PAPER_DENSE) == {"output"}
    assert [layer.name for layer in prunable_layers(lenet, PAPER_DENSE)] == ["fc1", "fc2"]


def test_names_must_be_masked_layers_and_predicates_still_work():
    lenet = build_model("lenet_300_100", (28, 28, 1), 10)
    with pytest.raises(ConfigError, match=r"no masked layer of the model: \['fc9'\]"):
        excluded_names(lenet, ["output", "fc9"])
    with pytest.raises(ConfigError, match=r"no masked layer.*\['flatten'\]"):
        prunable_layers(lenet, ["flatten"])  # a layer, but not a masked one
    with pytest.raises(ConfigError, match="a list"):
        excluded_names(lenet, "output")
    assert excluded_names(lenet, ["fc?"]) == {"fc1", "fc2"}
    assert [layer.name for layer in prunable_layers(lenet, lambda layer: layer.name != "fc2")] \
        == ["fc2"]
