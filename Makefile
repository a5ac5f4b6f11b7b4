# starscale — see README.md. Every target that runs Python installs the venv first when needed.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
REQS := requirements/common.txt requirements/cpu.txt requirements/horovod.txt requirements/dev.txt \
	requirements/constraints.txt setup.py
# The stamp is keyed on the requirements' content: a second `make setup` is a no-op.
STAMP := $(VENV)/.setup-$(shell cat $(REQS) | sha256sum | cut -c1-16)
HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
# The GPU stack lives in its own venv with its own stamp (make setup-gpu), so the CPU `setup`
# never replaces it. GPU=1, or a CONF naming conf/gpu.yaml, makes full-data-train, package,
# package-env, doctor, gpu-check and gpu-smoke use it.
GPU ?=
CONF ?= conf/cluster.yaml$(if $(filter 1,$(GPU)), conf/gpu.yaml)
# GPU_DRILL=1: conf/gpu.yaml's GPU scheduling on CPU hosts (train.gpu_drill): the CPU stack,
# every rank takes the GPU address Spark assigned while TensorFlow stays on the CPU.
GPU_DRILL ?=
USE_GPU := $(if $(GPU_DRILL),,$(if $(or $(filter 1,$(GPU)),$(findstring gpu.yaml,$(CONF))),1))
VENV_GPU := .venv-gpu
GPU_REQS := requirements/common.txt requirements/gpu.txt requirements/horovod.txt requirements/dev.txt \
	requirements/constraints.txt setup.py
GPU_STAMP := $(VENV_GPU)/.setup-gpu-$(shell cat $(GPU_REQS) | sha256sum | cut -c1-16)
STACK_SETUP := $(if $(USE_GPU),setup-gpu,setup)
STACK_BIN := $(if $(USE_GPU),$(abspath $(VENV_GPU))/bin,$(BIN))
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

DATA ?= synthetic
REAL_DATA ?= ../shared/data/amazon_reviews_us_Digital_Software_v1_00.tsv.gz
DEMO_CONF := --conf conf/local.yaml --conf conf/demo.yaml
STARSCALE := $(BIN)/python -m starscale

.PHONY: setup setup-gpu constraints doctor test test-fast demo study-real full-data-train package package-env gpu-check gpu-smoke bench bench-scale cluster-up cluster-down clean help mlflow-ui mlflow-ui-setup tensorboard
help:
	@echo "make setup | setup-gpu | doctor [GPU=1] | test | test-fast | demo [DATA=real] | package | package-env | full-data-train [GPU=1] | gpu-check [GPU=1] | clean"

setup: $(STAMP)

$(STAMP): $(REQS)
	@command -v $(PY) >/dev/null || { echo "make setup: $(PY) not found (starscale needs Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q pip==24.3.1
	$(BIN)/pip install -q -c requirements/constraints.txt -r requirements/cpu.txt -r requirements/dev.txt
	@# horovod compiles against the installed TensorFlow: no build isolation, no cached wheel
	@# (a wheel cached for another TF build would load with an ABI mismatch).
	@# Rebuild it whenever the TensorFlow it was built against changed.
	tf=$$($(BIN)/python -c "from importlib.metadata import version as v; print(v('tensorflow-cpu'))"); \
	if [ "$$(cat $(VENV)/.horovod-built-for 2>/dev/null)" != "$$tf" ]; then \
		PATH=$(BIN):$$PATH $(HOROVOD_ENV) $(BIN)/pip install -q --no-build-isolation --no-cache-dir \
			--force-reinstall --no-deps -r requirements/horovod.txt && echo "$$tf" > $(VENV)/.horovod-built-for; \
	fi
	$(BIN)/pip install -q -c requirements/constraints.txt -r requirements/horovod.txt
	$(BIN)/pip install -q --no-deps -e .
	@rm -f $(VENV)/.setup-*
	@touch $@
	@echo "setup done: $(VENV)"

# A GPU node: the CUDA TensorFlow build and horovod with NCCL in .venv-gpu (docs/install.md).
# Its own stamp; the CPU `setup` never touches .venv-gpu. The prerequisites are checked first,
# before the downloads: an nvcc for the CUDA 12.2 stack (CUDA_HOME=<toolkit root>, else nvcc on
# PATH, else /usr/local/cuda; GPU_CUDA13=1 accepts CUDA 13 for drivers >= 580), a host compiler
# it accepts (CUDAHOSTCXX), free disk; a missing one stops make with one line. horovod's build
# log: build/setup-gpu/horovod-build.log. GPU_CC_LIST=80,90 limits the GPUs compiled for.
GPU_BUILD := build/setup-gpu
# $(shell) does not see variables given on make's command line (GNU make < 4.4): pass them on.
GPU_CHECK_CMD = if $(PY) -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))" 2>/dev/null; then \
	CUDA_HOME="$(CUDA_HOME)" GPU_CUDA13="$(GPU_CUDA13)" GPU_CC_LIST="$(GPU_CC_LIST)" CUDAHOSTCXX="$(CUDAHOSTCXX)" \
	$(PY) lib/starscale/gpustack.py check \
	$(VENV_GPU) $(GPU_BUILD) $(GPU_BUILD)/env 2>&1 || echo FAILED; \
	else echo "make setup-gpu: $(PY) is not a working Python 3.11 (set PY=<python3.11>) FAILED"; fi
