# Two entry points for a fresh machine (see README):
#   make demo   set up, fetch the embedded default data, pre-train the tiny English-centric base, build the Korean
#               tokenizer, train all seven stages
#   make test   set up and run the test suite
PY := .venv/bin/python
# CPU-only machines: torch==2.13.0 is a local CPU build (an unpinned torch pulls GBs of CUDA wheels).
# GPU users: create .venv with your CUDA build of torch first; `make setup` then keeps it.
TORCH ?= torch==2.13.0

.PHONY: setup demo test data base tokenizer train
setup: .venv/.installed
.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,eval]"
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

test: setup data
	$(PY) -m pytest
