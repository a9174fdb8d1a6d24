# Two commands: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND := tensorflow

.PHONY: demo test install install-test lint preview constraints clean

# installs from the resolved set in constraints.txt (pyproject.toml holds the compatible ranges)
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

# the ray extra: tests/scale/test_ray.py launches Ray Train jobs on a local cluster
$(TEST_STAMP): $(STAMP) constraints.txt
	$(PIP) install --quiet -c constraints.txt -e ".[test,ray]"
	touch $@

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtl-keras train --recipe demo

# two pytest workers (pytest-xdist), a test file per worker: most of a test's time is single-threaded
# graph tracing, so two processes use both cores
test: $(TEST_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check mtl_keras recipes tests benchmarks
	$(VENV)/bin/ruff format --check mtl_keras recipes tests benchmarks

preview: $(STAMP)
	$(VENV)/bin/mtl-keras preview --out runs/preview.png

# re-resolve pyproject.toml's ranges (all extras) into constraints.txt, keeping its header; run it
# with Python 3.11 on linux x86_64, the platform the file is for
constraints: $(STAMP)
	$(PIP) install --quiet --dry-run --ignore-installed --report $(VENV)/resolve.json ".[test,ray]"
	grep '^#' constraints.txt > $(VENV)/constraints.txt
	$(PY) -c 'import json, sys; ms = [i["metadata"] for i in json.load(open(sys.argv[1]))["install"]]; \
	print("\n".join(sorted((m["name"] + "==" + m["version"] for m in ms if m["name"] != "mtl_keras"), key=str.lower)))' \
	$(VENV)/resolve.json >> $(VENV)/constraints.txt
	mv $(VENV)/constraints.txt constraints.txt

clean:
	rm -rf $(VENV) runs build *.egg-info
