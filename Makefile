# The README's two commands: `make run` (the main job on the bundled defaults) and `make test`.
# Each does all set-up itself (scripts/setup.sh: apt packages, .venv, pinned pip installs).
VENV ?= .venv
THREEDB := $(VENV)/bin/threedb
PY := $(VENV)/bin/python

.PHONY: setup run preview test bench bench-robustness bench-verification clean

setup:
	@bash scripts/setup.sh

# The quickstart: probe the shipped quickstart model (assets/models/quickstart) with configs/quickstart.yaml.
# Each `make run` starts afresh in runs/quickstart (the previous results there are replaced). The summary
# goes to the terminal (stderr); its JSON form (threedb run's stdout) is in runs/quickstart/summary.json.
QUICKSTART_RUN ?= runs/quickstart

run: setup
	rm -rf $(QUICKSTART_RUN)
	$(THREEDB) run configs/quickstart.yaml --out $(QUICKSTART_RUN) --render-workers 2 > /dev/null
	@echo
	@echo "results: $(QUICKSTART_RUN)/details.log (JSON lines), $(QUICKSTART_RUN)/images/, $(QUICKSTART_RUN)/summary.json"
	@echo "explore them:  $(THREEDB) dashboard $(QUICKSTART_RUN)    (then open the address it prints)"

preview: setup
	$(THREEDB) render configs/preview.yaml --out previews -n 6

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/render_overhead.py
	$(PY) benchmarks/pipeline_efficiency.py
	$(PY) benchmarks/evaluator_overhead.py
	$(PY) benchmarks/evaluator_throughput.py
	$(PY) benchmarks/render_scaling.py
	$(PY) benchmarks/dashboard_load.py

bench-robustness: setup
	$(PY) benchmarks/attack_peers.py
	$(PY) benchmarks/adv_training_peers.py
	$(PY) benchmarks/smoothing_peers.py
	$(PY) benchmarks/smoothing_throughput.py --segmentation

# Complete verification against its anchors, quick settings (about 10 minutes on 2 cores); the full-size
# runs (89 mnistfc instances x 120 s x 2 tools: hours) are in the scripts' docstrings and write to
# benchmarks/results/; these quick ones write their JSON and markdown to benchmarks/results/quick/.
bench-verification: setup
	$(PY) benchmarks/verification_peers.py --nets 256x2 --limit 6 --timeout 30 --jobs 2 --out benchmarks/results/quick
	$(PY) benchmarks/verification_wk17a.py --n 10 --timeout 60 --ablation-n 2 --ablation-timeout 30 \
		--distortion-timeout 120 --out benchmarks/results/quick

clean:
	rm -rf previews runs/quickstart .pytest_cache
