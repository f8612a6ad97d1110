# Ember's two commands. Both set everything up first (idempotent: scripts/setup.sh).
#   make up     set up, start the local cluster, deploy the service, ingest the sample
#               corpus, and ask a question only that corpus can answer
#   make test   set up, lint, run the unit and integration tests
.PHONY: setup up test down lint

VENV := .venv
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := token

setup:
	@bash scripts/setup.sh

QUESTION := Who is the head pilot of the Quillmarsh Lantern Ferry?

up: setup
	$(VENV)/bin/ember up
	$(VENV)/bin/ember ingest samples/corpus --collection docs
	$(VENV)/bin/ember ask "$(QUESTION)" --collection docs
	$(VENV)/bin/python scripts/ask_openai.py --model rag:docs "$(QUESTION)"
	$(VENV)/bin/ember chat "What is the capital of France?"

test: setup lint
	$(VENV)/bin/python -m pytest tests -v -rs --durations=15

lint:
	$(VENV)/bin/ruff check .

down:
	$(VENV)/bin/ember down
