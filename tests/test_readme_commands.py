"""Every command of README.md's ```bash blocks runs as written, in a fresh copy of the checkout,
against the simulators, and exits as documented.

The commands are read from README.md itself, so the README cannot drift from what works. They run
in order (later ones use what earlier ones recorded and trained) in a copy of the files git knows
(tracked, and untracked but not ignored) with ``.venv`` linked to this checkout's, and with no
venv on PATH: exactly what a new user has after `make demo`. Every command must start with one of
`PROGRAMS` (the README's one convention: the venv's programs by their path).

What the test changes, budgets only (the command text itself always comes from the README):

- the copy's configs/*.yaml get 20-step episodes (the demo 50, stopped after 300 steps) and
  private ``ipc://`` addresses, so that no other collector on this machine is in the way;
- `SUBSTITUTE` replaces budget arguments (``--updates N`` -> 3, ``eval --episodes N`` -> 1) and
  `APPEND` adds budget flags at the end (argparse: the last one wins), e.g. ``train`` gets
  ``--eval-episodes 0 --batch-size 16``, ``sim check`` ``--steps 5``, ``make demo``
  ``DEMO_ARGS=...``; `BENCHMARK_ARGS` gives the cheap benchmarks tiny budgets and the others
  ``--help`` (minutes to hours of work; their ``--help`` still proves the command as written
  starts, imports and parses);
- data no README command records: the DrQ+BC example trains on ``out/bench_offline/data/
  scripted_reacher``, which `benchmarks/offline_learning.py` records; the test records a small
  one with that benchmark's own `record_scripted` first.

Commands that run until stopped are run the way an operator does: a foreground ``collect`` until
the collector answers with enough finished episodes, then Ctrl-C (exit 0: it finishes the episode);
``ctl watch`` until its first line, then Ctrl-C (exit 0); ``tensorboard`` until it serves, then
Ctrl-C; the daemon started by ``collect --detach`` is stopped by the README's own ``ctl stop``.
Skipped, with the reason in `SKIPPED`: ``make test`` (the suite this test belongs to). A command
the README shows twice (``make demo``) runs once.

Printed commands are checked too: the demo's ``eval`` hint and ``collect --detach``'s ``ctl
status`` hint are run as printed.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PROGRAMS = (".venv/bin/pandalab", ".venv/bin/python", ".venv/bin/tensorboard", "make")
"""How every README command starts: the venv's programs by their path, or make."""
SKIPPED = {"make test": "runs `ruff` and the whole test suite, this test included"}
SUBSTITUTE = [
    (re.compile(r"--updates \d+"), "--updates 3"),
    (re.compile(r"(pandalab eval .*)--episodes \d+"), r"\1--episodes 1"),
]
APPEND = [
    (re.compile(r"^make demo$"), ["DEMO_ARGS=--updates 20 --eval-episodes 1"]),
    (re.compile(r"pandalab sim check"), ["--steps", "5"]),
    (re.compile(r"pandalab train "), ["--eval-episodes", "0", "--batch-size", "16", "--threads", "1"]),
    (re.compile(r"pandalab eval "), ["--episode-steps", "10"]),
    (re.compile(r"tensorboard "), ["--port", "0"]),
]
BENCHMARK_ARGS = {
    "safety_filter.py": ["--steps", "50", "--repeats", "1"],
    "store_throughput.py": ["--steps", "20", "--episodes", "1"],
}
"""Tiny budgets for the cheap benchmarks; every other one gets ``--help``."""
CONFIG_EPISODE_STEPS = {"demo.yaml": 50, "sim_reach_joint.yaml": 20, "sim_cube_tip.yaml": 20, "sim_bridge.yaml": 20}
EPISODES_BEFORE_CTRL_C = {"sim_reach_joint.yaml": 1, "sim_cube_tip.yaml": 4, "sim_bridge.yaml": 1}
"""Finished episodes a foreground collector records before the test presses Ctrl-C (the README's
`data video ... --episode 3` needs four in sim_cube_tip)."""
COMMAND_TIMEOUT_S = 240


