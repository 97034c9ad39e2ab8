# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job on the embedded default model and data
#   make test   set up .venv and run the tests
# Both create .venv only when missing and reinstall only when pyproject.toml changed.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.espzoo-installed
FRONTEND_PKGS := espnet-s3prl==2026.5.14 openai-whisper==20250625 tiktoken==0.14.0 transformers==5.24.0 \
	tokenizers==0.23.3 safetensors==0.8.0

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# pip 23 as shipped: newer pips refuse espnet's dependency ci_sdr (it names a git URL in an extra).
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@# The ssl and whisper extras (pyproject), for their tests, without their dependencies: with them pip takes
	@# setuptools 81 (ESPnet pins <74). What they import beyond ESPnet's own dependencies is listed, pinned.
	$(PY) -m pip install --disable-pip-version-check -q --no-deps $(FRONTEND_PKGS)
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check zoo cli tests bench scripts
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test,bench]'
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info tests/.fixtures
