# The few commands a person runs. `make demo` and `make test` set everything up on
# a machine with only Python 3.11+ and make.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo-run
CAMPAIGN := $(BIN)/campaign --db sqlite:///$(DEMO_DIR)/campaign.db

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(CAMPAIGN) init
	$(CAMPAIGN) members import data/members.csv --skip-invalid --rejects $(DEMO_DIR)/members.rejects.csv
	$(CAMPAIGN) schools import data/edubasealldata.csv
	$(CAMPAIGN) employers import data/employer-contacts.csv
	$(CAMPAIGN) reps import data/mps.csv
	$(CAMPAIGN) postcodes load data/postcodes.json
	$(CAMPAIGN) resolve --offline
	$(CAMPAIGN) employers gaps
	@echo
	@echo "Demo database: $(DEMO_DIR)/campaign.db. Try: $(CAMPAIGN) members list"

lint: $(STAMP)
	$(BIN)/ruff check engine tests bench
	$(BIN)/ruff format --check engine tests bench

test: $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_import_resolve.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info
