import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.search.helpers import built, constant_recipe, mlp, mlp_experiment
from tf_lottery.errors import ConfigError
from tf_lottery.export import to_plain_model
from tf_lottery.layers import MaskedDense
from tf_lottery.layers.mask_rules import BernoulliScores, FixedMask, SigmoidScores
from tf_lottery.search import rounds
from tf_lottery.search.continuous_sparsification import (
    REMOVED_SCORE, ContinuousSparsificationSearch, IterativeStochasticSparsificationSearch,
    annealed_beta, cs_score_reset, iss_score_reset, with_fixed_masks)
from tf_lottery.search.rewind import assign_dense_weights, dense_weights, load_dense_weights


def cs(**kwargs):
    kwargs.setdefault("recipe", constant_recipe())
    kwargs.setdefault("evaluate_tickets", False)
    return ContinuousSparsificationSearch(**kwargs)


def iss(**kwargs):
    kwargs.setdefault("recipe", constant_recipe())
    kwargs.setdefault("evaluate_tickets", False)
    return IterativeStochasticSparsificationSearch(**kwargs)


# -- Algorithm 3, step 4: s ← min(β_T·s_T, s_0), β ← β_0 -----------------------------------------

def test_cs_score_reset_by_hand():
    s_T = np.array([-0.5, 0.0001, 0.2, 0.0, -1e-6], np.float32)
    # β_T·s_T = [-50, 0.01, 20, 0, -1e-4]; min with s_0 = 0.03
    np.testing.assert_allclose(cs_score_reset(s_T, 100.0, 0.03),
                               [-50.0, 0.01, 0.03, 0.0, -1e-4], rtol=1e-6)
    # elementwise s_0 (uniform initialisation)
    np.testing.assert_allclose(cs_score_reset(s_T, 100.0, [0.0, 0.02, -0.01, 0.05, 0.0]),
                               [-50.0, 0.01, -0.01, 0.0, -1e-4], rtol=1e-6)


def test_cs_begin_round_resets_scores_and_beta(tmp_path):
    search = cs(initial_score=0.03, initial_beta=2.0, final_beta=50.0)
    model, exp = built(search, tmp_path)
    layer = search.layers[0]
    np.testing.assert_array_equal(layer.scores.numpy(),
                                  np.full(layer.scores.shape, 0.03, np.float32))
    assert float(layer.beta.numpy()) == 2.0
    s_T = np.random.default_rng(0).normal(0, 0.01, layer.scores.shape).astype(np.float32)
    layer.scores.assign(s_T)
    layer.beta.assign(50.0)  # β_T at the end of the previous round
    search.begin_round(model, 1, exp)
    np.testing.assert_allclose(layer.scores.numpy(), np.minimum(50.0 * s_T, 0.03), rtol=1e-6)
    assert float(layer.beta.numpy()) == 2.0


@pytest.mark.parametrize("rewind_to", ["init", None])
def test_weights_rewound_between_rounds_only_when_asked(tmp_path, rewind_to):
    search = cs(rewind_to=rewind_to)
    model, exp = built(search, tmp_path)
    w0 = dense_weights(model.network)
    trained = {path: value + 1.0 for path, value in w0.items()}
    assign_dense_weights(model.network, trained)
    scores = search.layers[0].scores.numpy() + 0.5
    search.layers[0].scores.assign(scores)
    search.begin_round(model, 1, exp)
    expected = w0 if rewind_to == "init" else trained
    for path, value in dense_weights(model.network).items():
        np.testing.assert_array_equal(value, expected[path])
    # the scores follow the reset rule either way, not the rewind point
    np.testing.assert_allclose(search.layers[0].scores.numpy(), np.minimum(1.0 * scores, 0.0))


# -- λ‖σ(βs)‖₁ alone pushes every score down ------------------------------------------------------

@pytest.mark.parametrize("make", [cs, iss])
def test_l1_penalty_alone_decreases_every_score(tmp_path, make):
    search = make(l1_penalty=1e-2, score_init="uniform", initial_score=0.5)
    model, _ = built(search, tmp_path)
    before = [layer.scores.numpy() for layer in search.layers]
    expected = sum(float(np.sum(1 / (1 + np.exp(-s)))) for s in before)  # β = 1: σ(s)
    assert float(search._l1_penalty(model)) == pytest.approx(1e-2 * expected, rel=1e-5)
    optimizer = keras.optimizers.SGD(1.0)
    scores = [layer.scores for layer in search.layers]
    for _ in range(3):
        with tf.GradientTape() as tape:
            penalty = search._l1_penalty(model)
        optimizer.apply_gradients(zip(tape.gradient(penalty, scores), scores))
    for layer, s0 in zip(search.layers, before):
        assert np.all(layer.scores.numpy() < s0)


