"""Shared test set-up: headless rendering through EGL on Mesa's CPU rasteriser; Ctrl-C reaches the
programs the tests start.

Tests press Ctrl-C (SIGINT) on the programs they start, as an operator does. A suite started in the
background of a non-interactive shell (``make test &``) inherits SIGINT ignored, and so would every
child (Python leaves an ignored SIGINT ignored, and no KeyboardInterrupt is ever raised): the
suite's own process takes Python's default handler back, so that children start with SIGINT at its
default disposition."""

import os
import signal

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
