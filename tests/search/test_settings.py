"""Settings checked once for every search: a choice among names (errors.check_choice), the
exclude list (masks.check_exclude, masks.searched_layers), ToSTSearch's former name."""
import gin
import pytest

from tests.search.helpers import constant_recipe, mlp_experiment
from tests.search.mlp import mlp as seeded_mlp
from tf_lottery.errors import ConfigError, check_choice
from tf_lottery.search import (ContinuousSparsificationSearch, DynamicSparseSearch,
                               EdgePopupSearch, GradualMagnitudeSearch, IMPSearch,
                               PruneAtInitSearch, ToSTSearch, ToSTTraining)


def test_check_choice_is_the_one_form_of_the_message():
    assert check_choice("x.kind", "b", ("a", "b")) == "b"
    assert check_choice("x.kind", None, (None, "a")) is None
    with pytest.raises(ConfigError, match=r"^x.kind must be one of \['a', 'b'\], got 'c'$"):
        check_choice("x.kind", "c", ("a", "b"))
    with pytest.raises(ConfigError, match="must be one of"):
        check_choice("x.kind", ["unhashable"], {"a": 1})
    for make, name in [(lambda: IMPSearch(prune_fraction=0.2, num_rounds=2, structure="x"),
                        "IMPSearch.structure"),
                       (lambda: GradualMagnitudeSearch(structure="x"),
                        "GradualMagnitudeSearch.structure"),
                       (lambda: DynamicSparseSearch(updater="x"), "updater"),
                       (lambda: ContinuousSparsificationSearch(score_init="x"),
                        "ContinuousSparsificationSearch.score_init"),
                       (lambda: ToSTSearch(mask_source="x"), "ToSTSearch.mask_source")]:
        with pytest.raises(ConfigError, match=f"^{name} must be one of .*, got 'x'\n"):
            make()


@pytest.mark.parametrize("make", [
    lambda exclude: IMPSearch(prune_fraction=0.2, num_rounds=2, exclude=exclude),
    lambda exclude: GradualMagnitudeSearch(exclude=exclude),
    lambda exclude: DynamicSparseSearch(exclude=exclude),
    lambda exclude: PruneAtInitSearch(exclude=exclude),
    lambda exclude: ContinuousSparsificationSearch(exclude=exclude),
    lambda exclude: EdgePopupSearch(shrinkage=0.5, exclude=exclude),
    lambda exclude: ToSTSearch(exclude=exclude, ghost_skips=False, ghost_activation=None)])
def test_exclude_is_checked_when_a_search_is_configured(make):
    assert make(["output", "*_shortcut"]).exclude == ("output", "*_shortcut")
    with pytest.raises(ConfigError, match=r"exclude takes a list .* \(write \['output'\]\)"):
        make("output")  # not ('o', 'u', 't', 'p', 'u', 't')
    with pytest.raises(ConfigError, match="exclude takes layer names or patterns"):
        make([3])


@pytest.mark.parametrize("make", [
    lambda: EdgePopupSearch(cycles=1, shrinkage=0.5, exclude=["*"], recipe=constant_recipe()),
    lambda: GradualMagnitudeSearch(exclude=["fc1", "output"], recipe=constant_recipe()),
    lambda: ContinuousSparsificationSearch(exclude=["*"], recipe=constant_recipe())])
def test_a_search_with_every_layer_excluded_stops_at_build(tmp_path, make):
    search = make()
    with pytest.raises(ConfigError, match="every masked layer is excluded"):
        search.build(mlp_experiment(tmp_path, search, model_fn=seeded_mlp))


def test_tost_search_keeps_its_former_name_for_gin_files():
    @gin.configurable
    def configured(search):
        return search

    try:
        gin.parse_config(["ToSTSearch.prune_fraction = 0.5", "ToSTSearch.criterion = 'grasp'",
                          "ToSTTraining.criterion = 'snip'", "ToSTSearch.ghost_skips = False",
                          "ToSTSearch.ghost_activation = None",
                          "configured.search = @ToSTTraining()"])
        search = configured()
    finally:
        gin.clear_config()
    assert isinstance(search, ToSTSearch) and type(search) is ToSTTraining
    assert search.mask_specs == [0.5] and search.criterion == "snip"  # its own binding wins
    with pytest.raises(ConfigError, match="needs ToSTTraining.ticket_path"):
        ToSTTraining(mask_source="ticket", ghost_skips=False, ghost_activation=None)
