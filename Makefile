# One-command entry points. `make run` and `make test` work on a fresh machine with Python 3.11+:
# they install uv (pinned) into .tools/, then the locked dependencies into .venv/.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV_STAMP := .venv/.synced
RUN := $(UV) run --frozen --no-sync

export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.DEFAULT_GOAL := help
.PHONY: help install browser nginx wrk screenshots run migrate test lint format typecheck openapi migrations-sql bench bench-tree bench-stream bench-load bench-workers bench-import clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV_STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

install: $(VENV_STAMP) ## Install the locked dependencies into .venv

run: install ## Serve the API on HOST:PORT (default 127.0.0.1:8000)
	$(RUN) python -m app

migrate: install ## Apply pending database migrations to DATABASE_URL
	$(RUN) alembic upgrade head

migrations-sql: install ## Print the PostgreSQL DDL of all migrations (for Supabase's SQL editor)
	@DATABASE_URL=postgresql://offline/chat $(RUN) alembic upgrade head --sql

lint: install ## ruff lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

typecheck: install ## mypy (strict)
	$(RUN) mypy app migrations tests scripts bench

# The browser tests (tests/web) drive Debian's Chromium through Playwright; Playwright's own
# browser download is not used (it needs network access the CI machines do not have).
browser: ## Install Debian's Chromium for the browser tests (apt-get, as root)
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "The browser tests need Chromium at /usr/bin/chromium:" \
	      "run 'sudo apt-get install -y chromium', then make test again." >&2; \
	    exit 1; \
	  fi; \
	  echo "Installing Debian's chromium for the browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null \
	    || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
	    || exit 1; \
	fi

# The load-balancer tests (tests/test_load_balancer.py) start their own nginx on loopback, in
# front of two replicas; Debian's package starts a system nginx on port 80, which is stopped.
nginx: ## Install Debian's nginx for the load-balancer tests (apt-get, as root)
	@if [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "The load-balancer tests need nginx at /usr/sbin/nginx:" \
	      "run 'sudo apt-get install -y nginx-light', then make test again." >&2; \
	    exit 1; \
	  fi; \
	  echo "Installing Debian's nginx-light for the load-balancer tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q nginx-light >/dev/null \
	    || { apt-get update -q >/dev/null && apt-get install -y -q nginx-light >/dev/null; } \
	    || exit 1; \
	  service nginx stop >/dev/null 2>&1 || true; \
	fi

# Only for the sidebar benchmark's `--wrk` (bench.workers_sidebar): a load generator in C.
wrk: ## Install Debian's wrk for `python -m bench.workers_sidebar --wrk` (apt-get, as root)
	@if ! command -v wrk >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "--wrk needs wrk: run 'sudo apt-get install -y wrk'." >&2; \
	    exit 1; \
	  fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q wrk >/dev/null \
	    || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } \
	    || exit 1; \
	fi

test: lint typecheck browser nginx ## Lint, type-check, and run the whole suite on SQLite and PostgreSQL
	$(RUN) pytest

screenshots: install browser ## Write pictures of the web page to docs/screenshots/
	$(RUN) python -m scripts.screenshots docs/screenshots

openapi: install ## Write the OpenAPI schema to openapi.json
	$(RUN) python -m scripts.export_openapi openapi.json

bench: $(UV) ## Benchmark the sidebar at scale (1M sessions; ~40 min), then branching sessions
	$(UV) sync --frozen --group bench
	$(RUN) python -m bench.sidebar $(BENCH_ARGS)
	$(RUN) python -m bench.tree --database postgresql --database sqlite $(BENCH_TREE_ARGS)

bench-tree: install ## Benchmark branching sessions (issue 13: 100 forks vs straight), both databases
	$(RUN) python -m bench.tree --database postgresql --database sqlite $(BENCH_TREE_ARGS)

bench-stream: install ## Benchmark the streaming relay (first-token latency, relay rate) vs the upstream alone
	$(RUN) python -m bench.stream_relay --database sqlite --database postgresql

bench-load: install ## Benchmark concurrent paced streams with 1 and 2 workers (PostgreSQL; ~40 s a step)
	$(RUN) python -m bench.stream_load $(BENCH_ARGS)

bench-workers: install ## Benchmark the sidebar with 1 and 2 workers, 8 requests in flight (~4 min)
	$(RUN) python -m bench.workers_sidebar $(BENCH_ARGS)

bench-import: install ## Benchmark importing a 10,000-conversation ChatGPT export over HTTP, both databases
	$(RUN) python -m bench.imports $(BENCH_ARGS)

clean: ## Remove the virtualenvs and local data
	rm -rf .venv .tools data .pytest_cache .mypy_cache .ruff_cache
