# One entry point for the course. The README's two commands are `make course`
# and `make test`; both create the local environment (.venv) when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# quiet, headless and reproducible where it matters
TESTENV := TQDM_DISABLE=1 MPLBACKEND=Agg PYTHONHASHSEED=0

.PHONY: course test test-quick lab html slides bench clean env browser-check student student-check

env: $(VENV)/.installed

# the package with its course and test extras (pyproject.toml). A torch already in the
# environment is kept (e.g. PyTorch's CPU-only build, README "Installing"); another
# environment: `make course VENV=$CONDA_PREFIX`.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -e '.[course,test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## run the six notebooks headless, in order; executed copies and HTML go to build/
course: env
	MPLBACKEND=Agg $(PY) -m metalstm.tools.course

## the whole test suite: unit and paper-claim tests, then every notebook under nbval
test: env
	$(TESTENV) $(PY) -m pytest --nbval-lax --nbval-current-env -m "not browser and not edition" tests notebooks

## the quick lane for everyday work: every module's fast tests, no notebooks, no tests marked slow
test-quick: env
	$(TESTENV) $(PY) -m pytest -q -m "not slow and not browser and not edition" tests

## open the course in JupyterLab
lab: env
	$(VENV)/bin/jupyter lab notebooks/

## render the notebooks (already executed by `make course`) again as plain HTML pages, one
## scrolling page per notebook, in build/html/ (MathJax copied beside them: the maths shows offline)
html: env
	MPLBACKEND=Agg $(PY) -m metalstm.tools.course --html-only

## lecture decks: one reveal.js deck per notebook in build/slides/, from the executed notebooks
## (executing those not executed yet); reveal.js and MathJax are copied beside them from two pinned
## PyPI wheels, so a deck opened as a file needs no network (s: speaker notes, f: full screen)
slides: env
	MPLBACKEND=Agg $(PY) -m metalstm.tools.course --slides-only

## the student edition in build/student/: the course without its solutions (no notebooks/solutions/, no
## tests/, no lecturer's notes, the pointers to the solutions rewritten); metalstm/tools/student.py says what and why
student: env
	$(PY) -m metalstm.tools.student build/student --force

## all six notebooks executed in a fresh student edition (slow: the course once more)
student-check: env
	$(TESTENV) $(PY) -m pytest -m edition -v tests/delivery/test_student.py

## the speed benchmark: floor vs meta-train vs meta-test episodes (docs/speed.md)
bench: env
	$(PY) -m metalstm.tools.bench --threads 1

clean:
	rm -rf build .pytest_cache

## slow: notebook 06 in JupyterLab under headless Chromium, its widget clicked; and every slide of the six
## decks (`make slides` first) opened from files at 1280x720 with the network blocked: nothing off the
## screen, maths typeset, timed notes, font sizes; screenshots in build/browser/
## (installs Debian's chromium with apt-get and playwright into .venv; never `playwright install`)
browser-check: env
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) -m pip install --disable-pip-version-check -q playwright
	MPLBACKEND=Agg $(PY) -m metalstm.tools.course --slides-only
	$(TESTENV) $(PY) -m pytest -m browser -v -s tests/notebooks/test_browser.py
