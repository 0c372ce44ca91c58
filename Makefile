# Two commands do all the set-up on a fresh machine:
#   make run    virtual environment + install, demo project if absent, worker in the background, the app
#   make test   virtual environment + install, then the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROJECTS ?= projects
DEMO ?= $(PROJECTS)/demo
PORT ?= 8501
# the app listens on this address only: localhost by default; HOST=0.0.0.0 serves every interface (a team server)
HOST ?= localhost
PYTEST_ARGS ?=

.PHONY: venv demo run worker app test test-fast bench bench-quick clean-demo

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m core demo $(DEMO)

# The worker runs jobs (features, "Retrain now") of every project in $(PROJECTS); it stops with the app.
run: demo
	@$(PY) -m core serve-check $(PROJECTS) --host $(HOST)
	@$(PY) -m core worker $(PROJECTS) & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	LABELTOOL_PROJECTS=$(PROJECTS) $(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT)

worker: venv
	$(PY) -m core worker $(PROJECTS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# the default suite less the tests marked slow, browser, shared or gpu: under 3 minutes on 2 cores
test-fast: venv
	$(PY) -m pytest -m "not slow and not browser and not shared and not gpu" $(PYTEST_ARGS)

# every CPU benchmark at the sizes of the recorded figures (hours), rows appended to bench/results/;
# bench-quick: a smoke run of all of them on tiny sizes (minutes), rows in bench/out/quick/
bench: venv
	$(PY) bench/run_all.py

bench-quick: venv
	$(PY) bench/run_all.py --quick

clean-demo:
	rm -rf $(DEMO)
