# cnnlab developer entry points. `make demo` and `make test` work on a fresh machine
# with Python >= 3.10, pip, gcc and make: everything else is installed here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch that lies on this disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
DEMO_EPOCHS ?= 10
DEMO_RUNS ?= runs/demo

.PHONY: setup browser demo test bench gpu-check lint data clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

data: setup
	bash scripts/get_fashion_mnist.sh $(PY)

demo: setup data
	$(VENV)/bin/cnnlab compare lecture-simple lecture-inception lecture-residual \
		--data fashion-mnist --epochs $(DEMO_EPOCHS) --out $(DEMO_RUNS) --overwrite

# Chromium for tests/test_report_browser.py: installed with apt-get when missing and allowed
browser:
	bash scripts/ensure_chromium.sh

test: setup browser
	$(PY) -m pytest -n 2 --dist worksteal --durations=25 tests

bench: setup data
	$(PY) benchmarks/run_all.py

# On a machine with a CUDA GPU: the registry, one epoch per lecture net and resnet20-cifar (fp32/bf16,
# channels_last on/off), DDP over NCCL with 2+ GPUs, torch.compile; writes gpu_check.json (exit 1 without a GPU).
gpu-check: setup data
	$(PY) scripts/gpu_check.py --out gpu_check.json

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
