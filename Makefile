# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job on the embedded default model and data
#   make test   set up .venv and run the tests
# Both create .venv only when missing (or when PYTHON= names another Python) and reinstall only when pyproject.toml
# changed.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.espzoo-installed
# Which Python: the one PYTHON= names; else the one an existing $(VENV) was made with; else the newest supported
# one found here (scripts/pick_python.sh: 3.13, 3.12, 3.11). The venv records its Python (its base prefix and
# version, read from the venv's own interpreter) and is made afresh when PYTHON names another.
PYTHON_ID = import sys; print(sys.base_prefix, *sys.version_info[:3])
HAVE := $(shell $(PY) -c '$(PYTHON_ID)' 2>/dev/null)
ifeq ($(origin PYTHON),undefined)
PYTHON := $(if $(HAVE),$(PY),$(shell scripts/pick_python.sh))
endif
WANT := $(shell $(PYTHON) -c '$(PYTHON_ID)' 2>/dev/null)
ifneq ($(WANT),$(HAVE))
$(shell rm -f $(STAMP))
endif
# What the ssl and whisper extras import beyond ESPnet's own dependencies (espnet 202511's bring regex,
# more-itertools and protobuf; 202611's do not), pinned.
FRONTEND_PKGS := espnet-s3prl==2026.5.14 openai-whisper==20250625 tiktoken==0.14.0 transformers==5.24.0 \
	tokenizers==0.23.3 safetensors==0.8.0 regex==2026.11.19 more-itertools==11.2.1 protobuf==7.36.2

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -n "$(WANT)" || { echo "PYTHON=$(PYTHON) does not run; name a Python 3.11-3.13 with PYTHON=" >&2; exit 1; }
	@if [ "$$($(PY) -c '$(PYTHON_ID)' 2>/dev/null)" != "$(WANT)" ]; then \
		echo "making $(VENV) with Python $(WANT)"; rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	@# The pip each Python ships (23 on 3.11 and 3.12, 24 on 3.13): newer pips refuse espnet 202511's dependency
	@# ci_sdr (it names a git URL in an extra); espnet 202611 asks for ci_sdr only in its `enh` extra.
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@# The ssl and whisper extras (pyproject), for their tests, without their dependencies: with them pip takes
	@# setuptools 81 (ESPnet 202511 pins <74). What they import beyond ESPnet's own dependencies is listed, pinned.
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
	rm -rf $(VENV) .venv-* build *.egg-info tests/.fixtures
