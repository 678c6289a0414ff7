import json
import os

import keras
import numpy as np
import pytest

import tf_lottery
from tf_lottery.errors import ConfigError
from tf_lottery.export import load_ticket, read_ticket_header, read_ticket_masks, save_ticket
from tf_lottery.export.ticket_file import FORMAT_VERSION, ticket_variables
from tf_lottery.layers import FixedMask, TopKScores, masked_layers
from tf_lottery.masks import get_masks

from tests.export import nets


def _kernels(network):
    return {layer.name: layer.raw_kernel.numpy() for layer in masked_layers(network)}


def test_weak_ticket_round_trip_gives_identical_outputs(tmp_path):
    network = nets.conv_net(rule=TopKScores(0.5))
    nets.random_masks(network, density=0.7)
    nets.train(network)
    path = save_ticket(network, str(tmp_path / "ticket"),
                       metadata={"test_accuracy": np.float32(0.75)})
    assert path.endswith("ticket.npz")

    loaded = load_ticket(path)
    assert all(isinstance(layer.mask_rule, FixedMask) for layer in masked_layers(loaded))
    assert all(layer.scores is None for layer in masked_layers(loaded))
    x, _ = nets.batch()
    np.testing.assert_array_equal(loaded(x), network(x))
    ticket = get_masks(network)
    for name, mask in get_masks(loaded).items():
        np.testing.assert_array_equal(mask, ticket[name])

    header = read_ticket_header(path)
    assert header["format_version"] == FORMAT_VERSION
    assert header["tf_lottery_version"] == tf_lottery.__version__
    assert header["kind"] == "weak" and all(w["stored"] for w in header["weights"])
    remaining = sum(int(m.sum()) for m in ticket.values())
    total = sum(m.size for m in ticket.values())
    assert header["metadata"]["test_accuracy"] == pytest.approx(0.75)
    assert header["metadata"]["remaining_weights"] == remaining
    assert header["metadata"]["sparsity"] == pytest.approx(1 - remaining / total)


