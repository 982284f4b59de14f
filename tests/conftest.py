"""Shared test set-up: headless rendering through EGL on Mesa's CPU rasteriser."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
