# edgekit: `make demo` runs the whole pipeline, `make test` the test suite. Both build .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: help venv mosquitto postgres lint wheels-aarch64 test demo bench dist clean

help:
	@echo "make demo   train, convert, and stream the example through a broker, a server and a device agent"
	@echo "make test   run the test suite (installs Mosquitto and PostgreSQL with apt-get when run as root)"
	@echo "make lint   pyflakes-level checks (ruff); part of make test"
	@echo "make wheels-aarch64   the core + device and device-onnx extras install from Linux aarch64 wheels (Pi); part of make test"
	@echo "make bench  run the benchmarks in benchmarks/"
	@echo "make dist   build the sdist and the wheel (edgekit-split) into dist/, to copy to a Pi (docs/device.md)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3 found: install Python 3.11 (apt-get install python3 python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# The real broker. Installed when we can (root with apt-get); otherwise stop and say the exact command.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto (apt-get)"; \
	    (apt-get install -y -qq mosquitto >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }) \
	    && systemctl disable --now mosquitto >/dev/null 2>&1 || true; \
	  fi; \
	  command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	    echo "error: Mosquitto is not installed: run 'sudo apt-get install mosquitto' and try again"; exit 1; }; }

# The real PostgreSQL for the results store's tests (they start their own server from its binaries, so the
# package's own service is disabled). Installed when we can (root with apt-get); otherwise the exact command.
PG_INITDB = ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
postgres:
	@$(PG_INITDB) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (apt-get)"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && \
	     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }) \
	    && systemctl disable --now postgresql >/dev/null 2>&1 || true; \
	  fi; \
	  $(PG_INITDB) || { \
	    echo "error: PostgreSQL is not installed: run 'sudo apt-get install postgresql' and try again"; exit 1; }; }

lint: venv
	$(BIN)/ruff check --quiet .

# A Raspberry Pi installs edgekit-split[device] from wheels only: a dependency without a Linux aarch64 wheel fails
# here, naming it. Wheels are cached under .venv, so only the first run downloads (~120 MB).
wheels-aarch64: venv
	$(BIN)/python tools/check_wheels.py --extra device --extra device-onnx --python 3.11 --python 3.12 --python 3.13 \
	  --dest $(VENV)/wheels-aarch64

test: venv mosquitto postgres lint wheels-aarch64
	$(BIN)/python -m pytest -q

# The demo prefers Mosquitto and falls back to the embedded amqtt broker when it cannot be installed.
demo: venv
	@$(MAKE) --no-print-directory mosquitto 2>/dev/null || echo "Mosquitto not available: the demo uses the embedded amqtt broker (MQTT 3.1.1)"
	$(BIN)/edgekit demo

bench: venv mosquitto
	$(BIN)/python benchmarks/bench_codecs.py
	$(BIN)/python benchmarks/bench_load.py

# The distribution edgekit-split (the package and the command stay edgekit): dist/edgekit_split-VERSION.tar.gz and
# dist/edgekit_split-VERSION-py3-none-any.whl, which a Pi installs with pip (docs/device.md, Install on a Pi).
# python -m build makes the wheel from the sdist in a clean environment: nothing stale from build/ gets in.
dist: venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) .demo .pytest_cache .hypothesis build dist
