# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates or refreshes the virtual environment (.venv) by itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo

.PHONY: venv demo test test-slow lint clean

# The real TensorRT 10.3 and 11.4 Python bindings (about 1.2 MB each), for tests/test_tensorrt_versions.py.
# The two versions cannot be installed side by side, so the wheels are kept as files and the test
# unpacks each one itself; without them (no index reachable) those tests skip and say why.
TRT_WHEELS := tensorrt-cu12-bindings==10.3.0 tensorrt-cu12-bindings==11.4.0.106

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	for w in $(TRT_WHEELS); do $(PY) -m pip download -q --no-deps -d $(VENV)/trt-wheels "$$w" \
		|| echo "warning: could not download $$w; tests/test_tensorrt_versions.py will skip"; done
	touch $(STAMP)

venv: $(STAMP)

# Train a teacher on the bundled digits, then compress it for a Jetson Orin Nano: distil,
# export, benchmark. Prints the table; the full report is $(DEMO)/run/report.md.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/edgekd train-teacher --arch cnn_medium --data digits --epochs 30 --out $(DEMO)/teacher.pt
	$(VENV)/bin/edgekd compress --teacher $(DEMO)/teacher.pt --target jetson-orin-nano --data digits \
		--student cnn_small --epochs 30 --baseline --out $(DEMO)/run

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check edgekd tests benchmarks
	$(VENV)/bin/ruff format --check edgekd tests benchmarks

clean:
	rm -rf $(DEMO) runs .pytest_cache
