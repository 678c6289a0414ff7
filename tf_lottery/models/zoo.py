"""Model zoo: the networks of the lottery-ticket literature, built from masked layers.

Every builder hands its `mask_rule`, `kernel_initializer` and `score_initializer` to each of its
masked layers; networks with batch normalisation take `affine` (edge-popup uses non-affine batch
norm: no learned scale or shift). A convolution followed directly by batch norm has no bias.
Every network returns logits from a masked Dense layer named OUTPUT_LAYER ('output'), so a search
can exclude the classifier by name, and every masked layer has a fixed name (not one from Keras's
global counters), so masks saved by layer name fit a model built in another process.
"""
import difflib
import inspect

import gin
import keras
import numpy as np
from keras import layers

from tf_lottery import compat
from tf_lottery.errors import ConfigError
from tf_lottery.layers.initializers import (WEIGHT_INITIALIZERS, DepthwiseInitializer,
                                            weight_initializer)
from tf_lottery.layers.mask_rules import get_rule
from tf_lottery.layers.masked import (MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D,
                                      MaskedLayerMixin)

OUTPUT_LAYER = "output"
MNIST_SHAPE = (28, 28, 1)
CIFAR_SHAPE = (32, 32, 3)
IMAGENET_SHAPE = (224, 224, 3)


def _kernel_initializer(spec):
    if isinstance(spec, str) and spec in WEIGHT_INITIALIZERS:
        return weight_initializer(spec)
    try:
        return keras.initializers.get(spec)
    except ValueError:
        raise ConfigError(f"unknown kernel initializer {spec!r}; use one of "
                          f"{sorted(WEIGHT_INITIALIZERS)} or a Keras initializer") from None


def per_layer_initializer(initializer, index):
    """A copy of `initializer` for the index-th layer of a network: a seeded one gets seed +
    index, or every layer of one shape would start from the same values."""
    if not isinstance(initializer, keras.initializers.Initializer):
        return initializer
    config = initializer.get_config()
    if isinstance(config.get("seed"), int):
        config["seed"] += index
    return type(initializer).from_config(config)


class _LayerMaker:
    """Makes one network's layers: masked layers sharing its rule and initialisers, batch norm."""

    def __init__(self, mask_rule, kernel_initializer, score_initializer, affine=True):
        self.mask_rule = get_rule(mask_rule)
        self.kernel_initializer = _kernel_initializer(kernel_initializer)
        self.score_initializer = score_initializer
        self.affine = affine
        self._made = 0

    def _initializer(self):
        self._made += 1
        return self._copy(self.kernel_initializer)

    def _copy(self, initializer):
        return per_layer_initializer(initializer, self._made)

    def _masking(self):
        return {"mask_rule": self.mask_rule,
                "score_initializer": self._copy(self.score_initializer)}

    def dense(self, units, name, activation=None, use_bias=True):
        return MaskedDense(units, activation=activation, name=name, use_bias=use_bias,
                           kernel_initializer=self._initializer(), **self._masking())

    def conv(self, filters, kernel_size, name, strides=1, use_bias=False, activation=None,
             padding="same"):
        return MaskedConv2D(filters, kernel_size, strides=strides, padding=padding,
                            use_bias=use_bias, activation=activation, name=name,
                            kernel_initializer=self._initializer(), **self._masking())

    def depthwise(self, kernel_size, name, strides=1, use_bias=False, activation=None):
        return MaskedDepthwiseConv2D(kernel_size, strides=strides, padding="same",
                                     use_bias=use_bias, activation=activation, name=name,
                                     depthwise_initializer=DepthwiseInitializer(
                                         self._initializer()), **self._masking())

    def batch_norm(self, name):
        # PyTorch's defaults, as in the reference code (its momentum 0.1 is Keras's 0.9).
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=self.affine,
                                         scale=self.affine, name=name)

    def with_bn(self, layer, x, activation="relu"):
        """layer(x), batch-normalised (as `<layer name>_bn`), then the activation if any."""
        x = self.batch_norm(f"{layer.name}_bn")(layer(x))
        if activation is None:
            return x
        return layers.Activation(activation, name=f"{layer.name}_{activation}")(x)

    def classifier(self, inputs, features, num_classes, name):
        outputs = self.dense(num_classes, OUTPUT_LAYER)(features)
        return keras.Model(inputs, outputs, name=name)


