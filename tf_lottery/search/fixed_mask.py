"""The build step of the weak-ticket searches (IMP, pruning at initialisation): a network whose
masked layers apply a fixed 0/1 mask (FixedMask: kernel θ ⊙ m) and start from a seeded
initialisation."""
import numpy as np

from tf_lottery import masks as masks_lib
from tf_lottery.layers.initializers import weight_initializer
from tf_lottery.layers.mask_rules import FixedMask
from tf_lottery.training.sparse_model import SparseModel


def build_network(experiment, weight_init, seed, model_kwargs=None):
    """experiment's network with FixedMask layers, kernels from `weight_init` seeded by `seed`."""
    return experiment.build_network(mask_rule=FixedMask(),
                                    kernel_initializer=weight_initializer(weight_init, seed=seed),
                                    **dict(model_kwargs or {}))


def build_fixed_mask_model(experiment, weight_init, exclude=(), model_kwargs=None):
    """(SparseModel, the layers the search prunes): every masked layer but those `exclude`
    names (masks.excluded_names: names and patterns; a name that is not a masked layer is a
    ConfigError)."""
    network = build_network(experiment, weight_init, experiment.seed, model_kwargs)
    # the names checked (masks.searched_layers) before anything else is built
    layers = masks_lib.searched_layers(network, exclude)
    with experiment.strategy.scope():
        model = SparseModel(network)
    return model, layers


def layer_masks(layers):
    """{name: the 0/1 mask} of the given masked layers (a search's ticket)."""
    return {layer.name: np.asarray(layer.binary_mask(), np.float32) for layer in layers}
