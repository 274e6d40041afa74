# Targets only wire Make variables to `python -m competition <command>`; the logic lives in the package.
# Every target first makes .venv/ from requirements.txt (again when requirements.txt changes).

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
SYNTH    ?= data/synthetic
# The real data once `make data` has fetched it (its training masks are there), the synthetic set before.
FETCHED  := $(wildcard $(addprefix data/carvana/,train_masks.csv train_masks.csv.zip train_masks.zip train_masks))
DATA     ?= $(if $(FETCHED),data/carvana,$(SYNTH))
PRESET   ?= unet
NAME     ?= $(PRESET)
# The run: a NAME (runs/NAME) or a path to its folder; NAME is its former spelling.
RUN      ?= $(NAME)
RUN_DIR  := $(if $(findstring /,$(RUN)),$(RUN),runs/$(RUN))
# FOLD: the one fold to train, score or push (--fold); FOLDS: the folds to predict with (--folds; empty: every
# trained fold), ENSEMBLE its former name.
FOLD     ?= 0
ENSEMBLE ?=
FOLDS    ?= $(ENSEMBLE)
TTA      ?= hflip
OUT      ?= submissions/$(notdir $(RUN_DIR)).csv.gz
# MIXED_PRECISION: 1 float16 on GPUs / bfloat16 on CPUs that have it, 0 float32, empty: the preset's (real-cpu: 1)
MIXED_PRECISION ?=
MIXED_FLAG = $(if $(filter 1,$(MIXED_PRECISION)),--mixed-precision)$(if $(filter 0,$(MIXED_PRECISION)),--no-mixed-precision)
# ANYWAY=1: train a full-size preset on the synthetic set, or on a CPU where it would take days
ANYWAY   ?=
ANYWAY_FLAG = $(if $(filter 1,$(ANYWAY)), --anyway)
TUNE     ?= 0
# REFINE: none | guided | net (empty: the run's config); `make train` trains the refiner net of a run whose config
# says net (a predict kernel, TASK=predict REFINE=net, trains its own from the folds it gathers).
REFINE   ?=
# REFINER_FROM (formerly LEARN_FROM): what `make refiner` (retraining the refiners) learns from: held-out (the other
# folds' predictions, 2+ folds) or training
# (each fold's model on its own training photos: one fold is enough; for short runs); empty: the run's config's
# (training for cpu, held-out otherwise).
LEARN_FROM ?=
REFINER_FROM ?= $(LEARN_FROM)
MSG      ?= competition toolkit submission
SUBMIT   ?= 0
# TIME_BUDGET (e.g. 20m): `train --budget`, the whole fold planned to fit that time on this machine (empty: the
# preset's epochs); for kernel-push also session or none (empty there: the session as a cap); DISK_BUDGET (e.g.
# 20GB): what `extract` may write (BUDGET its former spelling)
TIME_BUDGET ?=
BUDGET   ?=
DISK_BUDGET ?= $(BUDGET)
BUDGET_FLAG = $(if $(TIME_BUDGET), --budget $(TIME_BUDGET))
TASK     ?= train
USER_ARG ?=
# ACCELERATOR: the Kaggle session's (kaggle/machines.py: t4x2, Kaggle's default GPU | l4 | none); ACCEL its former
# spelling
ACCEL    ?=
ACCELERATOR ?= $(or $(ACCEL),t4x2)
SHARD    ?=
# kernels: sessions at a time (kernel-push-all), the session length in hours (default 12), FRESH=1 starts over
MAX_RUNNING   ?= 2
SESSION_HOURS ?=
FRESH         ?=
# RESUME_FROM=dataset: kernel-push resumes from the private dataset kernel-checkpoint made of the kernel's output
RESUME_FROM   ?=
KERNEL_OPTS = $(if $(SESSION_HOURS),--session-hours $(SESSION_HOURS) )$(if $(FRESH),--fresh )
# VERSION: kernel-output, -checkpoint, -logs of that version of the kernel (kernel-status names the last usable one)
VERSION       ?=
VERSION_OPT = $(if $(VERSION), --version $(VERSION))
CLI      := $(PY) -m competition
# pytest processes (pytest-xdist): CI has 2 cores and the suite is single-threaded TensorFlow; 1 = serial.
# A file's tests stay in one process (--dist loadfile), so a module's shared trained run is made once.
TEST_JOBS ?= 2

