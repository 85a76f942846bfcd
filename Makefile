# defuse: the two commands a newcomer needs are `make demo` and `make test`.
# Both create .venv if it is missing and install defuse into it; torch is installed first, pinned to the
# CPU build this project tests on, so that pip does not pull a multi-gigabyte CUDA build.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test test-quick lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The embedded benchmark grid (configs/demo.yaml): every scenario with its defenses; prints the tables and
# where the report is. Finished cells under runs/demo are reused, so a second `make demo` is quick.
demo: $(STAMP)
	$(BIN)/defuse bench configs/demo.yaml --out runs/demo --jobs 2

# The whole suite (what CI runs). `make test-quick` leaves out the tests marked `slow` (those that train a
# model end to end, tens of seconds each): every other test, in about two minutes on two cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