# -- the ticket is b(s_T) = 1[s_T > 0], never σ(β_T·s_T) ----------------------------------------

def test_ticket_is_exactly_binary_of_scores(tmp_path):
    search = cs()
    model, _ = built(search, tmp_path)
    layer = search.layers[0]
    scores = np.random.default_rng(1).normal(0, 1e-3, layer.scores.shape).astype(np.float32)
    scores.flat[:3] = [0.0, 1e-9, -1e-9]  # σ(β·s) ≈ 0.5 here, b(s) is 0, 1, 0
    layer.scores.assign(scores)
    layer.beta.assign(100.0)
    ticket = search.ticket_masks(model)
    assert set(ticket) == {"fc1", "output"}
    np.testing.assert_array_equal(ticket["fc1"], (scores > 0).astype(np.float32))
    assert ticket["fc1"].flat[:3].tolist() == [0.0, 1.0, 0.0]


# -- β schedule ------------------------------------------------------------------------------------

def test_beta_schedule_values():
    assert annealed_beta(0.0) == pytest.approx(1.0)
    assert annealed_beta(0.5) == pytest.approx(10.0)  # 100^(1/2)
    assert annealed_beta(0.25) == pytest.approx(100 ** 0.25)
    assert annealed_beta(1.0) == pytest.approx(100.0)
    assert annealed_beta(0.5, 2.0, 200.0) == pytest.approx(20.0)  # β_0·(β_T/β_0)^(t/T)
    assert annealed_beta(0.5, 1.0, 100.0, "linear") == pytest.approx(50.5)
    with pytest.raises(ConfigError):
        annealed_beta(0.5, schedule="cosine")


class _BetaRecorder(keras.callbacks.Callback):
    def __init__(self, layer):
        super().__init__()
        self.layer, self.values = layer, []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(self.layer.beta.numpy()))


class _RecordingCS(ContinuousSparsificationSearch):
    def round_callbacks(self, model, index, experiment):
        self.recorder = _BetaRecorder(self.layers[0])
        return [*super().round_callbacks(model, index, experiment), self.recorder]


def test_beta_is_annealed_per_step_in_the_compiled_step(tmp_path):
    search = _RecordingCS(num_rounds=1, recipe=constant_recipe(epochs=2), evaluate_tickets=False,
                          final_beta=100.0)
    mlp_experiment(tmp_path, search).run()
    steps = 2 * 8  # 2 epochs of 512 / 64
    expected = [100.0 ** (t / steps) for t in range(steps)]  # β_t used by update t
    np.testing.assert_allclose(search.recorder.values, expected, rtol=1e-5)
    assert float(search.layers[0].beta.numpy()) == 100.0  # the round ends at β_T
    assert rounds.load_metrics(str(tmp_path), 0)["final_beta"] == 100.0


# -- ISS: Algorithm 2 ------------------------------------------------------------------------------

def test_iss_reset_removes_scores_that_decreased():
    s0 = np.ones(5, np.float32)
    s_T = np.array([REMOVED_SCORE, 0.5, 1.0, 1.7, 0.999], np.float32)
    np.testing.assert_array_equal(iss_score_reset(s_T, s0),
                                  np.float32([REMOVED_SCORE, REMOVED_SCORE, 1.0, 1.7,
                                              REMOVED_SCORE]))


def test_iss_removed_weights_never_sampled_and_get_no_gradient(tmp_path):
    search = iss(initial_score=1.0)
    model, exp = built(search, tmp_path)
    layer = search.layers[0]
    columns = np.arange(layer.scores.shape[1])
    s_T = np.where(columns % 2 == 0, 0.5, 1.5) * np.ones(layer.scores.shape)
    layer.scores.assign(s_T.astype(np.float32))
    search.begin_round(model, 1, exp)
    removed = s_T < 1.0
    np.testing.assert_array_equal(layer.scores.numpy()[removed], REMOVED_SCORE)
    assert float(tf.sigmoid(tf.constant(REMOVED_SCORE, tf.float32))) == 0.0  # "−∞"
    with tf.GradientTape() as tape:
        masks = [layer.mask_rule.mask(layer, training=True) for _ in range(20)]
        total = tf.add_n([tf.reduce_sum(m) for m in masks])
    assert all(np.all(m.numpy()[removed] == 0) for m in masks)
    assert np.all(tape.gradient(total, layer.scores).numpy()[removed] == 0)


