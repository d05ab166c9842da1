# The two set-up commands of README.md: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
DEMO_INPUT ?= /usr/share/doc/opencv-doc/examples/data/vtest.avi

.PHONY: install test demo lint bench

$(PYTHON):
	python3 -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
install: $(PYTHON)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install -q -e ".[test]"

test: install
	$(PYTHON) -m ruff check posecli tests bench examples
	$(PYTHON) -m pytest -q

demo: install
	mkdir -p out
	$(VENV)/bin/posecli video "$(DEMO_INPUT)" --out out/demo.mp4 --json out/demo.jsonl --force

lint: $(PYTHON)
	$(PYTHON) -m ruff check posecli tests bench examples
