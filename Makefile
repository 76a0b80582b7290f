# Setup is two commands: `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.leanrank-installed
LEANRANK_DATA ?= ../shared/data
export LEANRANK_DATA
export HF_HUB_OFFLINE := 1

.PHONY: demo test teacher teacher-stage1 teacher-stages bench bench-report bench-quantize bench-prune bench-distill bench-rec bench-rec-compress bench-serve lint clean recbole-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/leanrank demo

# The report test renders report.html in Debian's headless Chromium; as root, install it when missing.
test: $(STAMP)
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "note: chromium could not be installed; the HTML render test will skip"
	$(PY) -m pytest -m "not slow" -q

TEACHER := runs/teacher-homedepot-3/model/leanrank.json
STAGE1 := runs/teacher-homedepot/model/leanrank.json
STAGES := runs/teacher-homedepot-2/model/leanrank.json

# Real-data benchmarks; trains the teacher first when runs/ has none (`make teacher`, ~1 h on 2 CPUs).
bench: $(STAMP) $(TEACHER)
	$(PY) -m leanrank.bench.teacher --teacher runs/teacher-homedepot-3/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-teacher

bench-quantize: $(STAMP) $(STAGE1)
	$(PY) -m leanrank.bench.quantize --teacher runs/teacher-homedepot/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-quantize

bench-prune: $(STAMP) $(STAGE1)
	$(PY) -m leanrank.bench.prune --teacher runs/teacher-homedepot/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-prune

# ~1.5 h on 2 CPUs: teacher scores of 3000 train queries (cached), 9 ablation students, the main student
bench-distill: $(STAMP) $(STAGES)
	$(PY) -m leanrank.bench.distill --teacher runs/teacher-homedepot-2/model --data-dir $(LEANRANK_DATA) \
		--out benchmarks/results/homedepot-distill

# Sequential-recommendation teachers vs the RecBole SASRec peer (built in .venv-recbole), side by side
# on one thread each with the same training budget: ~25 min (Beauty) + ~30 min (Sports) on 2 CPUs.
REC_MINUTES ?= 20
bench-rec: $(STAMP)
	$(PY) -m leanrank.bench.rec --dataset beauty --data-dir $(LEANRANK_DATA) --minutes $(REC_MINUTES) \
		--out benchmarks/results/beauty-teacher
	$(PY) -m leanrank.bench.rec --dataset sports --data-dir $(LEANRANK_DATA) --minutes $(REC_MINUTES) \
		--out benchmarks/results/sports-teacher

# Beauty teacher's item table compressed (int8/int4/low-rank), and its students: folded (item vectors as one table,
# last block kept) and hidden-32, with ablations (~45 min; --skip-compress / --skip-distill for one file).
bench-rec-compress: $(STAMP)
	test -f runs/rec-bench/beauty/teacher/model/config.json || $(PY) -m leanrank.bench.rec --dataset beauty \
		--data-dir $(LEANRANK_DATA) --minutes $(REC_MINUTES) --out benchmarks/results/beauty-teacher
	$(PY) -m leanrank.bench.rec_compress --teacher runs/rec-bench/beauty/teacher/model --data-dir $(LEANRANK_DATA) \
		--out-dir benchmarks/results

# `leanrank serve` on the Home Depot catalog under `leanrank loadtest` (locust): two distilled students
# (ORT int8, attention-fused) at concurrency 4, overload of the first (the better-ranking 2x256), then
# the fp32 teacher (~20 min on 2 CPUs). The students: the homedepot recipe's 2x256 (`make bench-report`) and a 2x128 distilled here
# (~45 min, reusing the recipe's cached teacher scores). SERVE_ARGS adds options, e.g.
# SERVE_ARGS="--catalog synthetic --requests 20 --overload-requests 60" for a check.
SERVE_ARGS ?=
SV := runs/serve-variants
bench-serve: $(STAMP) $(SV)/student-2x128-int8/model.onnx $(SV)/student-2x256-int8/model.onnx
	$(PY) -m leanrank.bench.serve_loadtest --data-dir $(LEANRANK_DATA) \
		--compressed $(SV)/student-2x256-int8 --compressed-name student-2x256-ort-int8 \
		--extra student-2x128-ort-int8=$(SV)/student-2x128-int8 \
		--teacher runs/teacher-homedepot/model --out benchmarks/results/serve-loadtest $(SERVE_ARGS)