def test_bernoulli_straight_through_gradient_by_hand(tmp_path):
    """m ~ Ber(σ(s)) forward, ∂m/∂σ(s) = I backward (Bengio et al. 2013): ∂(c·m)/∂s = c·σ'(s)."""
    search = iss()
    _, _ = built(search, tmp_path)
    layer = search.layers[1]
    assert isinstance(layer.mask_rule, BernoulliScores)
    s = np.linspace(-2, 2, layer.scores.shape[0] * layer.scores.shape[1]).astype(np.float32)
    layer.scores.assign(s.reshape(layer.scores.shape))
    c = np.arange(s.size, dtype=np.float32).reshape(layer.scores.shape)
    with tf.GradientTape() as tape:
        m = layer.mask_rule.mask(layer, training=True)
        loss = tf.reduce_sum(c * m)
    assert set(np.unique(m.numpy())) <= {0.0, 1.0}
    sigma = 1 / (1 + np.exp(-s.reshape(c.shape)))
    np.testing.assert_allclose(tape.gradient(loss, layer.scores).numpy(),
                               c * sigma * (1 - sigma), rtol=1e-5, atol=1e-6)


def test_iss_ticket_is_a_seeded_sample_of_sigmoid_scores(tmp_path):
    search = iss(initial_score=0.0)  # σ(0) = 1/2
    model, exp = built(search, tmp_path)
    search.begin_round(model, 0, exp)
    first = search.ticket_masks(model)
    assert search.ticket_masks(model) is first  # measured and saved: the same sample
    density = np.mean(np.concatenate([m.ravel() for m in first.values()]))
    assert 0.4 < density < 0.6
    search.begin_round(model, 0, exp)
    again = search.ticket_masks(model)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    threshold = iss(ticket="threshold", initial_score=0.0)
    model, _ = built(threshold, tmp_path / "t")
    assert all(np.all(m == 0) for m in threshold.ticket_masks(model).values())  # 1[0 > 0]


# -- exclusion, supermask -------------------------------------------------------------------

def test_excluded_layers_get_fixed_mask_and_keep_their_weights(tmp_path):
    network = mlp((4,), 3, mask_rule=SigmoidScores())
    copy = with_fixed_masks(network, ["output"])
    output = copy.get_layer("output")
    assert isinstance(output.mask_rule, FixedMask) and output.scores is None
    assert isinstance(copy.get_layer("fc1").mask_rule, SigmoidScores)
    original = {v.path: v.numpy() for v in network.weights}
    cloned = {v.path: v.numpy() for v in copy.weights}
    assert set(cloned) == set(original) - {"output/scores", "output/beta"}
    for path, value in cloned.items():
        np.testing.assert_array_equal(value, original[path])
    search = cs(exclude=("output",))
    model, _ = built(search, tmp_path)
    assert [layer.name for layer in search.layers] == ["fc1"]
    assert set(search.ticket_masks(model)) == {"fc1"}
    assert model.network.get_layer("output").scores is None
    with pytest.raises(ConfigError, match="no masked layer"):
        with_fixed_masks(network, ["nope"])


def keeping_model(cls):
    class Kept(cls):
        def build(self, experiment):
            self.model = super().build(experiment)
            return self.model
    return Kept


@pytest.mark.parametrize("cls", [ContinuousSparsificationSearch,
                                 IterativeStochasticSparsificationSearch])
def test_supermask_leaves_weights_unchanged(tmp_path, cls):
    search = keeping_model(cls)(num_rounds=2, recipe=constant_recipe(), supermask=True,
                                exclude=("output",), initial_score=0.01, l1_penalty=1e-3,
                                evaluate_tickets=False)
    mlp_experiment(tmp_path, search).run()
    initial = load_dense_weights(str(tmp_path / "init" / "rewind_init.npz"))
    final = dense_weights(search.model.network)
    assert sorted(final) == ["fc1/bias", "fc1/kernel", "output/bias", "output/kernel"]
    for path, value in initial.items():
        np.testing.assert_array_equal(final[path], value)
    scores = search.layers[0].scores.numpy()
    assert not np.array_equal(scores, np.full(scores.shape, 0.01, np.float32))


# -- end to end ------------------------------------------------------------------------------------

