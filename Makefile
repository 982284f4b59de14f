# pandalab: `make demo` and `make test` set everything up themselves on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FRANKY_SIM_VENV := .venv-franky-sim
FRANKY_SIM_STAMP := $(FRANKY_SIM_VENV)/.installed
LEROBOT_VENV := .venv-lerobot
LEROBOT_STAMP := $(LEROBOT_VENV)/.installed
STANDIN_C_DIR := tools/franka_ros2_standin_c
STANDIN_C := $(STANDIN_C_DIR)/build/standin
# Headless rendering (EGL / OSMesa), RealSense's libusb, and Cyclone DDS 0.10 with its IDL compiler and a
# C compiler for the C franka_ros2 stand-in (ROS 2 Humble and Jazzy's Cyclone line).
DEB_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libosmesa6 libusb-1.0-0 \
	cyclonedds-dev cyclonedds-tools gcc libc6-dev
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test lint format bench sysdeps venv clean

venv: $(STAMP)

# Rebuilt only when the pinned requirements or the package metadata change. minari is installed with
# --no-deps: it declares numpy>=2 but runs on our numpy 1.26 (tests/pandalab/test_export_minari.py);
# its other needs (typer, h5py, gymnasium) are in requirements.txt.
$(STAMP): requirements.txt pyproject.toml | sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps robosuite==1.5.2
	$(BIN)/pip install -q --disable-pip-version-check --no-deps minari==0.5.4
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# franky-sim in its own venv (it needs mujoco 4 and pinocchio 3+; ours pins mujoco 3.3.7): the bridge
# tests run it as a subprocess speaking libfranka's protocol on 127.0.0.1.
$(FRANKY_SIM_STAMP): tools/franky-sim-requirements.txt
	@test -x $(FRANKY_SIM_VENV)/bin/python || $(PYTHON) -m venv $(FRANKY_SIM_VENV)
	$(FRANKY_SIM_VENV)/bin/pip install -q --disable-pip-version-check -r tools/franky-sim-requirements.txt
	@touch $(FRANKY_SIM_STAMP)

# LeRobot 0.4 in its own venv (it pins torch < 2.11 and numpy 2): the LeRobot export test reads the
# exported datasets there with LeRobot's own LeRobotDataset, as a subprocess. Our local CPU torch
# first, then the pins, then LeRobot and torchvision with --no-deps (tools/lerobot-requirements.txt).
$(LEROBOT_STAMP): tools/lerobot-requirements.txt
	@test -x $(LEROBOT_VENV)/bin/python || $(PYTHON) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0
	$(LEROBOT_VENV)/bin/pip install -q --disable-pip-version-check -r tools/lerobot-requirements.txt
	sed -n 's/^# no-deps: //p' tools/lerobot-requirements.txt | \
	  xargs $(LEROBOT_VENV)/bin/pip install -q --disable-pip-version-check --no-deps
	@touch $(LEROBOT_STAMP)

# The franka_ros2 stand-in in C on Debian's Cyclone DDS 0.10 (tests/e2e/test_bridge_ros2.py runs it
# against the ros2 arm on PyPI's Cyclone 11: the two versions interoperate on ROS 2's wire format).
$(STANDIN_C): $(STANDIN_C_DIR)/standin.c $(STANDIN_C_DIR)/ros2_messages.idl | sysdeps
	@mkdir -p $(STANDIN_C_DIR)/build
	cd $(STANDIN_C_DIR)/build && idlc ../ros2_messages.idl && \
	  gcc -O2 -Wall -Wextra -o standin ../standin.c ros2_messages.c -I. -lddsc -lm

# Debian packages (see DEB_PACKAGES).
sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "Missing Debian packages for $$missing"; \
	    echo "Run:  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint $(FRANKY_SIM_STAMP) $(LEROBOT_STAMP) $(STANDIN_C)
	$(BIN)/python -m pytest -q --durations=20

# Collect in simulation with the real daemon, train TD3+BC and BC on reach:0, evaluate, print the table.
# DEMO_ARGS adds options of `pandalab demo` (e.g. DEMO_ARGS="--updates 1000" for a shorter run).
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/pandalab demo --config configs/demo.yaml --out out/demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_throughput.py

clean:
	rm -rf $(VENV) $(FRANKY_SIM_VENV) $(LEROBOT_VENV) $(STANDIN_C_DIR)/build .pytest_cache .ruff_cache
