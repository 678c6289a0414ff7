"""Model zoo: parameter counts against published figures, every kernel masked with the given rule
and initialiser, batch-norm options, predictable names, build_model's registry and errors.

The big networks are built once for the module and never called (building is what costs)."""
import math

import gin
import keras
import numpy as np
import pytest

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers import (MASKED_TWINS, DepthwiseInitializer, KaimingNormal,
                               MaskedDepthwiseConv2D, TopKScores, masked_layers)
from tf_lottery.masks import get_masks
from tf_lottery.models import (MODELS, OUTPUT_LAYER, build_model, convmixer, count_params,
                               lenet)

KERNEL_VALUE = 0.125  # a constant kernel initialiser makes building fast and easy to check

IMAGENET = dict(input_shape=(224, 224, 3), num_classes=1000)
# id, model name, build_model options, published parameter count, relative tolerance, source
PUBLISHED = [
    ("lenet_300_100", "lenet_300_100", dict(input_shape=(28, 28, 1)), 266_610, 0.0,
     "LeNet-300-100"),
    ("conv2", "conv2", {}, 4.3e6, 0.02, "Frankle & Carbin 2019, Fig. 2"),
    ("conv4", "conv4", {}, 2.4e6, 0.02, "Frankle & Carbin 2019, Fig. 2"),
    ("conv6", "conv6", {}, 2.26e6, 0.02, "Conv-6 with 256-256 FC layers"),
    ("vgg16", "vgg16", {}, 14.7e6, 0.02, "CIFAR VGG-16"),
    ("vgg19", "vgg19", {}, 20.0e6, 0.02, "Frankle & Carbin 2019, Fig. 2"),
    ("resnet20", "resnet20", {}, 0.27e6, 0.02, "He et al. 2016, Table 6"),
    ("resnet56", "resnet56", {}, 0.85e6, 0.02, "He et al. 2016, Table 6"),
    ("resnet18_cifar", "resnet18", dict(stem="cifar"), 11.2e6, 0.02, "CIFAR ResNet-18"),
    ("resnet18_imagenet", "resnet18", IMAGENET, 11.7e6, 0.02, "torchvision ResNet-18"),
    ("resnet50_imagenet", "resnet50", IMAGENET, 25.6e6, 0.02, "He et al. 2016; torchvision"),
    ("mobilenet_v1_1000", "mobilenet_v1", dict(num_classes=1000), 4.2e6, 0.02,
     "Howard et al. 2017, Table 8"),
]


def _build(name, rule=None, **options):
    options = {"input_shape": (32, 32, 3), "num_classes": 10, **options}
    return build_model(name, mask_rule=rule or TopKScores(0.3), score_initializer="zeros",
                       kernel_initializer=keras.initializers.Constant(KERNEL_VALUE), **options)


@pytest.fixture(scope="module")
def zoo():
    """Every network of PUBLISHED plus ConvMixer and a non-affine ResNet-20, built once."""
    models = {model_id: _build(name, **options) for model_id, name, options, *_ in PUBLISHED}
    models["convmixer_256_8"] = _build("convmixer_256_8")
    models["resnet20-nonaffine"] = _build("resnet20", affine=False)
    return models


@pytest.mark.parametrize("model_id,published,tolerance,source",
                         [(row[0], *row[3:]) for row in PUBLISHED],
                         ids=[row[0] for row in PUBLISHED])
def test_parameter_counts_match_published_figures(zoo, model_id, published, tolerance, source):
    model = zoo[model_id]
    params = count_params(model)
    assert abs(params - published) <= tolerance * published, (model_id, params, source)


