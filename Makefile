# The study's commands. Each creates or reuses the local virtual environment .venv by itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export TQDM_DISABLE ?=

.PHONY: study test lab bench report setup notebooks

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

## The study's main job: the quick grid on SynthBirds (CPU, no downloads), then the report.
study: $(STAMP)
	$(BIN)/python -m fgvc.grid --profile quick
	$(BIN)/python -m fgvc.report

## The whole test suite (unit tests, papermill smoke runs, nbval on the stored notebooks).
test: $(STAMP)
	TQDM_DISABLE=1 $(BIN)/python -m pytest -q

## JupyterLab in the project's environment, notebooks ready to run.
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(BIN)/python -m fgvc.bench

report: $(STAMP)
	$(BIN)/python -m fgvc.report

## Re-execute the stored notebooks with their tiny default parameters (the outputs nbval
## compares), writing their run records into a throw-away folder, never into results/.
notebooks: $(STAMP)
	tmp=$$(mktemp -d) && for nb in notebooks/*.ipynb; do \
	  FGVC_RESULTS=$$tmp/results FGVC_CHECKPOINTS=$$tmp/ckpt FGVC_DATA=$$tmp/data TQDM_DISABLE=1 \
	  $(BIN)/python -m papermill $$nb $$nb --cwd . --no-progress-bar -k python3 || exit 1; done; rm -rf $$tmp
