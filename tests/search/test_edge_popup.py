import math

import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import tiny_data, tiny_net
from tf_lottery.errors import ConfigError
from tf_lottery.experiment import Experiment
from tf_lottery.search import rounds
from tf_lottery.search.edge_popup import (VARIANTS, EdgePopupSearch, remaining_after,
                                          shrinkage_for_target)
from tf_lottery.training.recipe import TrainingRecipe


def test_target_remaining_sets_shrinkage():
    p = shrinkage_for_target(0.3, 3)
    assert p == pytest.approx(1 - 0.3 ** (1 / 3))
    assert remaining_after(3, p) == pytest.approx(0.3)
    assert EdgePopupSearch(target_remaining=0.3, cycles=3).shrinkage == pytest.approx(p)


def test_table3_keep_fractions():
    p = 0.2
    soft = EdgePopupSearch(variant="soft_lr", shrinkage=p, cycles=3)
    hard = EdgePopupSearch(variant="hard_lr", shrinkage=p, cycles=3)
    ep = EdgePopupSearch(variant="ep", shrinkage=p, cycles=3)
    # soft iEP and EP: k_i = 1-(1-p)^i of all edges; hard iEP: p within m*_{i-1}
    assert [soft.keep_fraction(i) for i in (1, 2, 3)] == pytest.approx([0.8, 0.64, 0.512])
    assert [ep.keep_fraction(i) for i in (1, 2, 3)] == pytest.approx([0.8, 0.64, 0.512])
    assert [hard.keep_fraction(i) for i in (1, 2, 3)] == pytest.approx([0.8, 0.8, 0.8])


def test_remaining_schedule_sets_cycles_and_keep_fractions():
    soft = EdgePopupSearch(variant="soft_lr", remaining_schedule=[0.5, 0.3, 0.1, 0.05])
    hard = EdgePopupSearch(variant="hard_lr", remaining_schedule=[0.5, 0.3, 0.1, 0.05])
    assert soft.num_rounds == hard.num_rounds == 4
    assert [soft.keep_fraction(i) for i in (1, 2, 3, 4)] == pytest.approx([0.5, 0.3, 0.1, 0.05])
    assert [hard.keep_fraction(i) for i in (1, 2, 3, 4)] == pytest.approx([0.5, 0.6, 1 / 3, 0.5])


def test_bad_settings():
    with pytest.raises(ConfigError, match="variant"):
        EdgePopupSearch(variant="soft")
    with pytest.raises(ConfigError, match="exactly one"):
        EdgePopupSearch(shrinkage=0.2, target_remaining=0.3)
    with pytest.raises(ConfigError, match="non-increasing"):
        EdgePopupSearch(remaining_schedule=[0.5, 0.6])
    with pytest.raises(ConfigError, match="shrinkage"):
        EdgePopupSearch(shrinkage=1.0)
    with pytest.raises(ConfigError, match="target_remaining"):
        EdgePopupSearch(target_remaining=1.5)


def _run(tmp_path, variant, cycles=2, **kw):
    search = EdgePopupSearch(variant=variant, cycles=cycles, shrinkage=0.5,
                             recipe=TrainingRecipe(epochs=1, learning_rate=0.1), **kw)
    experiment = Experiment(workdir=str(tmp_path / variant), search=search, model_fn=tiny_net,
                            dataset=tiny_data(), verbose=0, tensorboard=False)
    return search, experiment, experiment.run()


class _Recorder:
    """Wraps a search to record the scores, masks and weights at the start of every cycle."""

    def __init__(self, search):
        self.search, self.starts, self.ends = search, [], []
        original_begin = search.begin_round
        original_end = search.end_round

        def begin(model, index, experiment):
            original_begin(model, index, experiment)
            self.starts.append(self.snapshot())

        def end(model, index, metrics, experiment):
            self.ends.append(self.snapshot())
            original_end(model, index, metrics, experiment)

        search.begin_round, search.end_round = begin, end

    def snapshot(self):
        return {layer.name: {"scores": layer.scores.numpy().copy(),
                             "mask": layer.mask.numpy().copy(),
                             "kernel": layer.raw_kernel.numpy().copy(),
                             "binary": layer.binary_mask().numpy().copy()}
                for layer in self.search.layers}


# the fast suite trains hard and soft variants covering the score starts s0, fresh and inherit
# and both learning-rate modes; the other six run with -m slow, to keep `make test` under ten
# minutes
_FAST_VARIANTS = {"ep", "hard_sri", "soft_ft"}


@needs_fashion_mnist
@pytest.mark.parametrize("variant", [
    pytest.param(v, marks=() if v in _FAST_VARIANTS else pytest.mark.slow)
    for v in sorted(VARIANTS)])