.PHONY: help demo test synth folds info train train-all predict validate submit score cv refiner data extract \
        kernel-build kernel-push kernel-push-all kernel-queue kernel-status kernel-output kernel-checkpoint kernel-logs \
        kernel-quota bench runs tensorboard venv \
        clean

.DEFAULT_GOAL := help
help:
	@echo "make demo             the whole path on a generated synthetic dataset (no Kaggle account)"
	@echo "make test             the test suite (CPU only)"
	@echo "make data             download the competition's files to data/carvana (Kaggle credentials)"
	@echo "make train FOLD=k     train fold k as PRESET describes (the U-Net, then its refiner net); rerun to resume;"
	@echo "                      TIME_BUDGET=20m: the whole fold planned to fit 20 minutes on this machine"
	@echo "make train-all        train every fold, then cv: out-of-fold dice, the threshold tuned into the run"
	@echo "make submit           predict the test set with the run's own settings, validate (SUBMIT=1 uploads)"
	@echo "make score FOLD=k     Kaggle's dice on fold k's held-out cars, with report.html (TUNE=1 tunes)"
	@echo "make cv               every trained fold scored out of fold, cv.md (TUNE=1 tunes the threshold)"
	@echo "make predict          the submission CSV alone (FOLDS=0,1 for some folds)"
	@echo "make validate         check OUT against the sample submission"
	@echo "make refiner          retrain the run's refiner nets (train already trains them)"
	@echo "make info | folds     what the data holds | the folds by car"
	@echo "make synth | extract  the synthetic dataset | unzip the data within DISK_BUDGET"
	@echo "make kernel-push-all  train every fold as Kaggle kernels, two at a time (docs/kaggle.md)"
	@echo "make kernel-queue     push the next waiting fold kernel; kernel-push/-status/-output/-build: one kernel"
	@echo "make kernel-checkpoint FOLD=k  an ended kernel's output as a private dataset (then RESUME_FROM=dataset)"
	@echo "make kernel-logs FOLD=k  a kernel's log, followed while it runs; kernel-quota: your GPU hours this week"
	@echo "make runs             every run with its dice, time and submissions' Kaggle scores"
	@echo "make tensorboard      live training curves of RUN (TensorBoard)"
	@echo "make bench            measure the toolkit's speed on this machine (bench/)"
	@echo "make kaggle-compat    the kernel scripts on Kaggle's TensorFlow/Keras (a second venv)"
	@echo "make clean            remove caches, built kernels, the synthetic set, the demo (CLEAN_ALL=1: every run)"
	@echo "variables: PRESET=$(PRESET) RUN=$(RUN) FOLD=$(FOLD) DATA=$(DATA) (docs/guide.md#make-variables)"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

## The main job on the embedded synthetic dataset: synth -> folds -> train fold 0 -> score -> predict.
demo: venv
	$(CLI) synth --out data/synthetic
	$(CLI) train --preset demo --run demo --fold 0 --data data/synthetic
	$(CLI) score --run demo --fold 0 --data data/synthetic --tta hflip
	$(CLI) predict --run demo --folds 0 --data data/synthetic --tta hflip --out submissions/demo.csv.gz

test: venv
	$(PY) -m pytest -q -W ignore::DeprecationWarning -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder tests

synth: venv
	$(CLI) synth --out $(SYNTH)

info: venv
	@echo "data: $(DATA)"
	$(CLI) info --data $(DATA)

folds: venv
	@echo "data: $(DATA)"
	$(CLI) folds --data $(DATA) --out $(RUN_DIR)/folds.csv