def readme_commands(text: str | None = None) -> list[str]:
    """The commands of the ```bash blocks, in order: continuation lines joined, comments dropped."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def test_every_readme_command_uses_the_venv_programs_by_their_path():
    commands = readme_commands()
    assert len(commands) > 20
    for command in commands:
        assert command.split()[0] in PROGRAMS, f"README command does not run as written after `make demo`: {command}"
        if command.startswith(".venv/bin/python"):
            assert re.match(r"\.venv/bin/python benchmarks/\w+\.py", command), command


OWNED_ELSEWHERE = {"safety_soak", "fit_collision_capsules"}
"""Benchmarks of the safety layer, with their own conventions (tests/safety)."""


@pytest.mark.parametrize(
    "script", sorted(p.stem for p in (REPO / "benchmarks").glob("[a-z]*.py") if p.stem not in OWNED_ELSEWHERE)
)
def test_every_benchmark_has_a_help_that_runs_nothing_both_ways(script, tmp_path):
    """``python benchmarks/X.py --help`` from anywhere, and ``python -m benchmarks.X --help`` from the root."""
    as_file = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{script}.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert as_file.returncode == 0 and "usage:" in as_file.stdout, as_file.stderr[-2000:]
    as_module = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert as_module.returncode == 0 and "usage:" in as_module.stdout, as_module.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # --help wrote nothing


# ---------------------------------------------------------------------------------- the walk


class Checkout:
    """A fresh copy of the checkout with the budgets above, and the processes run in it."""

    def __init__(self, root: pathlib.Path, sockets: pathlib.Path) -> None:
        self.root, self.sockets = root, sockets
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        venv_bin = str(REPO / ".venv" / "bin")
        self.env["PATH"] = os.pathsep.join(
            p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not p.startswith(venv_bin)
        )
        self.env.pop("VIRTUAL_ENV", None)
        self.daemon_pid: int | None = None
        self.log = root / "test-output"
        self.log.mkdir()
        self.count = 0

    @classmethod
    def create(cls, tmp_path: pathlib.Path, sockets: pathlib.Path) -> Checkout:
        root = tmp_path / "checkout"
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        for name in sorted(set(filter(None, listed.split("\0")))):
            source = REPO / name
            if source.is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, root / name)  # mtimes kept: make sees the venv up to date
        (root / ".venv").symlink_to(REPO / ".venv")
        checkout = cls(root, sockets)
        checkout.shrink_configs()
        return checkout

    def shrink_configs(self) -> None:
        for name, steps in CONFIG_EPISODE_STEPS.items():
            path = self.root / "configs" / name
            config = yaml.safe_load(path.read_text())
            config["episode_steps"] = steps
            if name == "demo.yaml":
                config["stop"] = {"steps": 300}
            stem = path.stem
            config["control_address"] = f"ipc://{self.sockets}/{stem}-c"
            config["telemetry_address"] = f"ipc://{self.sockets}/{stem}-t"
            path.write_text(yaml.safe_dump(config, sort_keys=False))

    def control_address(self, config: str) -> str:
        return yaml.safe_load((self.root / config).read_text())["control_address"]

    # -- processes

    def start(self, argv: list[str]) -> tuple[subprocess.Popen, pathlib.Path]:
        self.count += 1
        out = self.log / f"{self.count:02d}.txt"
        with open(out, "w") as sink:
            process = subprocess.Popen(argv, cwd=self.root, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
        return process, out

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str]:
        process, out = self.start(argv)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"{shlex.join(argv)} did not finish within {timeout} s:\n{tail(out.read_text())}")
        return code, out.read_text()

    def run_until(self, argv: list[str], ready, timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str]:
        """Run until ``ready(output so far)`` holds, then Ctrl-C (SIGINT) and wait for the exit."""
        process, out = self.start(argv)
        deadline = time.monotonic() + timeout
        try:
            while not ready(out.read_text()):
                if process.poll() is not None:
                    pytest.fail(f"{shlex.join(argv)} exited {process.returncode} early:\n{tail(out.read_text())}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{shlex.join(argv)}: not ready within {timeout} s:\n{tail(out.read_text())}")
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        return code, out.read_text()

    def status(self, config: str) -> dict:
        from collector.control import send_request

        try:
            return send_request(self.control_address(config), "status", timeout_s=0.5)
        except TimeoutError:
            return {}

    def stop_daemon(self) -> None:
        if self.daemon_pid is not None and _alive(self.daemon_pid):
            os.kill(self.daemon_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def budgeted(command: str) -> list[str]:
    """The README command with the test's budgets (module docstring)."""
    for pattern, replacement in SUBSTITUTE:
        command = pattern.sub(replacement, command)
    argv = shlex.split(command)
    for pattern, extra in APPEND:
        if pattern.search(command):
            argv += extra
    if argv[0] == ".venv/bin/python":
        argv += BENCHMARK_ARGS.get(pathlib.Path(argv[1]).name, ["--help"])
    return argv


