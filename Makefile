# Quick start: `make demo` (set up, then the governed end-to-end pipeline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export ZP_ASSETS ?= $(CURDIR)/.assets

.PHONY: setup demo demo-vision test test-fast lock clean-demo
setup:
	bash scripts/setup.sh

demo: setup
	ZP_HOME=$${ZP_HOME:-$(CURDIR)/.zp-demo} $(PY) -m zeropoint.demo

demo-vision: setup
	bash scripts/demo_vision.sh

# The CI suite: every test, the `slow` ones included (real SmolLM2 weights, real training, a Ray head, a browser),
# each bounded. Most of a test's time is single-threaded (tinygrad's Python graph building and one clang compile
# at a time), so pytest-xdist gives each core its own worker; --dist loadfile keeps a module's fixtures (a loaded model) in one worker. TEST_WORKERS=1 runs serially.
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

# Only the fast tests (no real-model weights or real training): a quick local loop.
test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

# Regenerate the hashed lock file from pyproject.toml (needs network to PyPI).
lock:
	$(PY) -m pip install -q pip-tools && $(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --extra test \
	  --no-emit-index-url --no-emit-find-links --strip-extras -o requirements.lock pyproject.toml
	$(PY) scripts/lock_extras.py requirements.lock

clean-demo:
	rm -rf .zp-demo
