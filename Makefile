# The two set-up commands of README.md: `make demo` and `make test`.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
# Example footage: people walking (OpenCV's vtest.avi), taken from Debian's opencv-doc package.
DEMO_INPUT ?= out/media/vtest.avi

.PHONY: install test demo lint

$(PYTHON):
	python3 -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
install: $(PYTHON)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install -q -e ".[test]"

test: install
	$(PYTHON) -m ruff check setup.py posecli tests bench examples
	$(PYTHON) -m ruff format --check setup.py posecli tests bench examples
	$(PYTHON) -m pytest -q

out/media/vtest.avi:
	mkdir -p out/media
	cd out/media && (apt-get download opencv-doc 2>/dev/null || (apt-get update -qq && apt-get download opencv-doc))
	dpkg-deb --fsys-tarfile out/media/opencv-doc_*.deb \
		| tar -xO ./usr/share/doc/opencv-doc/examples/data/vtest.avi > $@.part
	mv $@.part $@ && rm -f out/media/opencv-doc_*.deb

demo: install $(DEMO_INPUT)
	$(VENV)/bin/posecli video "$(DEMO_INPUT)" --out out/demo.mp4 --json out/demo.jsonl --force
	$(VENV)/bin/posecli report out/demo.jsonl --video "$(DEMO_INPUT)" --out out/demo_report.html --force

lint: $(PYTHON)
	$(PYTHON) -m ruff check setup.py posecli tests bench examples
	$(PYTHON) -m ruff format --check setup.py posecli tests bench examples
