# make test    - create .venv if needed, then run the test suite (offline, no CIFAR-10 needed)
# make test-quick - the tests without the slow ones (notebooks, subprocesses): a first check in a few minutes
# make report  - get the data and execute every notebook in order, in place (full protocol), then rewrite
#                the README's headline and docs/using.md's times; ONLY="01 06" limits it to some notebooks,
#                RESULTS=dir trains into another folder,
#                with its notebooks, figures and paper in build/dir/ (the committed report stays as it is)
# make quick   - a short CPU version (subset, few epochs) into build/quick, results-quick, figures-quick
# make paper   - build the written report report/report.pdf from the results (seconds; make report ends with it)
# make html    - export the executed notebooks to HTML in build/html
# make bench   - training-speed benchmark (benchmarks/README.md)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RESULTS ?= results
ONLY ?=
QUICK_PARAMS := -p epochs 3 -p train_subset 5000 -p test_subset 1000 -p results_dir results-quick -p figures_dir figures-quick \
	-p seed_epochs 2 -p ladder_epochs 2 -p final_epochs 2

.PHONY: venv test test-quick data report paper quick html bench clean-quick

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	-$(VENV)/bin/nbdime config-git --enable >/dev/null 2>&1
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

data: $(STAMP)
	@$(PY) scripts/get_data.py

# RESULTS=dir (other than results) is a trial: its notebooks, figures and paper go to build/dir/, so the
# committed notebooks, figures, README and paper are never touched by it.
RESULTS_ABS := $(abspath $(RESULTS))
TRIAL := build/$(notdir $(RESULTS_ABS))
report: data
ifeq ($(RESULTS_ABS),$(abspath results))
	TQDM_DISABLE=1 $(PY) scripts/run_notebooks.py --in-place $(if $(ONLY),--only $(ONLY))
	$(PY) scripts/update_readme.py --results $(RESULTS)
	$(PY) scripts/build_paper.py --results $(RESULTS)
else
	TQDM_DISABLE=1 $(PY) scripts/run_notebooks.py --output $(TRIAL)/notebooks -p results_dir $(RESULTS) \
		-p figures_dir $(abspath $(TRIAL))/figures $(if $(ONLY),--only $(ONLY))
	$(PY) scripts/build_paper.py --results $(RESULTS) --figures $(abspath $(TRIAL))/figures \
		--tables $(abspath $(TRIAL))/tables --output $(abspath $(TRIAL))/report.pdf
endif

paper: $(STAMP)
ifeq ($(RESULTS_ABS),$(abspath results))
	$(PY) scripts/build_paper.py --results $(RESULTS)
else
	$(PY) scripts/build_paper.py --results $(RESULTS) --figures $(abspath $(TRIAL))/figures \
		--tables $(abspath $(TRIAL))/tables --output $(abspath $(TRIAL))/report.pdf
endif

quick: data
	TQDM_DISABLE=1 $(PY) scripts/run_notebooks.py --output build/quick $(QUICK_PARAMS)

html: $(STAMP)
	$(PY) -m jupyter nbconvert --to html --output-dir build/html notebooks/*.ipynb

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

clean-quick:
	rm -rf build/quick results-quick figures-quick
