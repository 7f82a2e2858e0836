# bigmodel_jax: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/pretrain
TEST_WORKERS ?= 2
# Notebooks run with small settings by default (as in CI); `make notebooks SMALL=0` for full ones.
SMALL ?= 1

.PHONY: install test lint pretrain notebooks bench bench-step bench-gpu clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,notebooks]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=15 tests

lint: install
	$(VENV)/bin/ruff check .

pretrain: install
	$(PY) -m experiments.pretrain --config=configs/pretrain.py --workdir=$(WORKDIR)

notebooks: install
	@ls notebooks/*.ipynb >/dev/null 2>&1 || { echo "no notebooks yet"; exit 0; }; \
	for nb in notebooks/*.ipynb; do \
	  SMALL=$(SMALL) $(VENV)/bin/jupyter nbconvert --to notebook --execute --output-dir=runs/notebooks "$$nb" || exit 1; \
	done

bench: install
	$(PY) -m experiments.memory --config=configs/gpt2.py:124m --compile --optimizers=adamw,sgd

bench-step: install
	$(PY) -m experiments.bench_step --config=configs/bench_step.py --workdir=runs/bench_step

bench-gpu: install
	$(PY) -m experiments.bench_gpu --workdir=runs/bench_gpu

clean:
	rm -rf $(VENV) runs
