# The two commands of the README. Both set everything up first (bin/setup is
# idempotent), then run.
PY := .venv/bin/python
GIN ?= gin_configs/soft_iep.gin

.PHONY: setup train test test-all
setup:
	@bin/setup

train: setup
	$(PY) bin/train --gin_file=$(GIN) $(ARGS)

# The suite (without the runs marked slow) on both cores.
test: setup
	$(PY) -m pytest -n 2 -q -m "not slow" --durations=15 tests

test-all: setup
	$(PY) -m pytest -n 2 -q tests
