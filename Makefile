# The two commands: `make demo` and `make test`. Each installs what it needs first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: install deps demo test unit lint lab-up lab-down bench mutate

## A control node for production runs: .venv with the project; no root, no lab.
install:
	@scripts/install-control-node

deps:
	@scripts/install-deps

## Bring the local lab up, deploy EAS on it, verify it, and show how to send a test push.
demo: deps
	$(VENV)/mmpush lab up
	$(VENV)/pyinfra -y inventories/lab.py deploys/eas.py
	$(VENV)/pytest -q tests/verify --inventory inventories/lab.py
	@$(VENV)/python -m mmpush.demo

## Lint, unit tests, then lab tests (the lab is brought up once and always torn down).
test: deps
	$(VENV)/ruff check .
	$(VENV)/pytest tests/unit
	MMPUSH_LAB_REQUIRED=1 $(VENV)/pytest tests/lab; rc=$$?; $(VENV)/mmpush lab down >/dev/null 2>&1 || true; exit $$rc

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

## Mutation testing of the pure logic (tens of minutes on 2 cores; not part of `make test`).
mutate: deps
	scripts/mutate
