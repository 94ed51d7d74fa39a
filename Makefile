# Two commands on a fresh clone:
#   make repro   # set up .venv, initialise DVC, run the whole pipeline (gan repro: dvc repro on one local Ray)
#   make test    # set up .venv, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: repro test lint install retrain clean-outputs

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	# plain pip on purpose: it takes the torch wheels from local disk
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

.dvc/config:
	test -d .git || git init -q
	$(BIN)/dvc init -q || true
	$(BIN)/dvc config core.autostage true
	$(BIN)/dvc config core.analytics false

repro: $(STAMP) .dvc/config
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/gan repro

retrain: $(STAMP) .dvc/config
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/gan retrain

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

lint: $(STAMP)
	$(BIN)/ruff check gan pipelines tests bench
