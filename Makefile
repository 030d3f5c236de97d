# The two commands: `make demo` and `make test`. Each installs what it needs first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: deps demo test unit lint lab-up lab-down bench

deps:
	@scripts/install-deps

## Bring the local lab up and show how to reach it.
demo: deps
	$(VENV)/mmpush lab up
	@echo
	@echo "The lab is up. Try:"
	@echo "  $(VENV)/pyinfra -y inventories/lab.py exec -- systemctl is-system-running"
	@echo "  $(VENV)/mmpush lab ssh mm1"
	@echo "  $(VENV)/mmpush lab status --json"
	@echo "  make lab-down"

## Lint, unit tests, then lab tests (the lab is brought up once and always torn down).
test: deps
	$(VENV)/ruff check .
	$(VENV)/pytest tests/unit
	$(VENV)/pytest tests/lab; rc=$$?; $(VENV)/mmpush lab down >/dev/null 2>&1 || true; exit $$rc

unit: deps
	$(VENV)/pytest tests/unit

lint: deps
	$(VENV)/ruff check .

lab-up: deps
	$(VENV)/mmpush lab up

lab-down: deps
	$(VENV)/mmpush lab down

bench: deps
	$(VENV)/python -m bench
