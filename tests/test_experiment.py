import keras

from tests.conftest import needs_fashion_mnist
from tests.search.helpers import tiny_data
from tf_lottery.experiment import Experiment, fresh_automatic_names


@needs_fashion_mnist
def test_analysis_callbacks_get_the_first_test_batches(tmp_path):
    dataset = tiny_data()
    made = []

    def factory(data):
        made.append(data)
        return object()

    experiment = Experiment(workdir=str(tmp_path), search=None, model_fn=None, dataset=dataset,
                            analysis_callbacks=[factory, factory], analysis_batches=2)
    callbacks = experiment.analysis_callbacks(0)
    assert len(callbacks) == 2 and callbacks[0] is not callbacks[1]
    first = [(x.numpy(), y.numpy()) for x, y in dataset.test.take(2)]
    for data in made:
        assert len(data) == 2
        for (x, y), (x0, y0) in zip(data, first):
            assert (x.numpy() == x0).all() and (y.numpy() == y0).all()
    assert Experiment(workdir=str(tmp_path), search=None, model_fn=None,
                      dataset=dataset).analysis_callbacks(0) == []


def test_fresh_automatic_names_name_every_build_alike_and_keep_later_names_unique():
    def build():
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    build()  # names already taken in this process
    with fresh_automatic_names():
        first = build()
    with fresh_automatic_names():
        second = build()
    assert first.name == second.name == "sequential"
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers] \
        == ["dense"]
    later = build()  # outside: past every name used inside, and inside again: none reused
    assert later.name != "sequential" and later.layers[0].name != "dense"