def lenet(input_shape=MNIST_SHAPE, num_classes=10, hidden_units=(300, 100), mask_rule=None,
          kernel_initializer="kaiming_normal", score_initializer="kaiming_uniform"):
    """LeNet-300-100 (LeCun et al. 1998; Frankle & Carbin 2019): fully connected ReLU layers."""
    make = _LayerMaker(mask_rule, kernel_initializer, score_initializer)
    inputs = keras.Input(input_shape, name="input")
    x = layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(hidden_units, 1):
        x = make.dense(units, f"fc{index}", activation="relu")(x)
    name = "lenet_" + "_".join(str(units) for units in hidden_units)
    return make.classifier(inputs, x, num_classes, name)


CONV_NET_PLANS = {2: [64, 64, "pool"],
                  4: [64, 64, "pool", 128, 128, "pool"],
                  6: [64, 64, "pool", 128, 128, "pool", 256, 256, "pool"]}


def conv_net(input_shape=CIFAR_SHAPE, num_classes=10, depth=6, dense_units=(256, 256),
             mask_rule=None, kernel_initializer="kaiming_normal",
             score_initializer="kaiming_uniform", plan=None, use_bias=True, batch_norm=False,
             affine=True):
    """Conv-2/4/6 (Frankle & Carbin 2019, Fig. 2): 3x3 ReLU convolutions in pairs, each pair
    followed by 2x2 max pooling, then fully connected 256, 256 and the classifier.

    `plan` (filters and 'pool' entries) replaces the depth's plan for a custom-size conv net;
    use_bias=False gives edge-popup's bias-free layers. batch_norm=True makes each convolution
    a bias-free conv -> BN -> ReLU, each a layer of its own (as in VGG): the form whose ReLUs
    and 3x3 blocks ToST's ghost modules find."""
    if plan is None and depth not in CONV_NET_PLANS:
        raise ConfigError(f"Conv-{depth} is not defined; depth must be one of "
                          f"{sorted(CONV_NET_PLANS)}")
    make = _LayerMaker(mask_rule, kernel_initializer, score_initializer, affine)
    inputs = keras.Input(input_shape, name="input")
    x, convs, pools = inputs, 0, 0
    for spec in plan if plan is not None else CONV_NET_PLANS[depth]:
        if spec == "pool":
            pools += 1
            x = layers.MaxPooling2D(2, name=f"pool{pools}")(x)
        else:
            convs += 1
            if batch_norm:
                x = make.with_bn(make.conv(spec, 3, f"conv{convs}"), x)
            else:
                x = make.conv(spec, 3, f"conv{convs}", use_bias=use_bias, activation="relu")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(dense_units, 1):
        x = make.dense(units, f"fc{index}", activation="relu", use_bias=use_bias)(x)
    return make.classifier(inputs, x, num_classes, f"conv{depth}" if plan is None else "conv")