def test_each_variant_starts_cycle_two_as_table3_says(tmp_path, variant):
    search = EdgePopupSearch(variant=variant, cycles=2, shrinkage=0.5,
                             recipe=TrainingRecipe(epochs=1, learning_rate=0.1))
    recorder = _Recorder(search)
    experiment = Experiment(workdir=str(tmp_path), search=search, model_fn=tiny_net,
                            dataset=tiny_data(), verbose=0, tensorboard=False)
    results = experiment.run()
    hard, score_rule, lr_rule = VARIANTS[variant]
    s0 = search.initial_scores
    # 4 steps per cosine cycle: cycle 1 last applied γ(3) = 0.05(1 + cos(3π/4)); fine-tuning
    # goes on at that rate (constant), the other variants rewind the schedule
    last = 0.05 * (1 + math.cos(math.pi * 3 / 4))
    assert results[0]["final_learning_rate"] == pytest.approx(last, rel=1e-5)
    assert results[1]["final_learning_rate"] == pytest.approx(last, rel=1e-5)
    for name in s0:
        start1, end1, start2 = recorder.starts[0][name], recorder.ends[0][name], recorder.starts[1][name]
        m1 = end1["binary"]
        # weights are frozen at θ0 in every cycle
        assert np.array_equal(start1["kernel"], end1["kernel"])
        assert np.array_equal(start2["kernel"], recorder.ends[1][name]["kernel"])
        # scores trained in cycle 1 and in cycle 2 (fine-tuning too)
        assert not np.array_equal(start1["scores"], end1["scores"])
        assert not np.array_equal(start2["scores"], recorder.ends[1][name]["scores"])
        expected_scores = {"s0": s0[name], "inherit": end1["scores"],
                           "zero_inherit": m1 * end1["scores"], "zero_s0": m1 * s0[name]}
        if score_rule == "fresh":
            assert not np.allclose(start2["scores"], s0[name])
            assert not np.allclose(start2["scores"], end1["scores"])
        else:
            assert np.array_equal(start2["scores"], expected_scores[score_rule])
        # hard iEP restricts the search space to m*_1, soft keeps all edges
        assert np.array_equal(start2["mask"], m1 if hard else np.ones_like(m1))
        if hard:  # the cycle-2 ticket lies inside m*_1
            assert np.all(recorder.ends[1][name]["binary"] <= m1)
    assert [r["remaining_fraction"] for r in results] == pytest.approx([0.5, 0.25], abs=0.01)


@needs_fashion_mnist
def test_soft_iep_run_records_rounds_dying_ratio_and_resumes(tmp_path):
    search, experiment, results = _run(tmp_path, "soft_lr", cycles=2)
    workdir = experiment.workdir
    assert rounds.completed_rounds(workdir) == [0, 1]
    for index, metrics in enumerate(results):
        assert 0 <= metrics["dying_ratio"] <= 1 - metrics["keep_fraction"] + 1e-6
        assert metrics["search_epochs"] == index + 1
        saved = rounds.load_round_masks(workdir, index)
        remaining = sum(int(m.sum()) for m in saved.values())
        assert remaining == metrics["remaining_weights"]
    # a rerun finds every round complete and trains nothing more
    again = Experiment(workdir=workdir, search=EdgePopupSearch(
        variant="soft_lr", cycles=2, shrinkage=0.5, recipe=TrainingRecipe(epochs=1)),
        model_fn=tiny_net, dataset=tiny_data(), verbose=0, tensorboard=False).run()
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in results]


@needs_fashion_mnist
def test_only_scores_are_trainable_and_batchnorm_non_affine_by_default(tmp_path):
    search = EdgePopupSearch(variant="ep", cycles=1, shrinkage=0.5)
    experiment = Experiment(workdir=str(tmp_path), search=search, model_fn=tiny_net,
                            dataset=tiny_data(), verbose=0, tensorboard=False)
    model = search.build(experiment)
    model(np.zeros((1, 28, 28, 1), np.float32))
    names = sorted(v.path for v in model.trainable_weights)
    assert names == ["conv/scores", "fc/scores", "output/scores"]
    assert not model.network.get_layer("bn").center and not model.network.get_layer("bn").scale


@needs_fashion_mnist
def test_weight_decay_acts_on_the_scores_as_in_the_reference_code(tmp_path):
    """Edge-popup's PyTorch SGD decays every parameter it trains, the scores: one step with a zero
    loss gradient moves s to s·(1 − lr·wd) (coupled L2: the buffer starts at wd·s)."""
    search = EdgePopupSearch(variant="ep", cycles=1, shrinkage=0.5, recipe=TrainingRecipe(
        learning_rate=0.1, weight_decay=0.01, lr_schedule="constant"))
    experiment = Experiment(workdir=str(tmp_path), search=search, model_fn=tiny_net,
                            dataset=tiny_data(), verbose=0, tensorboard=False)
    model = search.build(experiment)
    model(np.zeros((1, 28, 28, 1), np.float32))
    optimizer = search.make_optimizer(0, experiment)
    before = {v.path: v.numpy().copy() for v in model.trainable_weights}
    optimizer.apply_gradients([(np.zeros(v.shape, np.float32), v)
                               for v in model.trainable_weights])
    for variable in model.trainable_weights:
        np.testing.assert_allclose(variable.numpy(), before[variable.path] * (1 - 0.1 * 0.01),
                                   rtol=1e-6)
