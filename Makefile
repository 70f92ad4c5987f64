# Two commands a newcomer needs:  make demo   (the main job)   and   make test   (the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU torch only. Elsewhere, add TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?= -m "not slow"

.PHONY: demo demo-headless test lint benchmarks clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[qt,testing,batch,benchmarks]"
	touch $@

demo: $(BIN)/.installed  ## open napari with the sample pair and the CoMIR widgets
	$(BIN)/napari-comir demo

demo-headless: $(BIN)/.installed  ## the same pipeline without a GUI: prints the result
	$(BIN)/napari-comir demo --headless

test: $(BIN)/.installed  ## all fast tests (GUI tests run on Xvfb through pytest-xvfb)
	OMP_WAIT_POLICY=PASSIVE QT_QPA_PLATFORM=xcb $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks docs

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