train: venv
	@echo "data: $(DATA)"
	$(CLI) train --preset $(PRESET) --run $(RUN) --fold $(FOLD) --data $(DATA) $(MIXED_FLAG)$(ANYWAY_FLAG)$(BUDGET_FLAG)

# Every fold (each with its refiner where the preset has one), then cv, which records the tuned threshold in the run.
train-all: venv
	@echo "data: $(DATA)"
	$(CLI) train --preset $(PRESET) --run $(RUN) --fold all --data $(DATA) $(MIXED_FLAG)$(ANYWAY_FLAG)$(BUDGET_FLAG)
	$(CLI) cv --run $(RUN) --tta $(TTA) --data $(DATA) --tune-threshold

predict: venv
	@echo "data: $(DATA)"
	$(CLI) predict --run $(RUN) $(if $(FOLDS),--folds $(FOLDS)) --tta $(TTA) --data $(DATA) $(if $(REFINE),--refine $(REFINE) )--out $(OUT)

validate: venv
	@echo "data: $(DATA)"
	$(CLI) validate $(OUT) --data $(DATA)

# The submission is predicted again whenever a model or the config (its tuned threshold) of the run is newer,
# or when its record (<out>.json, written by predict) says it was made with another TTA, REFINE or FOLDS.
ifneq ($(filter submit $(OUT),$(MAKECMDGOALS)),)
OUT_OTHERWISE := $(if $(wildcard $(OUT).json),$(shell $(CLI) made-as $(OUT) --tta $(TTA) $(if $(REFINE),--refine $(REFINE)) $(if $(FOLDS),--folds $(FOLDS)) 2>/dev/null))
endif
$(OUT): $(wildcard $(RUN_DIR)/fold*/model.keras $(RUN_DIR)/config.json $(RUN_DIR)/refiner/all.keras) $(if $(OUT_OTHERWISE),predict-again) | $(VENV)/.installed
	$(CLI) predict --run $(RUN) $(if $(FOLDS),--folds $(FOLDS)) --tta $(TTA) --data $(DATA) $(if $(REFINE),--refine $(REFINE) )--out $(OUT)

.PHONY: predict-again
predict-again:
	@echo "$(OUT_OTHERWISE): predicting again"

submit: venv
	@echo "data: $(DATA)"
	@$(MAKE) --no-print-directory $(OUT)
	$(CLI) validate $(OUT) --data $(DATA)
	$(if $(filter 1,$(SUBMIT)),$(CLI) submit $(OUT) --data $(DATA) --message "$(MSG)",@echo "validated $(OUT); run 'make submit SUBMIT=1 MSG=...' to upload it")

score: venv
	@echo "data: $(DATA)"
	$(CLI) score --run $(RUN) --fold $(FOLD) --tta $(TTA) --data $(DATA) $(if $(filter 1,$(TUNE)),--tune-threshold) $(if $(REFINE),--refine $(REFINE))

cv: venv
	@echo "data: $(DATA)"
	$(CLI) cv --run $(RUN) --tta $(TTA) --data $(DATA) $(if $(filter 1,$(TUNE)),--tune-threshold) $(if $(REFINE),--refine $(REFINE))

# Retrain the second-stage refiner nets (`make train` already trains them where the run's config says net).
refiner: venv
	@echo "data: $(DATA)"
	$(CLI) refiner --run $(RUN) --data $(DATA)$(if $(REFINER_FROM), --refiner-from $(REFINER_FROM))

data: venv
	$(CLI) download --out data/carvana

extract: venv
	@echo "data: $(DATA)"
	$(CLI) extract --data $(DATA) $(if $(DISK_BUDGET),--budget $(DISK_BUDGET))

kernel-build: venv
	$(CLI) kernel build --task $(TASK) --fold $(FOLD) $(if $(FOLDS),--folds $(FOLDS)) --preset $(PRESET) --run $(RUN) --accelerator $(ACCELERATOR) $(if $(SHARD),--shard $(SHARD)) $(if $(and $(REFINE),$(filter predict,$(TASK))),--refine $(REFINE) )$(if $(filter train,$(TASK)),$(BUDGET_FLAG) )$(USER_ARG)

