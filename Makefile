# The README's commands. `make train` and `make test` each set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= configs/ml1_reach_maml_trpo.yaml

.PHONY: setup train test test-slow test-ray bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

train: setup
	$(VENV)/bin/metarl train $(PRESET)

# two test processes (pytest-xdist): the suite is mostly single-threaded subprocesses and training loops
test: setup
	$(PY) -m pytest -q -n 2

test-slow: setup
	$(PY) -m pytest -q -m slow

# the Ray backend's tests (tests/test_ray.py) in a venv of their own (.venv-ray), so that .venv
# stays what CI installs (no Ray): a check that passes only with the extra present fails in CI
RAY_VENV := .venv-ray
test-ray:
	$(MAKE) setup VENV=$(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[ray]'
	$(RAY_VENV)/bin/python -m pytest -q -m ray

bench: setup
	$(VENV)/bin/metarl bench run $(PRESET) --seeds 1

clean:
	rm -rf $(VENV) $(RAY_VENV) *.egg-info .pytest_cache
