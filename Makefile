# Ember's two commands. Both set everything up first (idempotent: scripts/setup.sh).
#   make up     set up, start the local cluster, deploy the service, ask it a question
#   make test   set up, lint, run the unit and integration tests
.PHONY: setup up test down lint

VENV := .venv
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := token

setup:
	@bash scripts/setup.sh

up: setup
	$(VENV)/bin/ember up
	$(VENV)/bin/python scripts/ask_openai.py "What is the capital of France?"
	$(VENV)/bin/ember chat "What is the capital of France?"

test: setup lint
	$(VENV)/bin/python -m pytest tests -v -rs --durations=15

lint:
	$(VENV)/bin/ruff check .

down:
	$(VENV)/bin/ember down