kernel-push: venv
	$(CLI) kernel push --task $(TASK) --fold $(FOLD) $(if $(FOLDS),--folds $(FOLDS)) --preset $(PRESET) --run $(RUN) --accelerator $(ACCELERATOR) $(if $(SHARD),--shard $(SHARD)) $(if $(and $(REFINE),$(filter predict,$(TASK))),--refine $(REFINE) )$(if $(RESUME_FROM),--resume-from $(RESUME_FROM) )$(if $(filter train,$(TASK)),$(BUDGET_FLAG) )$(KERNEL_OPTS)$(USER_ARG)

kernel-push-all: venv
	$(CLI) kernel push --task train --all-folds --max-running $(MAX_RUNNING) --preset $(PRESET) --run $(RUN) --accelerator $(ACCELERATOR) $(BUDGET_FLAG) $(KERNEL_OPTS)$(USER_ARG)

kernel-queue: venv
	$(CLI) kernel queue --run $(RUN)

kernel-status: venv
	$(CLI) kernel status --task $(TASK) --fold $(FOLD) --preset $(PRESET) --run $(RUN) $(if $(SHARD),--shard $(SHARD)) $(USER_ARG)

kernel-output: venv
	$(CLI) kernel output --task $(TASK) --fold $(FOLD) --preset $(PRESET) --run $(RUN) $(if $(SHARD),--shard $(SHARD))$(VERSION_OPT) $(USER_ARG)

kernel-checkpoint: venv
	$(CLI) kernel checkpoint --task $(TASK) --fold $(FOLD) --preset $(PRESET) --run $(RUN) $(if $(SHARD),--shard $(SHARD))$(VERSION_OPT) $(USER_ARG)

kernel-logs: venv
	$(CLI) kernel logs --task $(TASK) --fold $(FOLD) --preset $(PRESET) --run $(RUN) $(if $(SHARD),--shard $(SHARD))$(VERSION_OPT) $(USER_ARG)

kernel-quota: venv
	$(CLI) kernel quota

bench: venv
	$(CLI) bench --out bench

runs: venv
	$(CLI) runs

# live training curves: TensorBoard over the run's fold<k>/logs (train writes them beside history.csv)
# (TensorBoard is installed here the first time: no other target needs it, so requirements.txt leaves it out)
tensorboard: venv
	@test -x $(VENV)/bin/tensorboard || $(PY) -m pip install --quiet tensorboard
	$(VENV)/bin/tensorboard --logdir $(RUN_DIR)

## Kaggle's image (docs/kaggle.md, "Kaggle's versions"): .venv-kaggle/ with the TensorFlow/Keras/numpy pinned in
## kernels/kaggle-image.txt (rebuilt when that file changes), then the kernel scripts and model files on them.
## Not part of `test`: a ~2.5 GB environment and several minutes on 2 cores.
KAGGLE_VENV  := .venv-kaggle
KAGGLE_IMAGE_PYTHON ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12))),python3.12)
.PHONY: kaggle-compat

$(KAGGLE_VENV)/.installed: kernels/kaggle-image.txt
	rm -rf $(KAGGLE_VENV)
	$(KAGGLE_IMAGE_PYTHON) -m venv $(KAGGLE_VENV)
	$(KAGGLE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KAGGLE_VENV)/bin/python -m pip install --quiet -r kernels/kaggle-image.txt
	@touch $@

kaggle-compat: venv $(KAGGLE_VENV)/.installed
	KAGGLE_PYTHON=$(abspath $(KAGGLE_VENV)/bin/python) $(PY) -m pytest -q -W ignore::DeprecationWarning tests/test_kaggle_compat.py

# caches, push folders, the synthetic set and the demo's run; CLEAN_ALL=1: every run and submission too (a run's
# kernels.json, the record of its pushed kernels, is kept and said)
clean: venv
	$(CLI) clean$(if $(filter 1,$(CLEAN_ALL)), --all)
