# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# constraints.txt pins torch to the CPU wheel on our dev/CI machines; pyproject keeps ranges open.
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test lint screenshots clean bundle bundle-smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e ".[test]"
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-packaging: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e ".[packaging]"
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/s2s

test: $(VENV)/.installed-test
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The onedir app (dist/Subject2Subject) and its archive dist/subject2subject-VERSION-OS-ARCH.tar.gz.
bundle: $(VENV)/.installed-packaging
	$(BIN)/python packaging/build.py

# Runs the built bundle headless (version, screenshot without torch, engine hello, demo generate, a
# model folder, a 2-step LoRA run) from a fresh S2S_HOME.
bundle-smoke: $(VENV)/.installed-packaging
	$(BIN)/python packaging/smoke.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check engine s2s_desktop tests packaging benchmarks

clean:
	rm -rf $(VENV) build dist