# make -n prints the recipe without the check (which compiles a kernel and may stop make).
DRY_RUN = $(findstring n,$(firstword -$(MAKEFLAGS)))
setup-gpu: $(GPU_STAMP)

$(GPU_STAMP): $(GPU_REQS)
	$(if $(DRY_RUN),,$(eval GPU_CHECK := $(shell $(GPU_CHECK_CMD))))
	$(if $(filter FAILED,$(GPU_CHECK)),$(error $(filter-out FAILED,$(GPU_CHECK))))
	@echo "$(GPU_CHECK)"
	@test -x $(VENV_GPU)/bin/python || $(PY) -m venv $(VENV_GPU)
	$(VENV_GPU)/bin/pip install -q pip==24.3.1
	$(VENV_GPU)/bin/pip install -q -c requirements/constraints.txt -r requirements/gpu.txt -r requirements/dev.txt
	@echo "setup-gpu: building horovod with CUDA and NCCL (log: $(GPU_BUILD)/horovod-build.log)"
	@$(VENV_GPU)/bin/python lib/starscale/gpustack.py build-horovod $(VENV_GPU) requirements/horovod.txt \
		$(GPU_BUILD)/env $(GPU_BUILD)
	$(VENV_GPU)/bin/pip install -q -c requirements/constraints.txt -r requirements/horovod.txt
	$(VENV_GPU)/bin/python -c "from importlib.metadata import version as v; print(v('tensorflow'))" \
		> $(VENV_GPU)/.horovod-built-for
	cp $(GPU_BUILD)/env $(VENV_GPU)/.horovod-built-with
	$(VENV_GPU)/bin/pip install -q --no-deps -e .
	@rm -f $(VENV_GPU)/.setup-gpu-*
	@touch $@
	@echo "setup-gpu done: $(VENV_GPU)"

# Regenerate the transitive pins from the current venv.
constraints: setup
	(head -2 requirements/constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -i -E "^(horovod|starscale)") > requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt

# Which stack (tensorflow-cpu or the CUDA tensorflow build), GPUs visible, horovod's Gloo/NCCL.
doctor: $(STACK_SETUP)
	@$(STACK_BIN)/python -c "import sys; print('python', sys.version.split()[0], sys.prefix)"
	@java -version 2>&1 | head -1
	@$(STACK_BIN)/python -c "from starscale.storage import versions; import json; print(json.dumps(versions(), indent=1))"
	@$(STACK_BIN)/python -c "from starscale.training.devices import stack_report; import json; print(json.dumps(stack_report(), indent=1))"
	@$(STACK_BIN)/horovodrun --check-build 2>/dev/null | sed -n '/Horovod v/,$$p'

# The tests' tiers (pytest.ini; README "Tests"). test: every tier, whole files spread over
# TEST_WORKERS processes (pytest-xdist; each its own Spark session). test-fast: the fast tier
# (no JVM: JAVA_HOME points nowhere, so a test that starts one fails), for the edit-run loop.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest tests -ra -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup
	JAVA_HOME=/nonexistent/test-fast-runs-no-jvm $(BIN)/python -m pytest tests -ra -m fast \
		-n $(TEST_WORKERS) $(PYTEST_ARGS)

