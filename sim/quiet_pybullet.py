"""pybullet, imported without the "pybullet build time" banner its C module prints on stderr.

The banner would otherwise open the output of every `pandalab` command that loads the PyBullet
backend (and make one-line error reports two lines).  It is printed with C stdio, so stderr's file
descriptor is pointed at /dev/null while the module loads and C's buffer is flushed before it is
restored.  Only the import is silenced: errors printed later reach stderr as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys


def _import_quietly():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        import pybullet

        return pybullet
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import pybullet

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return pybullet


pybullet = _import_quietly()
