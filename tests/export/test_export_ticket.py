import os

import numpy as np
import tensorflow as tf

from tf_lottery.export import export_ticket, load_ticket, read_ticket_header

from tests.export import nets


def test_export_ticket_writes_saved_model_and_ticket_file(tmp_path):
    network = nets.strong_conv_net(seed=3)
    model = nets.train(network)
    paths = export_ticket(model, str(tmp_path / "export"), metadata={"test_accuracy": 0.5},
                          strong=True)
    assert {k: paths[k] for k in ("saved_model", "ticket")} == {
        "saved_model": str(tmp_path / "export" / "saved_model"),
        "ticket": str(tmp_path / "export" / "ticket.npz")}
    assert sorted(paths["sizes"]) == ["saved_model", "ticket"]  # test_sizes checks the values
    assert os.path.exists(os.path.join(paths["saved_model"], "saved_model.pb"))
    x, _ = nets.batch()
    expected = network(x)
    loaded = tf.saved_model.load(paths["saved_model"])  # keep it: it owns the variables
    served = loaded.serve(x)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_array_equal(load_ticket(paths["ticket"])(x), expected)
    header = read_ticket_header(paths["ticket"])
    assert header["kind"] == "strong" and header["metadata"]["test_accuracy"] == 0.5
