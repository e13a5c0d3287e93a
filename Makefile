# The study's commands. Each creates or reuses the local virtual environment .venv by itself.
#
# Only the maintainers' targets write tracked files under results/, and each names it as its
# destination ($(STUDY), report --write): study-new, ablations, sweep, report,
# reproduction-report, bench, gpu-check, mutate (and, outside make, `python -m
# fgvc.study.readings` and `python -m fgvc.dev.fastpath_runs`). Everything else, every command
# run with its defaults and every notebook run with its stored defaults writes into the
# git-ignored scratch/ (fgvc.paths: results in scratch/results, checkpoints beside them).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export TQDM_DISABLE ?=
# The maintainers' destination: the committed study (checkpoints in .checkpoints/, git-ignored).
STUDY   := FGVC_RESULTS=$(CURDIR)/results

.PHONY: help study study-new study-cub30 reproduction-report sweep ablations pipeline-check test mutate lab bench gpu-check report setup notebooks
.DEFAULT_GOAL := help

## List the targets (also what a bare `make` does).
help:
	@awk '/^## /{doc=substr($$0,4); next} /^[a-z][a-z-]*:/{if(doc){split($$0,t,":"); printf "  make %-15s %s\n", t[1], doc}; doc=""} !/^## /{if(!/^[a-z][a-z-]*:/)doc=""}' $(MAKEFILE_LIST)

## Create (or reuse) the virtual environment .venv with every pinned dependency.
setup: $(STAMP)

# torch and torchvision first, so grad-cam (in requirements.txt) does not pull another torch.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fgvc-study)" >/dev/null
	touch $(STAMP)

## The study's main job: retrain the committed transfer-regime study into reproduction/ and compare.
study: $(STAMP)
	$(BIN)/python -m fgvc.study.reproduce --profile transfer

## Maintainers: replace the committed records with a new study on purpose (results/), then the report.
study-new: $(STAMP)
	$(STUDY) $(BIN)/python -m fgvc.study.grid --profile transfer --replace stale
	$(BIN)/python -m fgvc.study.report --profile transfer --records results --write

## Maintainers: on a fresh clone, reproduce and commit results/reproduction.{md,csv}.
reproduction-report: $(STAMP)
	$(BIN)/python -m fgvc.study.reproduce --profile transfer --commit-report

## Maintainers: the main comparison on CUB-30, the real-photo subset (every method's full, the profile's seeds) into results/; needs CUB30=<its folder>.
study-cub30: $(STAMP)
	@test -n "$(CUB30)" || { echo "make study-cub30: give the CUB-30 folder, CUB30=<folder> (make one from your CUB-200-2011: python -m fgvc.data cut cub30 --source <CUB_200_2011>)" >&2; exit 2; }
	$(STUDY) $(BIN)/python -m fgvc.study.grid --profile transfer --grid real_photos --data-root $(CUB30)
	$(BIN)/python -m fgvc.study.report --profile transfer --records results --write

## The lr sweeps on validation that chose the lrs: the backbone's on the baseline, then each method's head lr (results/sweep/, not part of the study's time).
sweep: $(STAMP)
	$(STUDY) $(BIN)/python -m fgvc.study.sweep --run --profile transfer --param train.lr --methods baseline
	$(STUDY) $(BIN)/python -m fgvc.study.sweep --run --profile transfer --param train.head_lr --methods ma_ea,lafe,pcanet,focus

## Maintainers: every other ablation row of every paper (transfer profile) into results/, then the report.
ablations: $(STAMP)
	$(STUDY) $(BIN)/python -m fgvc.study.grid --profile transfer --grid ablations
	$(BIN)/python -m fgvc.study.report --profile transfer --records results --write

## A fast pipeline check: ResNet-18 from scratch at 64 px (the scratch profile), every method and row -> scratch/results/.
pipeline-check: $(STAMP)
	$(BIN)/python -m fgvc.study.grid --profile scratch
	$(BIN)/python -m fgvc.study.report --profile scratch --records "$${FGVC_RESULTS:-scratch/results}" --write

## The import contract (lint-imports), then the whole test suite (unit tests, papermill smoke runs, nbval).
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q

## Mutation testing (mutmut, not in CI) of the layers and the methods' forward/loss -> results/mutation.md.
mutate: $(STAMP)
	PYTHON=$(BIN)/python MUTATION_OUT=$(CURDIR)/results/mutation.md tools/mutate.sh

## JupyterLab in the project's environment: the whole repository (notebooks, results/), opened on notebooks/.
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks --no-browser \
	  $$(test "$$(id -u)" = 0 && echo --allow-root)

## The benchmark (throughput, MFU, data path) -> results/bench.md.
bench: $(STAMP)
	$(STUDY) $(BIN)/python -m fgvc.dev.bench

## The GPU check on a bare GPU machine (torch + torchvision only; lib/ on PYTHONPATH) -> results/bench_gpu.md.
gpu-check:
	$(STUDY) PYTHON="$$(test -x $(BIN)/python && echo $(BIN)/python || echo $(PY))" tools/gpu_check.sh

## Rebuild every table and figure from the committed run records (cheap: no training), into results/.
report: $(STAMP)
	$(BIN)/python -m fgvc.study.report --profile transfer --records results --write

## Re-execute the stored notebooks with their stored defaults (the reports: the committed study; training: a smoke run in a temporary folder), volatile metadata stripped (nbstripout).
notebooks: $(STAMP)
	tmp=$$(mktemp -d) && for nb in notebooks/*.ipynb; do \
	  FGVC_RESULTS=$$tmp/results FGVC_CHECKPOINTS=$$tmp/ckpt FGVC_DATA=$$tmp/data TQDM_DISABLE=1 \
	  $(BIN)/python -m fgvc.study.notebook $$nb $$nb --cwd . --normalise || exit 1; done; rm -rf $$tmp
