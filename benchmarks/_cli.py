"""What every benchmark script shares: how it is started and how it ends.

Each script puts the repository root on ``sys.path`` first (so that both
``.venv/bin/python benchmarks/NAME.py`` and ``.venv/bin/python -m benchmarks.NAME`` work, from any
directory), parses its arguments before doing any work (``--help`` runs nothing), and runs its
``main`` through `run_script`: Ctrl-C then ends it with one line on stderr and exit code 130
instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(main: Callable[[], int | None]) -> None:
    """Run a benchmark's ``main`` as the program: its return value (None: 0) is the exit code;
    Ctrl-C prints one line (``NAME: interrupted``) and exits 130."""
    name = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c") else "benchmark"
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr, flush=True)
        code = 130
    sys.exit(code or 0)


def ignore_sigint() -> None:
    """For worker processes: Ctrl-C reaches the whole process group; only the parent should act on it
    (it then terminates the workers), so the workers print no traceback of their own."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
