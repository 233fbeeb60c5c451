# Two commands for a fresh machine with Python >= 3.10 and make:
#   make train   -> creates .venv if missing, installs petloc with the locked dependencies, trains
#   make test    -> same bootstrap, then the whole test suite (what CI runs)
#   make test-fast -> the developer's tier: every test not marked slow (pyproject.toml's markers)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test test-fast lint venv clean

# Re-installs only when pyproject.toml, setup.py or the lock changed since the last install
# (idempotent, fast otherwise). requirements.lock: the exact tested versions (pyproject.toml: ranges).
$(STAMP): pyproject.toml setup.py requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/python -c "import petloc, timm, torchvision, lightning, albumentations, hydra; print('petloc stack OK: timm', timm.__version__)"
	touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(BIN)/petloc-train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# No subprocess, sweep, DDP or kill test and no training beyond the shared tiny run: minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# ruff's rules and format, then import-linter's contracts (pyproject.toml: no import circle, the layers).
lint: $(STAMP)
	$(BIN)/ruff check petloc tests scripts
	$(BIN)/ruff format --check petloc tests scripts
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .cache outputs
