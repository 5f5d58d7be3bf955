# The README's commands. `make run` and `make test` set everything up first (idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: setup run test test-fast ui server clean

setup: $(STAMP)

# Reinstalls only when the dependencies change. requirements.lock pins every package (pip freeze).
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $(STAMP)

run: setup  ## run the pipeline on params.yaml; make run ARGS="-S finetune.lr=0.001"
	$(VENV)/bin/graft run $(ARGS)

test: setup  ## the whole test suite, then its 15 slowest tests; make test ARGS="-m 'not e2e'" for a part (README, Tests)
	$(VENV)/bin/pytest -n 2 --dist loadgroup --durations=15 $(ARGS)

test-fast: setup  ## the unit tier only (pytest -m unit): under a minute
	$(VENV)/bin/pytest -m unit $(ARGS)

ui: setup  ## the MLflow UI on http://127.0.0.1:5000
	$(VENV)/bin/graft ui

server: setup  ## a local Prefect server and UI on http://127.0.0.1:4200 (for graft serve); then export PREFECT_API_URL
	@echo "Prefect UI on http://127.0.0.1:4200; in another shell: export PREFECT_API_URL=http://127.0.0.1:4200/api"
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

clean:  ## remove pipeline outputs and the local tracking store (not the venv)
	rm -rf data/raw data/prepared/source data/prepared/target models/*.safetensors models/*.json metrics/*.json \
	       reports/*.json plots/*.csv mlflow.db mlartifacts .graft dvc.lock
