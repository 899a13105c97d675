# Scripts to rule them all. Every target creates and uses .venv on its own.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lint format test reliability demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

lint: install  ## ruff + mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint  ## lint, then the whole test suite (real redis-server processes)
	$(BIN)/pytest

reliability: install  ## the reliability suite alone (a longer model-based run), its figures in reliability.json
	FKS_RELIABILITY_JSON=reliability.json FKS_MODEL_EXAMPLES=40 FKS_MODEL_STEPS=25 \
		FKS_FUZZ_SEED=random FKS_FUZZ_FILES=20000 FKS_HA_ROUNDS=5 FKS_TRAVEL_ROUNDS=10 \
		FKS_MEMORY_SWAPS=1000 FKS_BAD_MESSAGES=10000 FKS_CLIENT_KILLS=100 FKS_SIGSTOP_SECONDS=10 \
		FKS_MODEL_SEED=random $(BIN)/pytest -m reliability

demo: install  ## the main job: embedded Redis + server + trainer, live swaps
	$(BIN)/fks demo

bench: install  ## benchmarks: tables on stdout, docs/BENCHMARKS.md
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