VGG_PLANS = {
    11: [64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool", 512, 512],
    13: [64, 64, "pool", 128, 128, "pool", 256, 256, "pool", 512, 512, "pool", 512, 512],
    16: [64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512, "pool",
         512, 512, 512],
    19: [64, 64, "pool", 128, 128, "pool", 256, 256, 256, 256, "pool", 512, 512, 512, 512,
         "pool", 512, 512, 512, 512],
}


def vgg(input_shape=CIFAR_SHAPE, num_classes=10, depth=16, mask_rule=None,
        kernel_initializer="kaiming_normal", score_initializer="kaiming_uniform", affine=True):
    """CIFAR VGG (Simonyan & Zisserman 2015 as in Frankle & Carbin 2019 / open_lth): 3x3
    conv-BN-ReLU stages with max pooling, global average pooling, one linear classifier."""
    if depth not in VGG_PLANS:
        raise ConfigError(f"VGG-{depth} is not defined; depth must be one of {sorted(VGG_PLANS)}")
    make = _LayerMaker(mask_rule, kernel_initializer, score_initializer, affine)
    inputs = keras.Input(input_shape, name="input")
    x, convs, pools = inputs, 0, 0
    for spec in VGG_PLANS[depth]:
        if spec == "pool":
            pools += 1
            x = layers.MaxPooling2D(2, name=f"pool{pools}")(x)
        else:
            convs += 1
            x = make.with_bn(make.conv(spec, 3, f"conv{convs}"), x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return make.classifier(inputs, x, num_classes, f"vgg{depth}")


def _shortcut(make, x, filters, strides, name):
    """Identity, or a 1x1 convolution + BN where the shape changes (He et al. 2016, option B)."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    return make.with_bn(make.conv(filters, 1, f"{name}_shortcut", strides=strides), x, None)


def _basic_block(make, x, filters, strides, name):
    """Two 3x3 conv-BN layers around a residual connection (He et al. 2016, Fig. 2 left)."""
    shortcut = _shortcut(make, x, filters, strides, name)
    y = make.with_bn(make.conv(filters, 3, f"{name}_conv1", strides=strides), x)
    y = make.with_bn(make.conv(filters, 3, f"{name}_conv2"), y, None)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _bottleneck_block(make, x, filters, strides, name, width_multiplier=1):
    """1x1, 3x3 (strided, as torchvision's v1.5), 1x1 x4 conv-BN layers around a residual
    connection (He et al. 2016, Fig. 5 right); `width_multiplier` widens the inner two
    (Zagoruyko & Komodakis 2016, Wide ResNet-50-2)."""
    width, out = filters * width_multiplier, filters * 4
    shortcut = _shortcut(make, x, out, strides, name)
    y = make.with_bn(make.conv(width, 1, f"{name}_conv1"), x)
    y = make.with_bn(make.conv(width, 3, f"{name}_conv2", strides=strides), y)
    y = make.with_bn(make.conv(out, 1, f"{name}_conv3"), y, None)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _stages(make, x, stage_filters, blocks_per_stage, block, **block_options):
    for stage, (filters, blocks) in enumerate(zip(stage_filters, blocks_per_stage), 1):
        for index in range(1, blocks + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            x = block(make, x, filters, strides, f"stage{stage}_block{index}", **block_options)
    return x


def cifar_resnet(input_shape=CIFAR_SHAPE, num_classes=10, depth=20, width=16, mask_rule=None,
                 kernel_initializer="kaiming_normal", score_initializer="kaiming_uniform",
                 affine=True):
    """CIFAR ResNet-(6n+2) (He et al. 2016, Sec. 4.2): a 3x3 conv, three stages of n basic
    blocks with width, 2·width, 4·width filters, global average pooling, linear classifier.
    Shortcuts that change shape are 1x1 conv + BN projections, as in open_lth."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110), got {depth}")
    make = _LayerMaker(mask_rule, kernel_initializer, score_initializer, affine)
    inputs = keras.Input(input_shape, name="input")
    x = make.with_bn(make.conv(width, 3, "conv1"), inputs)
    x = _stages(make, x, [width, 2 * width, 4 * width], [(depth - 2) // 6] * 3, _basic_block)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    name = f"resnet{depth}" if width == 16 else f"resnet{depth}_{width}"
    return make.classifier(inputs, x, num_classes, name)


RESNET_PLANS = {18: (_basic_block, [2, 2, 2, 2]), 34: (_basic_block, [3, 4, 6, 3]),
                50: (_bottleneck_block, [3, 4, 6, 3]), 101: (_bottleneck_block, [3, 4, 23, 3]),
                152: (_bottleneck_block, [3, 8, 36, 3])}
STEMS = ("imagenet", "cifar")


def resnet(input_shape=IMAGENET_SHAPE, num_classes=1000, depth=50, stem="imagenet",
           width_multiplier=1, mask_rule=None, kernel_initializer="kaiming_normal",
           score_initializer="kaiming_uniform", affine=True):
    """ResNet-18/34/50/101/152 (He et al. 2016, Table 1; torchvision layout) and Wide ResNets.

    stem='imagenet': 7x7/2 conv + 3x3/2 max pooling; stem='cifar': one 3x3/1 conv and no pooling
    (the CIFAR ResNet-18 of edge-popup and most lottery-ticket work).
    """
    if depth not in RESNET_PLANS:
        raise ConfigError(f"ResNet-{depth} is not defined; depth must be one of "
                          f"{sorted(RESNET_PLANS)} (CIFAR ResNet-20/32/56: cifar_resnet)")
    if stem not in STEMS:
        raise ConfigError(f"stem must be one of {STEMS}, got {stem!r}")
    block, blocks_per_stage = RESNET_PLANS[depth]
    if width_multiplier != 1 and block is _basic_block:
        raise ConfigError(f"width_multiplier needs bottleneck blocks (ResNet-50 and up), "
                          f"not ResNet-{depth}")
    block_options = {"width_multiplier": width_multiplier} if block is _bottleneck_block else {}
    make = _LayerMaker(mask_rule, kernel_initializer, score_initializer, affine)
    inputs = keras.Input(input_shape, name="input")
    if stem == "imagenet":
        x = make.with_bn(make.conv(64, 7, "conv1", strides=2), inputs)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    else:
        x = make.with_bn(make.conv(64, 3, "conv1"), inputs)
    x = _stages(make, x, [64, 128, 256, 512], blocks_per_stage, block, **block_options)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    name = f"resnet{depth}" if width_multiplier == 1 else f"wide_resnet{depth}_{width_multiplier}"
    return make.classifier(inputs, x, num_classes, name if stem == "imagenet" else name + "_cifar")


# Filters (and stride 2 where given) of the separable blocks of the CIFAR MobileNet.
MOBILENET_V1_PLAN = [64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512,
                     (1024, 2), 1024]


def mobilenet_v1(input_shape=CIFAR_SHAPE, num_classes=10, mask_rule=None,
                 kernel_initializer="kaiming_normal", score_initializer="kaiming_uniform",
                 affine=True):
    """MobileNetV1 for CIFAR (Howard et al. 2017 with a stride-1 3x3 stem, as the common CIFAR
    port): 13 blocks of 3x3 depthwise conv-BN-ReLU then 1x1 conv-BN-ReLU."""
    make = _LayerMaker(mask_rule, kernel_initializer, score_initializer, affine)
    inputs = keras.Input(input_shape, name="input")
    x = make.with_bn(make.conv(32, 3, "conv1"), inputs)
    for index, spec in enumerate(MOBILENET_V1_PLAN, 1):
        filters, strides = spec if isinstance(spec, tuple) else (spec, 1)
        x = make.with_bn(make.depthwise(3, f"block{index}_depthwise", strides=strides), x)
        x = make.with_bn(make.conv(filters, 1, f"block{index}_pointwise"), x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return make.classifier(inputs, x, num_classes, "mobilenet_v1")


def convmixer(input_shape=CIFAR_SHAPE, num_classes=10, dim=256, depth=8, kernel_size=5,
              patch_size=2, mask_rule=None, kernel_initializer="kaiming_normal",
              score_initializer="kaiming_uniform", affine=True):
    """ConvMixer-dim/depth (Trockman & Kolter 2022, Fig. 2): a patch embedding conv, then depth
    blocks of residual depthwise conv and pointwise conv, each conv -> GELU -> BN (so the convs
    keep their biases). Defaults: the CIFAR-10 ConvMixer-256/8 (kernel 5, patch 2)."""
    make = _LayerMaker(mask_rule, kernel_initializer, score_initializer, affine)
    inputs = keras.Input(input_shape, name="input")
    x = make.conv(dim, patch_size, "patch_embedding", strides=patch_size, use_bias=True,
                  activation="gelu", padding="valid")(inputs)
    x = make.batch_norm("patch_embedding_bn")(x)
    for index in range(1, depth + 1):
        y = make.depthwise(kernel_size, f"mixer{index}_depthwise", use_bias=True,
                           activation="gelu")(x)
        y = make.batch_norm(f"mixer{index}_depthwise_bn")(y)
        x = layers.Add(name=f"mixer{index}_residual")([y, x])
        x = make.conv(dim, 1, f"mixer{index}_pointwise", use_bias=True, activation="gelu")(x)
        x = make.batch_norm(f"mixer{index}_pointwise_bn")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return make.classifier(inputs, x, num_classes, f"convmixer_{dim}_{depth}")


# name -> (builder, the arguments the name fixes)
MODELS = {
    "lenet_300_100": (lenet, {"hidden_units": (300, 100)}),
    **{f"conv{depth}": (conv_net, {"depth": depth}) for depth in sorted(CONV_NET_PLANS)},
    **{f"vgg{depth}": (vgg, {"depth": depth}) for depth in sorted(VGG_PLANS)},
    **{f"resnet{depth}": (cifar_resnet, {"depth": depth}) for depth in (20, 32, 56)},
    **{f"resnet{depth}": (resnet, {"depth": depth}) for depth in (18, 34, 50, 101)},
    "wide_resnet50_2": (resnet, {"depth": 50, "width_multiplier": 2}),
    "mobilenet_v1": (mobilenet_v1, {}),
    "convmixer_256_8": (convmixer, {"dim": 256, "depth": 8}),
}


def _key(name):
    """'ResNet-20', 'resnet_20' and 'resnet20' name the same model."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


_NAMES_BY_KEY = {_key(name): name for name in MODELS}


@gin.configurable
def build_model(name, input_shape, num_classes, mask_rule=None,
                kernel_initializer="kaiming_normal", score_initializer="kaiming_uniform",
                **options):
    """The zoo network `name` (a key of MODELS; case, '-' and '_' do not matter).

    Args:
      name: the model, e.g. 'lenet_300_100', 'conv4', 'resnet20', 'resnet18', 'vgg16'.
      input_shape: the shape of one example, e.g. data.info.input_shape.
      num_classes: the number of output logits.
      mask_rule: the rule of every masked layer (default FixedMask; see layers.get_rule).
      kernel_initializer: the kernels' initialisation: a name of WEIGHT_INITIALIZERS or a Keras
        initializer (a seeded one gets seed + layer index per layer).
      score_initializer: the scores' initialisation, for rules that train scores.
      **options: the builder's own arguments, e.g. stem='cifar' for resnet18, affine=False
        for non-affine batch norm; an argument the builder does not take is a ConfigError.
    """
    model_name = _NAMES_BY_KEY.get(_key(name))
    if model_name is None:
        close = difflib.get_close_matches(_key(name), list(_NAMES_BY_KEY), n=1, cutoff=0.6)
        hint = f" Did you mean {_NAMES_BY_KEY[close[0]]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}.{hint} Known models: {', '.join(MODELS)}")
    builder, fixed = MODELS[model_name]
    accepted = set(inspect.signature(builder).parameters) - set(fixed)
    if "affine" not in accepted:  # no batch norm in this model: nothing to make (non-)affine
        options.pop("affine", None)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"model {model_name!r} does not take {unknown}; its options are "
                          f"{sorted(accepted - {'input_shape', 'num_classes'})}")
    return builder(input_shape=tuple(input_shape), num_classes=int(num_classes),
                   mask_rule=mask_rule, kernel_initializer=kernel_initializer,
                   score_initializer=score_initializer, **fixed, **options)


def count_params(model):
    """Parameters of the architecture itself, as papers count them: kernels, biases and batch
    norm scale and shift; not masks, scores or mask-rule state, nor batch-norm moving statistics."""
    excluded = set()
    for layer in compat.sublayers(model):
        if isinstance(layer, MaskedLayerMixin):
            own = {id(layer.raw_kernel), id(layer.bias)}
            excluded.update(id(v) for v in layer.weights if id(v) not in own)
        elif isinstance(layer, layers.BatchNormalization):
            excluded.update((id(layer.moving_mean), id(layer.moving_variance)))
    return sum(int(np.prod(v.shape)) for v in model.weights if id(v) not in excluded)
