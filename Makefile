# The README's two commands: `make run` (the main job on the bundled defaults) and `make test`.
# Each does all set-up itself (scripts/setup.sh: apt packages, .venv, pinned pip installs).
VENV ?= .venv
THREEDB := $(VENV)/bin/threedb
PY := $(VENV)/bin/python

.PHONY: setup run test bench clean

setup:
	@bash scripts/setup.sh

run: setup
	$(THREEDB) render configs/preview.yaml --out previews -n 6

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/render_overhead.py
	$(PY) benchmarks/pipeline_efficiency.py

clean:
	rm -rf previews .pytest_cache
