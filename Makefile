# The two README commands (demo, test) and friends. Each creates .venv itself on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests and demo run on the CPU even where a GPU exists, and quietly.
export CUDA_VISIBLE_DEVICES ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test bench bench-routing lint clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bench.make_demo_data --out demo_data
	$(VENV)/bin/corpus-match --queries 'demo_data/queries/*.parquet' \
	    --candidates 'demo_data/candidates/*.parquet' --output out/demo --top_k 10 --num_shards 4

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m bench.ann_join --candidates 200000 --queries 20000

bench-routing: $(STAMP)
	$(PY) -m bench.routing --candidates 100000 --queries 5000

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out demo_data bench_out
