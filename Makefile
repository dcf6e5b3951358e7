# Two entry points for a fresh machine (see README):
#   make demo   set up, fetch the embedded default data, pre-train the tiny English-centric base, build the Korean
#               tokenizer, train all seven stages
#   make test   set up and run the test suite
PY := .venv/bin/python
# CPU-only machines: torch==2.13.0 is a local CPU build (an unpinned torch pulls GBs of CUDA wheels).
# GPU users: create .venv with your CUDA build of torch first; `make setup` then keeps it.
TORCH ?= torch==2.13.0
# PyTorch's CPU allocator backs large tensors with transparent huge pages (the kernel's `madvise` mode): far fewer
# page faults when [tokens x vocab] logits are allocated and freed every step; on 2 CPU cores a demo step takes ~40 %
# less time (docs/timing.md). Host memory only; it changes no result. THP_MEM_ALLOC_ENABLE=0 turns it off.
export THP_MEM_ALLOC_ENABLE ?= 1

# llama.cpp's Python binding for `python -m eeve.export gguf` and tests/test_gguf.py (docs/gguf.md): compiled from the
# pinned sdist (about 25 minutes on 2 cores), CPU only and portable, without server, tools or examples. The wheel is
# kept in ~/.cache/eeve/wheels (WHEELS=...), so a fresh clone or venv installs it in seconds.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
WHEELS ?= $(HOME)/.cache/eeve/wheels   # outside the checkout: a fresh clone on the same machine reuses the build

.PHONY: setup demo test data base tokenizer train gguf
setup: .venv/.installed
.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,eval]"
	touch $@

gguf: .venv/.gguf
.venv/.gguf: .venv/.installed
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(PY) -m pip wheel -q --no-deps -w $(WHEELS) "llama-cpp-python==$(LLAMA_CPP_PYTHON)"
	$(PY) -m pip install -q --find-links $(WHEELS) -e ".[gguf]"
	touch $@

data: setup
	$(PY) -m eeve.demo.data

base: data
	$(PY) -m eeve.demo.tiny_base

tokenizer: data
	$(PY) tokenize.py

train: base tokenizer
	$(PY) train.py stage=all model=tiny_pretrained

demo: train

# the suite on one pytest-xdist worker per core, as plain `pytest` runs it (pyproject.toml; TEST_WORKERS=0: one process)
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: setup data
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal
