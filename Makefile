# Scripts to rule them all. Every target creates and uses .venv on its own.
#
# .venv holds exactly what requirements.lock names (uv pip sync), then the project itself,
# editable, with no dependency resolution at all. `make lock` refreshes the lock on purpose;
# `make test-latest` runs the suite on the newest releases instead (a scratch venv), the way
# to find the next lock. docs/development.md says when to use which.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
# torch: the CPU build that lies on this machine's disk (/opt/wheels); a plain `torch` is a
# multi-GB CUDA build. Elsewhere give uv the PyTorch CPU index:
#   UV_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make install
TORCH_PIN := torch==2.13.0
# uv reads no pip.conf: hand it the wheel folder pip is told of, when there is one
FIND_LINKS := $(if $(PIP_FIND_LINKS),$(PIP_FIND_LINKS),$(wildcard /opt/wheels))
UV_FLAGS   := --quiet $(if $(FIND_LINKS),--find-links $(FIND_LINKS))
UV_VERSION := $(shell sed -n 's/^uv==\([^ ]*\).*/\1/p' $(LOCK))
LATEST := .venv-latest
# make test runs the suite on this many workers (pytest-xdist); TEST_WORKERS=0 runs it in one
TEST_WORKERS ?= 3

.PHONY: install lint format docs test test-latest reliability demo bench lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	touch $(STAMP)

# Synced on every call (about 1 s when nothing moved), so a package installed or changed by
# hand inside .venv is put back, not hidden behind the stamp. --compile-bytecode: uv writes
# no .pyc by default, and without them every process compiles torch's sources again on import
# (2.9 s of CPU instead of 1.4 s on the 2-core machine; each node and trainer pays it).
install: $(STAMP)  ## .venv: exactly the lock, then the project (editable)
	$(BIN)/uv pip sync $(UV_FLAGS) --compile-bytecode --python $(BIN)/python $(LOCK)
	$(BIN)/uv pip install $(UV_FLAGS) --python $(BIN)/python --no-deps --no-build-isolation -e .

lint: install  ## ruff + mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The documentation site of docs/ (mkdocs.yml): --strict fails on a broken link, anchor or
# moved Python name. `$(BIN)/mkdocs serve` serves it with live reload while you write.
docs: install  ## build the documentation site into .site (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site

test: lint docs  ## lint, the docs site, then the whole test suite (real redis-server processes)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# The newest release of every dependency (torch excepted: see TORCH_PIN), in a scratch venv:
# lint and the suite, but not the check that .venv matches the lock.
test-latest: install  ## the suite on the newest releases, without the lock
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	echo '$(TORCH_PIN)' > $(LATEST)/pins.txt
	$(BIN)/uv pip install $(UV_FLAGS) --python $(LATEST)/bin/python --refresh \
		-c $(LATEST)/pins.txt -e '.[dev]'
	$(LATEST)/bin/uv pip freeze --python $(LATEST)/bin/python > $(LATEST)/freeze.txt
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/ruff format --check .
	$(LATEST)/bin/mypy --cache-dir $(LATEST)/mypy-cache
	$(LATEST)/bin/pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal --ignore=tests/test_lock.py

# Re-resolve every dependency to its newest release the ranges of pyproject.toml allow.
# KEEP=1 keeps every pin that still fits and only adds what is new (after adding a dependency).
lock:  ## refresh requirements.lock (deliberately: then make test, and commit it)
	@test -x $(BIN)/uv || $(MAKE) install
	echo '$(TORCH_PIN)' > $(VENV)/lock-pins.txt
	$(BIN)/uv pip compile $(UV_FLAGS) $(if $(KEEP),,--upgrade) --python $(BIN)/python \
		--extra dev --extra demo --extra s3 \
		--no-emit-find-links --no-emit-index-url -c $(VENV)/lock-pins.txt \
		--custom-compile-command 'make lock' -o $(LOCK) pyproject.toml

reliability: install  ## the reliability suite alone (a longer model-based run), its figures in reliability.json
	FKS_RELIABILITY_JSON=reliability.json FKS_MODEL_EXAMPLES=40 FKS_MODEL_STEPS=25 \
		FKS_FUZZ_SEED=random FKS_FUZZ_FILES=20000 FKS_HA_ROUNDS=5 FKS_TRAVEL_ROUNDS=10 \
		FKS_MEMORY_SWAPS=1000 FKS_BAD_MESSAGES=10000 FKS_CLIENT_KILLS=100 FKS_SIGSTOP_SECONDS=10 FKS_LOAD_PUBLICATIONS=500 \
		FKS_MODEL_SEED=random FKS_BENCH_SKIP= $(BIN)/pytest -m reliability

demo: install  ## the main job: embedded Redis + server + trainer, live swaps
	$(BIN)/fks demo

bench: install  ## benchmarks: tables on stdout, docs/BENCHMARKS.md
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(LATEST) .site .pytest_cache .mypy_cache .ruff_cache *.egg-info
