"""Model zoo built from masked layers, and sparsify() for a user's own Keras model."""
from tf_lottery.models.keras_model import KerasModelFn
from tf_lottery.models.sparsify import sparsify
from tf_lottery.models.zoo import (MODELS, OUTPUT_LAYER, build_model, cifar_resnet, conv_net,
                                   convmixer, count_params, lenet, mobilenet_v1, resnet, vgg)

__all__ = ["KerasModelFn", "sparsify", "MODELS", "OUTPUT_LAYER", "build_model", "cifar_resnet",
           "conv_net", "convmixer", "count_params", "lenet", "mobilenet_v1", "resnet", "vgg"]