# The experiment (every stage, sizes × samplers × models, then the report) in local mode:
# conf/demo.yaml says what is shrunk to fit 20 minutes on 2 cores. DEMO_ARGS: more options,
# e.g. DEMO_ARGS="--force sample" or DEMO_ARGS="--set tracking.enabled=false".
# It prints one line per stage and cell, the results table, the verdict and, last, the
# report's path (out/demo/report/index.html; DATA=real: out/demo-real/...).
DEMO_ARGS ?=
demo: setup
ifeq ($(DATA),real)
	@test -f $(REAL_DATA) || { echo "make demo DATA=real: $(REAL_DATA) not found (set REAL_DATA=path)"; exit 1; }
	$(STARSCALE) experiment $(DEMO_CONF) --set 'ingest.inputs=[$(abspath $(REAL_DATA))]' \
		--set run.output_dir=out/demo-real $(DEMO_ARGS)
else
	$(STARSCALE) experiment $(DEMO_CONF) $(DEMO_ARGS)
endif

# The experiment with the study's model sizes on the real file (issue 12; docs/results-digital-software.md).
study-real: setup
	@test -f $(REAL_DATA) || { echo "make study-real: $(REAL_DATA) not found (set REAL_DATA=path)"; exit 1; }
	$(STARSCALE) experiment --conf conf/local.yaml --conf conf/real.yaml \
		--set 'ingest.inputs=[$(abspath $(REAL_DATA))]' $(DEMO_ARGS)

# The experiment through spark-submit on a cluster. SPARK_MASTER empty: spark-submit's default
# (or what the cluster's spark-defaults.conf says); CONF: the overlays with paths and executors
# (GPU=1: conf/cluster.yaml conf/gpu.yaml on the GPU stack). The executors need no starscale
# install: their Python is the venv-pack archive (--archives ...#env, spark.python:
# ./env/bin/python) and our code the zip (--py-files).
# SHIP_ENV empty: no archive (conf/standalone.yaml: executors on this host use this venv).
SPARK_MASTER ?=
ARGS ?=
SHIP_ENV ?= $(if $(findstring standalone.yaml,$(CONF)),,1)
# The driver runs the venv's Python (pip pyspark's spark-submit finds SPARK_HOME through it).
# The driver JVM logs to out/logs/ (starscale's log4j2 file) until the job moves it to the run's log.
DRIVER_LOG_OPTS := -Dlog4j2.configurationFile=file:$(abspath lib/starscale/log4j2.properties) \
	-Dstarscale.log=$(abspath out/logs/spark-submit-driver.log)
