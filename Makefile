# The two README commands (demo, test) and friends. Each creates .venv itself on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests and demo run on the CPU even where a GPU exists, and quietly.
export CUDA_VISIBLE_DEVICES ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo demo-vectors test test-fast bench bench-routing bench-people lint clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

PEOPLE_FIELDS := given_name,surname,street_number,address_1,suburb,postcode,state,date_of_birth

# Person records (generated, nothing downloaded) embedded in the job, matched, then scored.
demo: $(STAMP)
	$(PY) -m transforms.testing.people --mode link --entities 5000 --out demo_data/people --format csv --seed 0
	$(VENV)/bin/corpus-match --queries demo_data/people/a.csv --candidates demo_data/people/b.csv \
	    --id_field rec_id --text_fields $(PEOPLE_FIELDS) --output out/demo --overwrite --top_k 10 --runner FnApiRunner
	$(VENV)/bin/corpus-match evaluate --matches out/demo --truth demo_data/people/true_pairs.csv

# Precomputed vectors in parquet, 4 ScaNN shards.
demo-vectors: $(STAMP)
	$(PY) -m bench.make_demo_data --out demo_data/vectors
	$(VENV)/bin/corpus-match --queries 'demo_data/vectors/queries/*.parquet' \
	    --candidates 'demo_data/vectors/candidates/*.parquet' --output out/demo-vectors --overwrite --top_k 10 \
	    --num_shards 4 --runner FnApiRunner

test: $(STAMP)
	$(PY) -m pytest -q tests

# The tests that run no whole job (pytest marker `slow` marks those): a minute or two, for the edit loop.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) -m bench.ann_join --candidates 200000 --queries 20000

bench-routing: $(STAMP)
	$(PY) -m bench.routing --candidates 100000 --queries 5000

# 100k generated people per corpus; the issue's 1,000,000 records: python -m bench.people_job
bench-people: $(STAMP)
	$(PY) -m bench.people_job --entities 100000

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf out demo_data bench_out
