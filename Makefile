# The two commands of the README. Both set everything up first (bin/setup is
# idempotent), then run.
PY := .venv/bin/python
GIN ?= gin_configs/soft_iep.gin

.PHONY: setup train test test-all test-oldest
setup:
	@bin/setup

train: setup
	$(PY) bin/train --gin_file=$(GIN) $(ARGS)

# The suite (without the runs marked slow) on both cores.
test: setup
	$(PY) -m pytest -n 2 -q -m "not slow" --durations=15 tests

test-all: setup
	$(PY) -m pytest -n 2 -q tests

# The lowest Keras/TF that setup.cfg allows (.ci/oldest.txt), in .venv-oldest, on the tests of
# tf_lottery.compat (every private Keras/TF API the package uses) and of the code that leans on
# Keras most: masked layers, sparsify, SparseModel's train step, the optimizers, ticket files.
OLDEST_TESTS := tests/test_compat.py tests/layers tests/models/test_sparsify.py \
	tests/models/test_sparsify_any_model.py tests/training/test_sparse_model.py \
	tests/training/test_optimizers.py tests/training/test_split_optimizer.py \
	tests/sparsity/test_dst.py tests/sparsity/test_gmp.py tests/export/test_plain.py \
	tests/export/test_ticket_file.py
test-oldest:
	@VENV=.venv-oldest PIP_CONSTRAINT=$(CURDIR)/.ci/oldest.txt bin/setup
	.venv-oldest/bin/python -c "import keras, tensorflow as tf; print('[test-oldest] keras', keras.__version__, 'tensorflow', tf.__version__)"
	.venv-oldest/bin/python -m pytest -n 2 -q -m "not slow" --durations=5 $(OLDEST_TESTS)