# The command is echoed with secret values redacted (ARGS may carry --set ...secret.key=...).
SUBMIT = PYSPARK_DRIVER_PYTHON=$(STACK_BIN)/python $(STACK_BIN)/spark-submit $(if $(SPARK_MASTER),--master $(SPARK_MASTER)) \
		--driver-java-options "$(DRIVER_LOG_OPTS)" \
		$(if $(SHIP_ENV),--archives $(ENV_ARCHIVE)\#env) --py-files $(DIST)/starscale.zip \
		jobs/experiment.py $(foreach c,$(CONF),--conf $(c)) $(if $(GPU_DRILL),--set train.gpu_drill=true) $(ARGS)
full-data-train: $(STACK_SETUP) package $(if $(SHIP_ENV),package-env)
	@PYTHONPATH=$(abspath lib) $(STACK_BIN)/python -m starscale.config --redact-argv $(SUBMIT)
	@$(SUBMIT)

# DIST / PACKAGE_BUILD: where the zip and its staging folder go (tests build into their own).
DIST ?= dist
PACKAGE_BUILD ?= build/package
package: $(STACK_SETUP)
	rm -rf $(PACKAGE_BUILD) $(DIST)/starscale.zip && mkdir -p $(PACKAGE_BUILD) $(DIST)
	cp -r lib/starscale $(PACKAGE_BUILD)/starscale
	mkdir -p $(PACKAGE_BUILD)/starscale/conf && cp conf/*.yaml $(PACKAGE_BUILD)/starscale/conf/
	find $(PACKAGE_BUILD) -name __pycache__ -prune -exec rm -rf {} +
	cd $(PACKAGE_BUILD) && $(STACK_BIN)/python -m zipfile -c $(abspath $(DIST))/starscale.zip starscale
	@echo "$(DIST)/starscale.zip (for spark-submit --py-files)"

# The executors' Python: the stack's venv as a venv-pack archive (for --archives ENV_ARCHIVE#env),
# without starscale's own editable install (the code travels as the --py-files zip).
# venv-pack ships the venv's packages, not the interpreter: every node needs the same Python
# 3.11 at the path in the venv's pyvenv.cfg (docs/install.md). PACK_VENV: another venv to pack
# (the tests pack a tiny one). The CPU venv packs in minutes (docs/install.md has the time).
# The archive is named for the stack's requirements (the setup stamp's hash) and packed only
# when no archive of that name exists: a submit does not repack a multi-GB venv; a changed
# requirement gives a new name (older archives stay until make clean).
PACK_VENV ?= $(if $(USE_GPU),$(VENV_GPU),$(VENV))
ENV_ARCHIVE ?= $(DIST)/starscale-env-$(if $(USE_GPU),gpu-$(subst .setup-gpu-,,$(notdir $(GPU_STAMP))),cpu-$(subst .setup-,,$(notdir $(STAMP)))).tar.gz
package-env: $(STACK_SETUP)
	@if [ -s $(ENV_ARCHIVE) ]; then echo "$(ENV_ARCHIVE): packed already for these requirements"; else \
		$(STACK_BIN)/python -c "import venv_pack" 2>/dev/null || $(STACK_BIN)/pip install -q venv-pack==0.2.0; \
		mkdir -p $(dir $(ENV_ARCHIVE)) && \
		PYTHONPATH=$(abspath lib) $(STACK_BIN)/python -m starscale.packenv $(PACK_VENV) $(ENV_ARCHIVE).part.tar.gz && \
		mv $(ENV_ARCHIVE).part.tar.gz $(ENV_ARCHIVE); fi
	@echo "$(ENV_ARCHIVE) (for spark-submit --archives $(ENV_ARCHIVE)#env)"

clean:
	rm -rf out build dist report spark-warehouse .pytest_cache

# Tracking UIs, bound to 127.0.0.1. RUN_DIR: the experiment's run.output_dir (make demo: out/demo).
# mlflow-ui: the full MLflow server from its own venv (.venv-ui, requirements/ui.txt says why)
# on the file store the experiment writes (<RUN_DIR>/mlruns): runs, params, per-epoch LSTM
# metrics (epoch.loss, epoch.val_loss, ... as steps), the model and report as artifacts.
# tensorboard: rank 0's LSTM logs, one run per cell (<RUN_DIR>/checkpoints/lstm/<cell>/tensorboard).
RUN_DIR ?= out/demo
UI_VENV := .venv-ui
MLFLOW_PORT ?= 5000
TENSORBOARD_PORT ?= 6006
mlflow-ui-setup: $(UI_VENV)/.installed
$(UI_VENV)/.installed: requirements/ui.txt requirements/ui-constraints.txt
	@command -v $(PY) >/dev/null || { echo "make mlflow-ui: $(PY) not found"; exit 1; }
	@test -x $(UI_VENV)/bin/python || $(PY) -m venv $(UI_VENV)
	$(UI_VENV)/bin/pip install -q pip==24.3.1
	$(UI_VENV)/bin/pip install -q -c requirements/ui-constraints.txt -r requirements/ui.txt
	@touch $@
mlflow-ui: mlflow-ui-setup
	@test -d $(RUN_DIR)/mlruns || { echo "make mlflow-ui: $(RUN_DIR)/mlruns not found (run make demo, or RUN_DIR=<run.output_dir>)"; exit 1; }
	$(UI_VENV)/bin/mlflow ui --backend-store-uri file:$(abspath $(RUN_DIR))/mlruns \
		--host 127.0.0.1 --port $(MLFLOW_PORT)
tensorboard: setup
	@test -d $(RUN_DIR)/checkpoints/lstm || { echo "make tensorboard: $(RUN_DIR)/checkpoints/lstm not found (run make demo, or RUN_DIR=<run.output_dir>)"; exit 1; }
	$(BIN)/tensorboard --logdir $(RUN_DIR)/checkpoints/lstm --host 127.0.0.1 --port $(TENSORBOARD_PORT)

# One short GPU check (issue 4/6): one epoch on 200k synthetic rows on one GPU, samples/s and
# the LSTM kernel in use. On a CPU machine: make gpu-smoke GPU_SMOKE_ARGS="--rows 2000".
GPU_SMOKE_ARGS ?=
gpu-smoke: $(STACK_SETUP)
	$(STACK_BIN)/python bench/gpu_smoke.py $(GPU_SMOKE_ARGS)

# The GPU check for a user's GPU node (issue 13; under 5 minutes, no network): make gpu-check GPU=1.
# Without a GPU it says so, writes docs/bench/gpu_check.json and exits 0 (docs/benchmarks.md 8).
GPU_CHECK_ARGS ?=
gpu-check: $(STACK_SETUP)
	$(STACK_BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS)

# The benchmarks (docs/benchmarks.md): every bench/ script in turn, each printing a table and
# writing docs/bench/<name>.json. make bench BENCH_ARGS=--quick: tiny inputs (out/bench/quick/).
BENCH_ARGS ?=
BENCH_SCRIPTS := ingest_clean_split resample input_pipeline lstm_throughput trainer_memory lr demo_stages gpu
# The full runs with the arguments docs/benchmarks.md was made with (gpu only where a GPU is).
BENCH_FULL := "ingest_clean_split.py" "resample.py --sizes 1000000,5000000" "input_pipeline.py" \
	"lstm_throughput.py --steps 40" "trainer_memory.py --steps 15" \
	"lr.py --sizes 100000,500000,1000000" \
	"demo_stages.py --experiment --out docs/bench/demo_experiment.json"
bench: setup
ifneq ($(filter --quick,$(BENCH_ARGS)),)
	set -e; for b in $(BENCH_SCRIPTS); do echo "== bench/$$b.py $(BENCH_ARGS)"; \
		$(BIN)/python bench/$$b.py $(BENCH_ARGS); done
else
	set -e; for b in $(BENCH_FULL); do echo "== bench/$$b $(BENCH_ARGS)"; \
		$(BIN)/python bench/$$b $(BENCH_ARGS); done
	if $(BIN)/python -c "import tensorflow as tf, sys; sys.exit(not tf.config.list_physical_devices('GPU'))"; \
		then $(BIN)/python bench/gpu.py --repeats 3 --rows-generic 50000 $(BENCH_ARGS); \
		else echo "== bench/gpu.py skipped: no GPU (docs/benchmarks.md section 8)"; fi
endif

# Issue 14: the data pipeline at 1M, 3M and 9,002,021 rows with the shipped conf/local.yaml,
# one process per stage (docs/scale.md; hours, not part of `make bench`). Writes
# docs/bench/scale.json. SCALE_ARGS: e.g. "--lr-max-iter 10", "--sizes 1000000", "--quick".
SCALE_ARGS ?=
bench-scale: setup
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

# A Spark standalone cluster on 127.0.0.1 (master + cluster.workers workers), for cluster mode.
# HOSTS=N (N >= 3, root): separate hosts instead, each in its own network and mount namespace
# (a master host + N-1 worker hosts; starscale.hosts, docs/cluster.md "Separate hosts").
# GPUS=K: each worker host offers K fake GPUs (the GPU scheduling drill).
# cluster-down stops both kinds: every namespace, veth and bridge a cluster-up made.
CLUSTER_CONF ?=
HOSTS ?=
GPUS ?=
cluster-up: setup
	$(BIN)/python -m starscale.$(if $(HOSTS),hosts,cluster) up $(CLUSTER_CONF) \
		$(if $(HOSTS),--set cluster.hosts=$(HOSTS)) $(if $(GPUS),--set cluster.gpus_per_host=$(GPUS))
cluster-down:
	$(BIN)/python -m starscale.cluster down $(CLUSTER_CONF)
	$(BIN)/python -m starscale.hosts down $(CLUSTER_CONF)
