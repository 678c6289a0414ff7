"""sparsify(): a user's own Keras model with its Dense/Conv2D/DepthwiseConv2D layers replaced by
masked twins, same configs and weights, so that any search can prune it."""
import keras
from keras.src.models.functional import Functional

from tf_lottery.errors import ConfigError
from tf_lottery.layers.mask_rules import get_rule
from tf_lottery.layers.masked import MASKED_TWINS


def _exclusion_test(exclude):
    if callable(exclude):
        return exclude, set()
    names = {exclude} if isinstance(exclude, str) else set(exclude)
    return (lambda layer: layer.name in names), names


def _copy_weights(original, clone):
    if type(clone) is MASKED_TWINS.get(type(original)):
        # A twin holds the original's variables (same names) plus mask, scores and rule state.
        targets = {variable.name: variable for variable in clone.weights}
        for variable in original.weights:
            targets[variable.name].assign(variable)
    else:
        clone.set_weights(original.get_weights())


def sparsify(model, rule=None, exclude=(), score_initializer="kaiming_uniform"):
    """A copy of `model` whose Dense, Conv2D and DepthwiseConv2D layers are masked twins.

    Only layers of exactly those classes are replaced (a subclass may compute something else);
    every other layer is cloned from its config. All weights are copied and every mask starts at
    ones, so the copy gives the original's outputs until something prunes it. Sequential,
    functional and nested (sub-model) models are supported; layer names are kept, so masks
    ({layer name: array}) name the same layers as the original model.

    Args:
      model: a built Sequential or functional Keras model.
      rule: the mask rule of every new masked layer (a MaskRule, a name, see `get_rule`).
      exclude: layer names to leave unmasked (e.g. the classifier), or a predicate on layers.
      score_initializer: initialiser of the scores, for rules that need scores.
    """
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ConfigError(f"sparsify needs a Sequential or functional model, got "
                          f"{type(model).__name__}; a subclassed model cannot be cloned")
    if not model.built:
        raise ConfigError("sparsify needs a built model: give it an Input or call it once")
    rule = get_rule(rule)
    is_excluded, excluded_names = _exclusion_test(exclude)
    pairs = []  # (original, clone): weights are copied once the clone is built

    def clone_layer(layer):
        if isinstance(layer, keras.Model):  # nested Sequential/functional models are recursed into
            raise ConfigError(f"cannot sparsify the nested subclassed model {layer.name!r}")
        twin = MASKED_TWINS.get(type(layer))
        if twin is not None and not is_excluded(layer):
            clone = twin.from_config({**layer.get_config(), "mask_rule": rule,
                                      "score_initializer": score_initializer})
        else:
            clone = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, clone))
        return clone

    unknown = excluded_names - {layer.name for layer in
                                model._flatten_layers(include_self=False, recursive=True)}
    if unknown:
        raise ConfigError(f"exclude names layers the model does not have: {sorted(unknown)}")
    sparse = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    for original, clone in pairs:
        _copy_weights(original, clone)
    return sparse
