# Quick start: `make demo` (set up, then the governed end-to-end pipeline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export ZP_ASSETS ?= $(CURDIR)/.assets

.PHONY: setup demo demo-vision test test-all lock clean-demo
setup:
	bash scripts/setup.sh

demo: setup
	ZP_HOME=$${ZP_HOME:-$(CURDIR)/.zp-demo} $(PY) -m zeropoint.demo

demo-vision: setup
	bash scripts/demo_vision.sh

# The CI suite. Tests marked `slow` (real 30-layer SmolLM2 training/eval/export, vision training, a Ray head)
# are not bounded yet on 2 cores (minutes to tens of minutes each, mostly tinygrad kernel compilation):
# they run with `make test-all` until they are cut down to fit CI's budget.
test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Regenerate the hashed lock file from pyproject.toml (needs network to PyPI).
lock:
	$(PY) -m pip install -q pip-tools && $(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --extra test \
	  --no-emit-index-url --no-emit-find-links --strip-extras -o requirements.lock pyproject.toml

clean-demo:
	rm -rf .zp-demo
