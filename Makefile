# The two set-up commands of README.md: both install everything (scripts/setup.sh) first.
.PHONY: install run test

install:
	bash scripts/setup.sh

run: install
	.venv/bin/batchtrain fit

test:
	bash scripts/setup.sh --tests
	.venv/bin/python -m pytest -q
