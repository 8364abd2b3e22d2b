# The course's commands. Two matter to a newcomer (README.md):
#   make book   install everything into .venv and build the rendered book
#   make test   run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: book serve test durations test-fast install notebooks library constraints clean bench lab

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --progress-bar off --no-deps -e .
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html  (or run: make serve)"
	@if [ -n "$$DISPLAY" ]; then $(BIN)/python -m webbrowser -t "file://$(CURDIR)/_build/html/index.html"; fi

# JupyterLab for learners: the course's settings in lab/ show the Validate button, no instructor tools.
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=$(CURDIR)/lab $(BIN)/jupyter lab notebooks/

serve: book
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory _build/html 8000

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# A whole run that records each test's duration: `make test` hands tests out longest first.
durations: $(STAMP)
	COURSE_TEST_DURATIONS=$(CURDIR)/tests/durations.json $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not browser"

# Regenerate what solutions/ is the source of (commit the result).
library: $(STAMP)
	$(BIN)/course library

notebooks: library
	$(BIN)/course release

constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable \
	  | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf _build class

bench: $(STAMP)
	$(BIN)/python benchmarks/grading.py
	$(BIN)/python benchmarks/book_build.py
