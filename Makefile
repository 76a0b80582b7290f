# Setup is two commands: `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.leanrank-installed
LEANRANK_DATA ?= ../shared/data
export LEANRANK_DATA
export HF_HUB_OFFLINE := 1

.PHONY: demo test bench bench-quantize bench-prune bench-distill lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/leanrank demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

TEACHER := runs/teacher-homedepot-2/model/leanrank.json

# Real-data benchmarks; trains the teacher first when runs/ has none (`make teacher`, ~1 h on 2 CPUs).
bench: $(STAMP) $(TEACHER)
	$(PY) -m leanrank.bench.teacher --teacher runs/teacher-homedepot-2/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-teacher

bench-quantize: $(STAMP) $(TEACHER)
	$(PY) -m leanrank.bench.quantize --teacher runs/teacher-homedepot-2/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-quantize

bench-prune: $(STAMP) $(TEACHER)
	$(PY) -m leanrank.bench.prune --teacher runs/teacher-homedepot-2/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-prune

# ~1.5 h on 2 CPUs: teacher scores of 3000 train queries (cached), 9 ablation students, the main student
bench-distill: $(STAMP) $(TEACHER)
	$(PY) -m leanrank.bench.distill --teacher runs/teacher-homedepot-2/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-distill

$(TEACHER):
	$(MAKE) teacher

teacher: $(STAMP)
	# stage 1: 2,200 steps from MiniLM-L6 (lr 5e-5); stage 2: one more epoch from stage 1 (lr 4e-5, seed 1)
	$(VENV)/bin/leanrank train search --dataset homedepot --data-dir $(LEANRANK_DATA) \
		--out runs/teacher-homedepot --epochs 1 --lr 5e-5 --eval-every 1000 --valid-queries 200 \
		--checkpoint-every 100 --precision fp32 --max-steps 2200 --resume
	$(VENV)/bin/leanrank train search --dataset homedepot --data-dir $(LEANRANK_DATA) \
		--init runs/teacher-homedepot/model --out runs/teacher-homedepot-2 --epochs 1 --lr 4e-5 --seed 1 \
		--eval-every 1500 --valid-queries 200 --checkpoint-every 100 --precision fp32 --resume

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

lint: $(STAMP)
	$(VENV)/bin/ruff check leanrank tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
