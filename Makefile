# meshcast developer entry points. `make install` builds .venv with everything, torch pinned.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
CASES ?= ../shared/cases
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test lint format demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[executor,server,redis,models,dev]"
	touch $@

serve: install
	$(BIN)/meshcast serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install
	@for case in $(CASES)/paper-*.json; do \
		echo "== $$(basename $$case .json)"; \
		$(BIN)/meshcast compare "$$case" --time-limit 1 || exit 1; \
		echo; \
	done

bench: install
	$(BIN)/python benchmarks/solver_quality.py --cases $(CASES)
	$(BIN)/python benchmarks/solver_scaling.py
	$(BIN)/python benchmarks/compact_plans.py
	$(BIN)/python benchmarks/executor_run.py
	$(BIN)/python benchmarks/service_load.py
	$(BIN)/python benchmarks/service_soak.py
	$(BIN)/python benchmarks/plan_viewer.py
	$(BIN)/python benchmarks/refit.py
	$(BIN)/python benchmarks/pipeline_run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
