# The two set-up commands from the README: `make demo` and `make test`.
# Each creates .venv/ if missing and installs compt into it (editable): `make demo` with what the demos need
# (the `lm` extra, for `compt demo --lm`), `make test` with the dev extras (lm-eval, clip_benchmark, wandb, pytest,
# ruff: the test suite and the commands that use them).
VENV       := .venv
PY         := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.compt-demo
DEV_STAMP  := $(VENV)/.compt-dev

.PHONY: demo test lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[lm]'
	touch $@

# dev includes lm: a venv made for the tests also serves the demo
$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/compt demo

test: $(DEV_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build src/*.egg-info