def _size(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_count_params_leaves_out_masks_scores_rule_state_and_moving_statistics(zoo):
    model = zoo["resnet20"]
    masked = masked_layers(model)
    mask_rule_state = _size(v for layer in masked for v in (
        layer.mask, layer.scores, layer.keep_fraction, layer.ever_selected))
    moving = _size(v for v in model.weights if "moving_" in v.path)
    assert mask_rule_state > 3 * count_params(model) / 2  # what a naive count would add
    assert count_params(model) == _size(model.weights) - mask_rule_state - moving


def test_convmixer_count_follows_its_definition(zoo):
    dim, depth, kernel, patch, classes = 256, 8, 5, 2, 10
    patch_embedding = patch * patch * 3 * dim + dim
    mixer = (kernel * kernel * dim + dim) + (dim * dim + dim)
    batch_norm = 2 * dim * (2 * depth + 1)
    expected = patch_embedding + depth * mixer + batch_norm + dim * classes + classes
    assert count_params(zoo["convmixer_256_8"]) == expected


def test_wide_resnet50_2_count():
    model = _build("wide_resnet50_2", rule="fixed", **IMAGENET)
    assert abs(count_params(model) - 68.9e6) <= 0.02 * 68.9e6  # Zagoruyko & Komodakis; torchvision


def test_every_kernel_is_masked_with_the_given_rule_and_initializer(zoo):
    for model_id, model in zoo.items():
        layers = compat.sublayers(model)
        assert not [layer.name for layer in layers if type(layer) in MASKED_TWINS], model_id
        masked = masked_layers(model)
        assert masked, model_id
        for layer in masked:
            assert isinstance(layer.mask_rule, TopKScores), (model_id, layer.name)
            assert float(layer.keep_fraction.numpy()) == pytest.approx(0.3)
            assert np.all(layer.raw_kernel.numpy() == KERNEL_VALUE), (model_id, layer.name)
            assert np.all(layer.scores.numpy() == 0), (model_id, layer.name)
            if isinstance(layer, MaskedDepthwiseConv2D):
                assert isinstance(layer.depthwise_initializer, DepthwiseInitializer)


def test_classifier_is_a_masked_dense_layer_named_output(zoo):
    for model_id, model in zoo.items():
        classifier = model.get_layer(OUTPUT_LAYER)
        assert model.layers[-1] is classifier
        assert classifier in masked_layers(model)
        assert model.output_shape == (None, classifier.units), model_id
        assert classifier.activation is keras.activations.linear  # logits


def _producer(layer):
    return layer.input._keras_history.operation


def test_convolutions_followed_by_batch_norm_have_no_bias(zoo):
    checked = 0
    for model_id in ("vgg16", "resnet20", "resnet50_imagenet", "mobilenet_v1_1000",
                     "convmixer_256_8"):
        model = zoo[model_id]
        for bn in model.layers:
            if isinstance(bn, keras.layers.BatchNormalization):
                conv = _producer(bn)
                if conv.activation is keras.activations.linear:
                    assert not conv.use_bias, (model_id, conv.name)
                    checked += 1
                else:  # ConvMixer: conv -> GELU -> BN, the bias is not redundant
                    assert conv.use_bias, (model_id, conv.name)
    assert checked > 100


def test_affine_false_gives_batch_norm_without_scale_and_shift(zoo):
    affine, plain = zoo["resnet20"], zoo["resnet20-nonaffine"]
    norms = [layer for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(not bn.center and not bn.scale for bn in norms)
    assert all(bn.gamma is None and bn.beta is None for bn in norms)
    channels = sum(bn.moving_mean.shape[0] for bn in norms)
    assert count_params(affine) - count_params(plain) == 2 * channels
    assert [layer.name for layer in masked_layers(affine)] == [
        layer.name for layer in masked_layers(plain)]


def test_conv_net_with_batch_norm_has_conv_bn_relu_layers_of_their_own():
    options = dict(plan=[8, 8, "pool", 16], dense_units=[32])
    fused = build_model("conv4", (28, 28, 1), 10, **options)
    split = build_model("conv4", (28, 28, 1), 10, batch_norm=True, **options)
    for index in range(1, 4):
        conv = split.get_layer(f"conv{index}")
        assert conv.activation is keras.activations.linear and not conv.use_bias
        bn = split.get_layer(f"conv{index}_bn")
        assert _producer(bn) is conv
        relu = split.get_layer(f"conv{index}_relu")
        assert _producer(relu) is bn and relu.get_config()["activation"] == "relu"
        assert fused.get_layer(f"conv{index}").activation is keras.activations.relu
    # same kernels; the conv biases are replaced by batch norm's scale and shift
    assert [tuple(l.raw_kernel.shape) for l in masked_layers(split)] == [
        tuple(l.raw_kernel.shape) for l in masked_layers(fused)]
    assert count_params(split) - count_params(fused) == (8 + 8 + 16) * (2 - 1)


def test_resnet_stems():
    cifar = build_model("resnet18", (32, 32, 3), 10, stem="cifar")
    imagenet = build_model("resnet18", (64, 64, 3), 10, stem="imagenet")
    assert tuple(cifar.get_layer("conv1").raw_kernel.shape) == (3, 3, 3, 64)
    assert cifar.get_layer("conv1").strides == (1, 1)
    assert tuple(imagenet.get_layer("conv1").raw_kernel.shape) == (7, 7, 3, 64)
    assert imagenet.get_layer("conv1").strides == (2, 2)
    assert "pool1" in [layer.name for layer in imagenet.layers]
    assert "pool1" not in [layer.name for layer in cifar.layers]
    # Spatial sizes: CIFAR keeps 32x32 into the first stage, ImageNet divides by 4.
    assert cifar.get_layer("stage1_block1_out").output.shape[1:3] == (32, 32)
    assert imagenet.get_layer("stage1_block1_out").output.shape[1:3] == (16, 16)
    assert cifar.get_layer("stage4_block2_out").output.shape[1:3] == (4, 4)


def test_layer_names_do_not_depend_on_what_was_built_before():
    first = set(get_masks(lenet()))
    build_model("lenet_300_100", (28, 28, 1), 10)
    second = set(get_masks(lenet()))
    assert first == second == {"fc1", "fc2", OUTPUT_LAYER}


def test_default_kernel_initializer_is_kaiming_normal_with_depthwise_fan_in():
    model = lenet(hidden_units=(300, 100))
    kernel = model.get_layer("fc1").raw_kernel.numpy()
    assert kernel.std() == pytest.approx(math.sqrt(2 / 784), rel=0.03)
    # A depthwise 3x3 kernel: each output sees 9 inputs, whatever the channel count.
    depthwise = DepthwiseInitializer(KaimingNormal())((3, 3, 512, 2))
    assert tuple(depthwise.shape) == (3, 3, 512, 2)
    assert float(np.std(depthwise)) == pytest.approx(math.sqrt(2 / 9), rel=0.03)


def test_seeded_initializer_is_reproducible_and_differs_between_layers():
    def kernels():
        model = lenet(hidden_units=(40, 40, 40), kernel_initializer=KaimingNormal(seed=3))
        return [model.get_layer(name).raw_kernel.numpy() for name in ("fc2", "fc3")]

    (a2, a3), (b2, b3) = kernels(), kernels()
    np.testing.assert_array_equal(a2, b2)
    np.testing.assert_array_equal(a3, b3)
    assert not np.array_equal(a2, a3)  # same shape, same seed given, yet different weights


def test_build_model_accepts_spellings_and_suggests_the_closest_name():
    assert build_model("LeNet-300-100", (28, 28, 1), 10).name == "lenet_300_100"
    with pytest.raises(ConfigError, match="Did you mean 'resnet20'"):
        build_model("resnt20", (32, 32, 3), 10)
    with pytest.raises(ConfigError, match="Did you mean 'wide_resnet50_2'"):
        build_model("wideresnet50", (32, 32, 3), 10)
    with pytest.raises(ConfigError, match="unknown model 'alexnet'"):
        build_model("alexnet", (32, 32, 3), 10)


def test_build_model_rejects_options_the_builder_does_not_take():
    with pytest.raises(ConfigError, match="stem"):
        build_model("lenet_300_100", (28, 28, 1), 10, stem="cifar")
    with pytest.raises(ConfigError, match="depth"):
        build_model("resnet20", (32, 32, 3), 10, depth=56)  # fixed by the name
    with pytest.raises(ConfigError, match="stem"):
        build_model("resnet18", (32, 32, 3), 10, stem="mnist")
    with pytest.raises(ConfigError, match="kernel initializer"):
        build_model("conv2", (32, 32, 3), 10, kernel_initializer="kaiming_gaussian")
    assert set(MODELS) >= {"lenet_300_100", "conv2", "conv4", "conv6", "vgg16", "resnet20",
                           "resnet32", "resnet56", "resnet18", "resnet34", "resnet50",
                           "wide_resnet50_2", "mobilenet_v1", "convmixer_256_8"}


def test_build_model_is_gin_configurable():
    gin.clear_config()
    try:
        gin.parse_config(["build_model.name = 'Conv-2'",
                          "build_model.dense_units = (16,)",
                          "build_model.mask_rule = 'topk'"])
        model = build_model(input_shape=(8, 8, 3), num_classes=4)
    finally:
        gin.clear_config()
    assert model.name == "conv2"
    assert [layer.name for layer in masked_layers(model)] == ["conv1", "conv2", "fc1", "output"]
    assert all(isinstance(layer.mask_rule, TopKScores) for layer in masked_layers(model))
    # conv 3->64, conv 64->64, pool to 4x4, fc 1024->16, classifier 16->4
    expected = (27 * 64 + 64) + (576 * 64 + 64) + (4 * 4 * 64 * 16 + 16) + (16 * 4 + 4)
    assert count_params(model) == expected


def test_a_zoo_model_survives_keras_save_and_load(tmp_path):
    model = convmixer(input_shape=(8, 8, 3), num_classes=3, dim=8, depth=1, affine=False,
                      mask_rule=TopKScores(0.5))
    path = str(tmp_path / "convmixer.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("mixer1_depthwise").depthwise_initializer,
                      DepthwiseInitializer)
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
