"""Keras' LoRA and quantisation are refused with one ConfigError both ways: on masked layers,
and by sparsify / prune_low_magnitude / to_twin for layers that already use them."""
import keras
import numpy as np
import pytest

from tf_lottery.errors import ConfigError
from tf_lottery.export import to_plain_model
from tf_lottery.layers import MASKED_TWINS, MaskedDense, MaskedEinsumDense, MaskedEmbedding
from tf_lottery.layers.masked import to_twin
from tf_lottery.models import sparsify
from tf_lottery.sparsity import prune_low_magnitude


def _model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, name="d")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))


def _masked_layers():
    dense = MaskedDense(3, name="dense")
    dense.build((None, 4))
    einsum = MaskedEinsumDense("ab,bc->ac", 3, name="einsum")
    einsum.build((None, 4))
    embedding = MaskedEmbedding(10, 3, name="embedding")
    embedding.build((None, 4))
    conv = MASKED_TWINS[keras.layers.Conv2D](2, 3, name="conv")
    conv.build((None, 5, 5, 1))
    return [dense, einsum, embedding, conv]


@pytest.mark.parametrize("index", range(4), ids=["dense", "einsum", "embedding", "conv"])
def test_masked_layers_refuse_enable_lora_and_quantize(index):
    layer = _masked_layers()[index]
    with pytest.raises(ConfigError, match=f"'{layer.name}'.*is masked.*LoRA.*to_plain_model"):
        layer.enable_lora(2)
    with pytest.raises(ConfigError, match=f"'{layer.name}'.*is masked.*quantisation"):
        layer.quantize("int8")
    assert not getattr(layer, "lora_enabled", False)
    assert not layer.quantization_mode


def test_model_quantize_refuses_a_masked_model_instead_of_skipping_its_layers():
    model = sparsify(_model())
    with pytest.raises(ConfigError, match="'d'.*quantisation"):
        model.quantize("int8")


def test_masked_layers_refuse_lora_rank_and_quantised_dtype_policies():
    with pytest.raises(ConfigError, match="uses LoRA"):
        MaskedDense(3, lora_rank=2)
    with pytest.raises(ConfigError, match=r"quantised \(int8\)"):
        MaskedDense(3, dtype="int8_from_float32")


def _with_lora(model):
    model.get_layer("d").enable_lora(2)
    return model


def _quantised(model):
    model.quantize("int8")
    return model


@pytest.mark.parametrize("prepare, words", [(_with_lora, "uses LoRA"),
                                            (_quantised, r"is quantised \(int8\)")],
                         ids=["lora", "int8"])
@pytest.mark.parametrize("masking", [
    lambda m: sparsify(m),
    lambda m: sparsify(m, in_place=True),
    lambda m: prune_low_magnitude(m),
], ids=["sparsify", "sparsify_in_place", "prune_low_magnitude"])
def test_sparsify_refuses_layers_using_lora_or_quantisation(prepare, words, masking):
    model = prepare(_model())
    with pytest.raises(ConfigError, match=f"'d'.*{words}.*exclude="):
        masking(model)
    # nothing changed (in place included)
    assert type(model.get_layer("d")) is keras.layers.Dense
    assert type(model.get_layer("head")) is keras.layers.Dense


def test_to_twin_refuses_a_layer_with_lora_and_leaves_it_as_it_was():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    layer.enable_lora(2)
    with pytest.raises(ConfigError, match="uses LoRA"):
        to_twin(layer, MaskedDense)
    assert type(layer) is keras.layers.Dense and layer.lora_enabled


def test_sparsify_masks_the_rest_when_the_lora_layer_is_excluded():
    model = _with_lora(_model())
    sparse = sparsify(model, exclude=["d"])
    assert type(sparse.get_layer("d")) is keras.layers.Dense and sparse.get_layer("d").lora_enabled
    assert type(sparse.get_layer("head")) is MaskedDense


def test_the_plain_ticket_takes_lora_and_quantisation():
    """What the errors advise: fold the masks into a plain copy, then use LoRA or quantise."""
    model = sparsify(_model())
    layer = model.get_layer("d")
    mask = np.ones(layer.mask.shape, "float32")
    mask[0] = 0.0
    layer.mask.assign(mask)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    plain = to_plain_model(model)
    np.testing.assert_allclose(plain(x), model(x), rtol=1e-5, atol=1e-6)
    plain.get_layer("d").enable_lora(2)  # B starts at zero: same outputs
    np.testing.assert_allclose(plain(x), model(x), rtol=1e-5, atol=1e-6)
    quantised = to_plain_model(model)
    quantised.quantize("int8")
    assert quantised.get_layer("d").quantization_mode == "int8"
    np.testing.assert_allclose(quantised(x), model(x), atol=0.1)
