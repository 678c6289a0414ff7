"""The Python in the docs runs: every ```python block of docs/python_guide.md, in order as one
script, in a fresh namespace and a temporary working directory (its workdirs and exports land
there); the README's "Python quick-start" block is one of them, verbatim. The snippets use small
numbers themselves (a slice of Fashion-MNIST, one or two epochs), so what is tested is exactly
what a reader copies."""
import os
import re

import numpy as np
import pytest

from tests.conftest import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text):
    """[(line number of the block's first code line, code)] of the ```python blocks."""
    return [(text.count("\n", 0, match.start()) + 2, match.group(1))
            for match in _BLOCK.finditer(text)]


def section(text, title):
    """The text of the '## title' section (up to the next '## ' heading)."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[:end if end >= 0 else len(text)][start:], text.count("\n", 0, start)


def _run(path, blocks, line_offset=0, names=None):
    namespace = {"__name__": "__docs__", **(names or {})}
    for line, code in blocks:
        # padded so that a traceback names the line of the document
        exec(compile("\n" * (line_offset + line - 1) + code, path, "exec"), namespace)
    return namespace


def test_the_block_finder_reads_blocks_and_their_lines():
    text = "intro\n```python\na = 1\n```\n```bash\nno\n```\n```python\nb = 2\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = 2\n")]


@needs_fashion_mnist
def test_python_guide_runs(tmp_path, monkeypatch):
    path = os.path.join(ROOT, "docs", "python_guide.md")
    with open(path, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    assert len(blocks) >= 7
    monkeypatch.chdir(tmp_path)
    namespace = _run(path, blocks)
    assert namespace["strong"].rounds[-1]["remaining_fraction"] == pytest.approx(0.3, abs=0.01)
    assert namespace["result"].rounds[-1]["remaining_fraction"] == pytest.approx(0.2, abs=1e-3)
    assert os.path.isfile(os.path.join(namespace["result"].exported["saved_model"],
                                       "saved_model.pb"))
    assert os.path.isfile("exports/imp_ticket.keras")
    assert namespace["pruned"].network.get_layer("hidden").mask.numpy().mean() == pytest.approx(
        0.2, abs=0.01)  # the gradual schedule reached its 80% sparsity


def test_readme_quick_start_is_run_by_the_guide_and_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text, _ = section(f.read(), "Python quick-start")
    blocks = python_blocks(text)
    assert len(blocks) == 1
    code = blocks[0][1]
    assert len(code.strip().splitlines()) <= 15  # the promise: an exported ticket in <= 15 lines
    assert "tl.search.run(" in code and "exported" in code
    with open(os.path.join(ROOT, "docs", "python_guide.md"), encoding="utf-8") as f:
        assert code in [c for _, c in python_blocks(f.read())]  # so test_python_guide_runs runs it


@needs_fashion_mnist
def test_adding_a_search_example_runs(tmp_path, monkeypatch):
    path = os.path.join(ROOT, "docs", "adding_a_search.md")
    with open(path, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    monkeypatch.chdir(tmp_path)
    namespace = _run(path, blocks)
    rounds = namespace["result"].rounds
    assert [r["sparsity"] for r in rounds] == pytest.approx([0.0, 0.8], abs=1e-3)
    assert rounds[1]["algorithm"] == "one_shot_magnitude"


def test_readme_channel_pruning_block_runs_on_a_readers_masked_model():
    from tests.sparsity.test_channels import _randomise_norms, branching_net

    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    blocks = [(line, code) for line, code in python_blocks(text) if "prune_channels(" in code]
    assert len(blocks) == 1
    network = branching_net()  # the reader's masked model
    _randomise_norms(network)
    namespace = _run(path, blocks, names={"network": network})
    small = namespace["small"]
    assert small.get_layer("c1").kernel.shape[-1] == 2  # half of c1's 4 filters are gone
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(small(x), network(x), rtol=1e-5, atol=1e-5)