def test_masks_are_bit_packed(tmp_path):
    network = nets.conv_net()
    nets.random_masks(network, density=0.3)
    path = save_ticket(network, str(tmp_path / "t.npz"))
    with np.load(path) as data:
        for index, layer in enumerate(masked_layers(network)):
            packed = data[f"mask_{index}"]
            assert packed.dtype == np.uint8 and packed.size == -(-layer.mask.numpy().size // 8)
    masks = read_ticket_masks(path)
    for layer in masked_layers(network):
        np.testing.assert_array_equal(masks[layer.name], layer.mask.numpy())


def test_weak_ticket_stores_the_rewind_weights_given(tmp_path):
    network = nets.conv_net()
    rewind = str(tmp_path / "init.weights.h5")
    network.save_weights(rewind)
    initial = _kernels(network)
    nets.random_masks(network)
    nets.train(network)
    assert not np.array_equal(network.get_layer("fc").raw_kernel.numpy(), initial["fc"])

    loaded = load_ticket(save_ticket(network, str(tmp_path / "t.npz"), weights=rewind))
    for name, kernel in _kernels(loaded).items():
        np.testing.assert_array_equal(kernel, initial[name])
        np.testing.assert_array_equal(loaded.get_layer(name).mask.numpy(),
                                      network.get_layer(name).mask.numpy())
    as_dict = {key: np.zeros(v.shape, "float32") for key, v in ticket_variables(network).items()}
    loaded = load_ticket(save_ticket(network, str(tmp_path / "z.npz"), weights=as_dict))
    assert not any(np.any(k) for k in _kernels(loaded).values())
    with pytest.raises(ConfigError, match="lack"):
        save_ticket(network, str(tmp_path / "y.npz"), weights={"fc/kernel": 0})


# Loads the strong ticket in another process: its weights come from the initialisers' seeds.
_LOAD_STRONG = """
import numpy as np
from tf_lottery.export import load_ticket
from tf_lottery.layers import masked_layers

network = load_ticket("ticket.npz")
np.save("output.npy", network(np.load("x.npy")))
np.savez("kernels.npz", **{l.name: l.raw_kernel.numpy() for l in masked_layers(network)})
"""


def _strong_network():
    """A strong ticket of ResNet-20 from the zoo once it exists, else the tiny conv net."""
    try:
        from tf_lottery.models import build_model
    except ImportError:
        return nets.strong_conv_net(seed=5), nets.batch(4)[0]
    from tf_lottery.layers import SignedKaimingConstant, score_initializer
    from tf_lottery.search.edge_popup import freeze_weights

    network = build_model("resnet20", input_shape=(32, 32, 3), num_classes=10,
                          mask_rule=TopKScores(0.5), affine=False,
                          kernel_initializer=SignedKaimingConstant(seed=5),
                          score_initializer=score_initializer(seed=6))
    freeze_weights(network)
    return network, np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")


def test_strong_ticket_stores_bits_and_seed_and_regenerates_weights_bit_identically(tmp_path):
    network, x = _strong_network()
    if network.input_shape[1:] == nets.INPUT_SHAPE:
        nets.train(network)  # scores and BN statistics move, weights stay
    else:
        network(x, training=True)  # one BN statistics update (a ResNet-20 step is slow here)
    kernels = _kernels(network)
    path = save_ticket(network, str(tmp_path / "ticket.npz"), strong=True,
                       metadata={"algorithm": "edge_popup"})

    header = read_ticket_header(path)
    assert header["kind"] == "strong"
    stored = {w["key"] for w in header["weights"] if w["stored"]}
    assert stored and all("moving_" in key for key in stored)  # BN statistics only
    masked = sum(m.size for m in get_masks(network).values())
    size = os.path.getsize(path)
    # savez_compressed; the bits of a random mask do not compress: ≈ masked/8 plus the header
    assert masked / 8 < size < masked / 8 + 64 * 1024, (size, masked)

    np.save(tmp_path / "x.npy", x)
    nets.run_python(_LOAD_STRONG, cwd=tmp_path, without_tf_lottery=False)
    loaded = np.load(tmp_path / "kernels.npz")
    for name, kernel in kernels.items():
        assert loaded[name].tobytes() == kernel.tobytes()  # bit-identical
    np.testing.assert_array_equal(np.load(tmp_path / "output.npy"), network(x))


def test_strong_ticket_with_unseeded_initialisers_needs_the_global_seed(tmp_path):
    keras.utils.set_random_seed(11)
    network = nets.conv_net(rule=TopKScores(0.5), seeded=False)
    kernels = _kernels(network)
    with pytest.raises(ConfigError, match="not a strong ticket"):
        save_ticket(network, str(tmp_path / "a.npz"), strong=True)
    path = save_ticket(network, str(tmp_path / "b.npz"), strong=True, seed=11)
    assert read_ticket_header(path)["seed"] == 11
    keras.utils.set_random_seed(99)
    for name, kernel in _kernels(load_ticket(path)).items():
        assert kernel.tobytes() == kernels[name].tobytes()


def test_strong_ticket_refuses_trained_weights_and_weights_argument(tmp_path):
    network = nets.conv_net(rule=TopKScores(0.5))
    nets.train(network)  # the kernels are trained: not a strong ticket
    with pytest.raises(ConfigError, match="'conv1' is not regenerated"):
        save_ticket(network, str(tmp_path / "t.npz"), strong=True)
    with pytest.raises(ConfigError, match="weak tickets"):
        save_ticket(network, str(tmp_path / "t.npz"), strong=True, weights={})


def test_files_that_are_no_tickets_are_refused(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ConfigError, match="no header"):
        load_ticket(str(tmp_path / "other.npz"))
    header = {"format": "tf_lottery.ticket", "format_version": FORMAT_VERSION + 1}
    np.savez(tmp_path / "newer.npz",
             header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    with pytest.raises(ConfigError, match="version"):
        load_ticket(str(tmp_path / "newer.npz"))
    with pytest.raises(ConfigError, match="no masked layers"):
        save_ticket(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
                    str(tmp_path / "x.npz"))