def record_scripted_reacher(checkout: Checkout) -> None:
    """The data `benchmarks/offline_learning.py` trains DrQ+BC on, recorded the same way, smaller."""
    code = (
        "import pathlib, sys; sys.path.insert(0, '.'); import benchmarks.offline_learning as b; "
        "b.EPISODE_STEPS = 20; b.record_scripted(pathlib.Path('out/bench_offline/data'), 3, 24, 0.3, 0.1, seed=0)"
    )
    result, output = checkout.run([".venv/bin/python", "-c", code])
    assert result == 0, output


@pytest.mark.slow
def test_readme_command_blocks_run_as_written(tmp_path):
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout (the fresh copy is made of the files git knows)")
    commands = readme_commands()
    sockets = pathlib.Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))  # ipc:// paths must stay short
    checkout = Checkout.create(tmp_path, sockets)
    ran: list[str] = []
    try:
        for command in commands:
            if command in SKIPPED or command in ran:  # a command shown twice (make demo) runs once
                continue
            if "out/bench_offline/data/scripted_reacher" in command:
                record_scripted_reacher(checkout)
            argv = budgeted(command)
            code, output = _run_readme_command(checkout, command, argv)
            assert code == 0, f"{command}\n(run as: {shlex.join(argv)})\nexit {code}:\n{tail(output)}"
            assert "Traceback" not in output, f"{command}:\n{tail(output)}"
            ran.append(command)
    finally:
        checkout.stop_daemon()
        shutil.rmtree(sockets, ignore_errors=True)
    assert set(ran) == set(commands) - set(SKIPPED)


def _run_readme_command(checkout: Checkout, command: str, argv: list[str]) -> tuple[int, str]:
    if command == "make demo":
        dry = subprocess.run(
            ["make", "-n", "demo"], cwd=checkout.root, env=checkout.env, capture_output=True, text=True
        )
        if "pip install" in dry.stdout:
            pytest.fail("the venv is out of date: `make demo` would reinstall it (run `make demo` once first)")
        code, output = checkout.run(argv)
        # the commands it prints run as printed
        assert "$ .venv/bin/pandalab collect --config configs/demo.yaml" in output, tail(output)
        assert ".venv/bin/tensorboard --logdir out/demo/runs" in output, tail(output)
        hint = re.search(r"\((\.venv/bin/pandalab eval --checkpoint \S+ --video td3bc\.mp4)\)", output)
        assert hint, tail(output)
        again, printed = checkout.run([*shlex.split(hint.group(1)), "--episodes", "1", "--episode-steps", "5"])
        assert again == 0 and (checkout.root / "td3bc.mp4").is_file(), tail(printed)
        return code, output
    if " collect " in f" {command} " and "--detach" in argv:
        code, output = checkout.run(argv)
        config = argv[argv.index("--config") + 1]
        checkout.daemon_pid = checkout.status(config).get("pid")
        assert checkout.daemon_pid, f"the detached collector does not answer:\n{output}"
        hint = re.search(r"watch it with: (.*)", output)
        assert hint and hint.group(1).startswith(".venv/bin/pandalab ctl status"), output
        again, printed = checkout.run(shlex.split(hint.group(1)))
        assert again == 0 and '"state"' in printed, printed
        return code, output
    if " collect " in f" {command} ":
        config = argv[argv.index("--config") + 1]
        wanted = EPISODES_BEFORE_CTRL_C[pathlib.Path(config).name]
        return checkout.run_until(argv, lambda _: checkout.status(config).get("episodes", 0) >= wanted)
    if " ctl watch" in command:
        return checkout.run_until(argv, lambda out: '"state"' in out)
    if " ctl stop" in command:
        code, output = checkout.run(argv)
        deadline = time.monotonic() + 120
        while checkout.daemon_pid and _alive(checkout.daemon_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (checkout.daemon_pid and _alive(checkout.daemon_pid)), "ctl stop: the daemon did not exit"
        return code, output
    if "tensorboard" in argv[0]:
        code, output = checkout.run_until(argv, lambda out: "http://" in out)
        return (0 if code in (0, -signal.SIGINT, 130) else code), output
    return checkout.run(argv)