$(SV)/student-2x256-int8/model.onnx: $(STAMP)
	test -f runs/recipe-homedepot/student/model/leanrank.json || $(MAKE) bench-report
	$(VENV)/bin/leanrank export runs/recipe-homedepot/student/model --out $(SV)/student-2x256-onnx \
		--dataset homedepot --data-dir $(LEANRANK_DATA) --overwrite
	$(VENV)/bin/leanrank quantize $(SV)/student-2x256-onnx --scheme ort-int8-dynamic --overwrite \
		--out $(SV)/student-2x256-int8 --dataset homedepot --data-dir $(LEANRANK_DATA)

$(SV)/student-2x128-int8/model.onnx: $(STAMP)
	test -f runs/teacher-homedepot/model/leanrank.json || $(MAKE) teacher-stage1
	mkdir -p runs/student-2x128
	test -d runs/student-2x128/transfer || ! test -d runs/recipe-homedepot/student/transfer || \
		cp -r runs/recipe-homedepot/student/transfer runs/student-2x128/
	$(VENV)/bin/leanrank distill runs/teacher-homedepot/model --out runs/student-2x128 \
		--config recipes/distill-2x128.yaml --dataset homedepot --data-dir $(LEANRANK_DATA) --resume
	$(VENV)/bin/leanrank export runs/student-2x128/model --out $(SV)/student-2x128-onnx \
		--dataset homedepot --data-dir $(LEANRANK_DATA) --overwrite
	$(VENV)/bin/leanrank quantize $(SV)/student-2x128-onnx --scheme ort-int8-dynamic --overwrite \
		--out $(SV)/student-2x128-int8 --dataset homedepot --data-dir $(LEANRANK_DATA)

# Issue 7's side-by-side reports from the recipes (resumable; finished steps are skipped):
# benchmarks/results/homedepot-bench.* (~1.5 h after the stage-1 teacher) and beauty-bench.* (~30 min).
bench-report: $(STAMP)
	test -f runs/teacher-homedepot/model/leanrank.json || $(MAKE) teacher-stage1
	$(VENV)/bin/leanrank run recipes/homedepot.yaml --data-dir $(LEANRANK_DATA)
	$(VENV)/bin/leanrank run recipes/beauty.yaml --data-dir $(LEANRANK_DATA)

$(TEACHER):
	$(MAKE) teacher

$(STAGE1):
	$(MAKE) teacher-stage1

$(STAGES):
	$(MAKE) teacher-stages

# Issue 3's teacher: one run from MiniLM-L6, BCE + listwise softmax over each query's judged products,
# 7 BM25 negatives (from its top 100) and 1 random one; 5,600 steps (~1.3 epochs), about 1 h 5 min on 2 CPUs.
teacher: $(STAMP)
	$(VENV)/bin/leanrank train search --dataset homedepot --data-dir $(LEANRANK_DATA) \
		--out runs/teacher-homedepot-3 --loss bce+listwise --bm25-negatives 7 --bm25-depth 100 \
		--random-negatives 1 --epochs 2 --max-steps 5600 --lr 5e-5 --eval-every 1400 --valid-queries 200 \
		--checkpoint-every 200 --precision fp32 --resume
	# the label map for RMSE: isotonic (5-fold CV RMSE on validation 0.4745 vs Platt's 0.4797); ranking unchanged
	$(VENV)/bin/leanrank train calibrate runs/teacher-homedepot-3/model --dataset homedepot \
		--data-dir $(LEANRANK_DATA) --method isotonic

# The earlier two-stage BCE teacher. Stage 1 (runs/teacher-homedepot) is the teacher of the quantization,
# pruning, recipe and serving benchmarks; stage 2 (runs/teacher-homedepot-2) of the distillation benchmark.
teacher-stage1: $(STAMP)
	# 2,200 steps from MiniLM-L6 (lr 5e-5)
	$(VENV)/bin/leanrank train search --dataset homedepot --data-dir $(LEANRANK_DATA) \
		--out runs/teacher-homedepot --epochs 1 --lr 5e-5 --eval-every 1000 --valid-queries 200 \
		--checkpoint-every 100 --precision fp32 --max-steps 2200 --resume

teacher-stages: teacher-stage1
	# one more epoch from stage 1 (lr 4e-5, seed 1)
	$(VENV)/bin/leanrank train search --dataset homedepot --data-dir $(LEANRANK_DATA) \
		--init runs/teacher-homedepot/model --out runs/teacher-homedepot-2 --epochs 1 --lr 4e-5 --seed 1 \
		--eval-every 1500 --valid-queries 200 --checkpoint-every 100 --precision fp32 --resume
