# The two set-up commands from the README: `make demo` and `make test`.
# Each creates .venv/ if missing and installs compt into it (editable, with dev extras).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.compt-installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/compt demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build src/*.egg-info