def test_cs_rounds_on_disk_with_decreasing_density_and_ticket_evaluation(tmp_path):
    search = ContinuousSparsificationSearch(
        num_rounds=3, recipe=constant_recipe(optimizer="sgd", learning_rate=0.3, momentum=0.9),
        l1_penalty=1e-3, score_init="uniform", initial_score=0.05, rewind_to="init",
        evaluation_rewind_to="4it")
    results = mlp_experiment(tmp_path, search).run()
    workdir = str(tmp_path)
    assert rounds.completed_rounds(workdir) == [0, 1, 2]
    densities = [r["remaining_fraction"] for r in results]
    assert 0 < densities[2] < densities[1] < densities[0] < 1
    assert [r["search_epochs"] for r in results] == [1, 2, 3]
    last = search.layers  # the layers after the last round hold s_T
    ticket = rounds.load_round_masks(workdir, 2)
    for layer in last:
        np.testing.assert_array_equal(ticket[layer.name], layer.scores.numpy() > 0)
    for r in results:
        assert 0 <= r["retrained_test_accuracy"] <= 1 and r["retrained_from"] == "rewind_4it.npz"
        assert r["retrained_remaining_fraction"] == pytest.approx(r["remaining_fraction"])
        assert r["algorithm"] == "continuous_sparsification"
    assert (tmp_path / "init" / "rewind_4it.npz").exists()
    assert (tmp_path / "round_01" / "retrain" / "metrics.json").exists()


def test_binary_ticket_accuracy_is_what_the_exported_model_scores(tmp_path):
    # β_T = 1: the soft mask σ(s) ∈ (0.38, 0.62) is far from b(s), which prunes about half
    search = cs(num_rounds=1, score_init="uniform", initial_score=0.5, final_beta=1.0,
                l1_penalty=0.0)
    experiment = mlp_experiment(tmp_path, search)
    metrics = experiment.run()[0]
    plain = to_plain_model(search.model)  # export: b(s) ⊙ w folded into plain Dense kernels
    plain.compile(loss=constant_recipe().make_loss(), metrics=["accuracy"])
    exported = plain.evaluate(experiment.dataset.test, verbose=0, return_dict=True)
    assert metrics["ticket_test_accuracy"] == pytest.approx(exported["accuracy"], abs=1e-6)
    assert metrics["ticket_test_loss"] == pytest.approx(exported["loss"], rel=1e-5)
    assert abs(metrics["test_loss"] - metrics["ticket_test_loss"]) > 1e-3  # soft ≠ binary
    line = search.describe_round(0, metrics)
    assert f"test accuracy {metrics['test_accuracy']:.4f} (soft mask" in line
    assert f"ticket test accuracy {metrics['ticket_test_accuracy']:.4f} (binary mask)" in line


def user_sequential(input_shape, num_classes, mask_rule=None, score_initializer="zeros"):
    """A user's model as users write them: a Sequential, every name left to Keras."""
    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Flatten(),
        MaskedDense(8, activation="relu", mask_rule=mask_rule,
                    score_initializer=score_initializer),
        MaskedDense(num_classes, mask_rule=mask_rule, score_initializer=score_initializer)])


def test_ticket_evaluation_of_a_sequential_with_automatic_names(tmp_path):
    # the ticket is evaluated and retrained in networks built after the search's own: their
    # automatic names ('sequential_1/masked_dense_2') must not matter
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # names taken before the run
    search = cs(num_rounds=1, evaluate_tickets=True, l1_penalty=1e-3, initial_score=0.05)
    results = mlp_experiment(tmp_path, search, model_fn=user_sequential).run()
    assert 0 <= results[0]["retrained_test_accuracy"] <= 1
    ticket = rounds.load_round_masks(str(tmp_path), 0)
    assert sorted(ticket) == ["masked_dense", "masked_dense_1"]
    assert results[0]["retrained_remaining_fraction"] == pytest.approx(
        results[0]["remaining_fraction"])


def test_config_errors():
    with pytest.raises(ConfigError):
        cs(rewind_to="2")
    with pytest.raises(ConfigError):
        cs(beta_schedule="cosine")
    with pytest.raises(ConfigError):
        cs(initial_beta=10.0, final_beta=1.0)
    with pytest.raises(ConfigError):
        iss(ticket="mode")
    with pytest.raises(ConfigError):
        cs(score_init="normal")
    with pytest.raises(ConfigError):
        cs(evaluation_rewind_to=None)
