# Guanxi: `make run` serves the API, `make test` runs lint and the whole suite, `make chaos` the fault suite.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install browser run test lint format fuzz bench chaos db-start db-stop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/guanxi serve

test: lint browser
	$(BIN)/pytest

# Chromium renders /docs and /redoc in tests/test_docs_pages.py with no outside network. It comes from
# Debian's packages when missing and this is root on Debian; elsewhere that one test is skipped.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "no chromium: the docs pages' browser test will be skipped"


# The contract run of tests/test_contract.py at length: every schemathesis phase, a fresh seed each
# run, FUZZ_EXAMPLES generated requests per operation (each sent as every caller).
FUZZ_EXAMPLES ?= 200
fuzz: install
	GUANXI_CONTRACT_FUZZ=1 GUANXI_CONTRACT_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/test_contract.py

lint: install
	$(BIN)/ruff check app tests bench chaos migrations
	$(BIN)/ruff format --check app tests bench chaos migrations
	$(BIN)/mypy
	$(BIN)/mypy bench
	$(BIN)/mypy chaos
	$(BIN)/mypy tests
	# No cache: the cache keeps a file's imports while the file is unchanged, even after the
	# packages they resolve to have changed (a package gaining its __init__.py, say).
	$(BIN)/lint-imports --no-logo --no-cache

format: install
	$(BIN)/ruff check --fix app tests bench chaos migrations
	$(BIN)/ruff format app tests bench chaos migrations

bench: install
	$(BIN)/python bench/run_all.py

# The real server on a PostgreSQL of its own, under load, while the database crashes, its
# connections are killed and the network goes silent (about 2-3 minutes), and a worker killed in the
# middle of a send of GUANXI_CHAOS_MESSAGES messages (100,000: about 25 minutes). Not part of `make test`.
chaos: install
	$(BIN)/pytest chaos -v -s -p no:cacheprovider

db-start: install
	$(BIN)/guanxi db start

db-stop: install
	$(BIN)/guanxi db stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
