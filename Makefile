# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job on the embedded default model and data
#   make test   set up .venv and run the tests
# Both create .venv only when missing and reinstall only when pyproject.toml changed.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.espzoo-installed

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# pip 23 as shipped: newer pips refuse espnet's dependency ci_sdr (it names a git URL in an extra).
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
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
