# The README's commands.  Everything installs itself on first use (infra/setup.sh) and reuses caches after.
SHELL := /bin/bash
PY := .venv/bin/python
STATE := .run
BROKERS ?= 1
PROMETHEUS ?= 0
export PYTHONPATH := $(CURDIR)

.PHONY: setup lock up down status demo loop test test-unit bench docs clean

setup:
	@bash infra/setup.sh

## lock: re-resolve requirements.lock (hash-checked pins setup installs) to the newest versions pyproject.toml allows
lock:
	@bash infra/lock.sh $${LOCK_ARGS---upgrade}

## up / down: real Kafka (KRaft) and Redis on 127.0.0.1 (docker compose when a Docker engine answers)
up: setup
	@if docker info >/dev/null 2>&1; then \
		docker compose up -d --wait kafka redis && \
		echo "STREAMREC_KAFKA=127.0.0.1:29092" && echo "STREAMREC_REDIS=redis://127.0.0.1:6379/0"; \
	else $(PY) -m infra.local up --state-dir $(STATE) --brokers $(BROKERS) $(if $(filter 1,$(PROMETHEUS)),--prometheus); fi

down:
	@if docker info >/dev/null 2>&1; then docker compose down; \
	else $(PY) -m infra.local down --state-dir $(STATE); fi

status:
	@$(PY) -m infra.local status --state-dir $(STATE)

## demo: infrastructure up, a stream worker, clicks in, slates printed, everything stopped again
demo: setup
	@$(PY) -m infra.demo

## loop: the whole system end to end: first model, worker, serving, simulator with a drift, monitor, report
loop: setup
	@$(PY) -m infra.loop $(LOOP_ARGS)

## test: the whole suite (unit, integration against real Kafka + Redis, e2e)
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: setup
	@$(PY) -m bench $(BENCH_ARGS)

## docs: regenerate the settings reference in docs/operations.md from stream/settings.py
docs: setup
	@$(PY) -m stream settings --write docs/operations.md

clean: down
	rm -rf $(STATE) .pytest_cache
