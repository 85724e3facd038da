# Placa: `make run` and `make test` (see README.md and ../shared/CONTRACT.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
CATALOGS := $(wildcard ris/translations/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGS:.po=.mo)

.PHONY: run test lint translations extract-messages check-python

run: $(VENV)/.runtime $(COMPILED)
	$(FLASK) db upgrade
	$(FLASK) users bootstrap-admin
	exec $(FLASK) serve

test: $(VENV)/.dev $(COMPILED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

translations: $(COMPILED)

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Placa needs Python 3.11 or newer")'

$(VENV)/bin/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

%.mo: %.po | $(VENV)/.runtime
	$(BIN)/pybabel compile -i $< -o $@

# Maintainers: refresh the catalogs after changing marked text.
extract-messages: $(VENV)/.runtime
	$(BIN)/pybabel extract -F babel.cfg -k _l -o ris/translations/messages.pot ris pacs worklist reports
	$(BIN)/pybabel update -i ris/translations/messages.pot -d ris/translations
