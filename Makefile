# The two commands of the README: `make demo` and `make test`. Everything installs into .venv/.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Exact versions of every dependency live in constraints.txt. An empty PIP_FIND_LINKS keeps pip away
# from a local folder of CPU-only torch wheels that breaks torchvision (see DEVELOPERS.md).
PIP_INSTALL := PIP_FIND_LINKS=" " $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test install lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	@echo "Installing oml and its pinned dependencies into $(VENV)/ (the first time takes a few minutes)..."
	$(PIP_INSTALL) -e ".[all,test]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m oml.demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info
