"""Stacked agents (`pandalab train --seeds/--tasks`, learning/stacked.py, learning/stacked_trainer.py):
each agent equals its single run, agents never mix, a killed stacked run resumes exactly, bad
arguments get one line.

What "equals its single run" means on CPU (learning/stacked.py): the batches each agent draws
and its noise are bit for bit its single run's (the sampler's and the algorithm's generator states
are compared exactly after training), and so is everything but the matrix products; parameters,
Adam moments and logged losses agree to float rounding, because a batched matmul is another
kernel than the single run's (and torch's fused Adam rounds its SIMD body and tail differently).
The tolerance below is relative to each tensor's size, so a planted mistake that scales a
gradient (a mean over agents instead of a sum: Adam's first moment K times too small) fails.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from learning.checkpoint import load_checkpoint, settle_pending_checkpoints, write_checkpoint
from learning.stacked_trainer import StackedTrainer, agent_configs
from learning.train_config import TrainConfig, TrainError
from learning.trainer import train
from pandalab.cli import main as pandalab

from .helpers import write_session

REPO = Path(__file__).resolve().parents[2]
TINY = {"hidden_dims": [32, 32]}
UPDATES = 40


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_session(root, "s", [30, 25, 30], tip_fn=lambda e, t: (0.45 + 0.01 * t, 0.05 * e, 0.1))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(session: Path, out: Path | None, **kw) -> TrainConfig:
    fields = dict(
        data=[str(session)],
        algo="td3bc",
        algo_config=TINY,
        batch_size=16,
        updates=UPDATES,
        checkpoint_every=20,
        log_every=10,
        eval_episodes=0,
        out=None if out is None else str(out),
        threads=1,
        progress=False,
    )
    fields.update(kw)
    return TrainConfig(**fields)


def stacked(session: Path, out: Path, seeds, tasks=None, **kw) -> list[dict]:
    return StackedTrainer(agent_configs(config(session, out, **kw), list(seeds), tasks)).run()


def tensors(x, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint, by path."""
    if isinstance(x, torch.Tensor):
        return {prefix: x}
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list | tuple) else []
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def plain(x):
    """A nested checkpoint without its tensors (counters, learning rates, LR schedule states)."""
    if isinstance(x, torch.Tensor):
        return "tensor"
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return [plain(v) for v in x] if isinstance(x, list | tuple) else x


def compare(a: Path, b: Path, exact: bool) -> None:
    """Checkpoints ``a`` and ``b`` hold the same run: RNG states, counters and the LR schedule
    exactly, every float tensor (networks, targets, Adam moments, running losses) exactly or to
    float rounding."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert plain(ca["algorithm"]) == plain(cb["algorithm"])
    assert ca["step"] == cb["step"] and ca["algorithm"]["updates"] == cb["algorithm"]["updates"]
    assert torch.equal(ca["sampler"], cb["sampler"]), "the agent drew other batches"
    assert torch.equal(ca["algorithm"]["generator"], cb["algorithm"]["generator"]), "the agent drew other noise"
    ta, tb = tensors(ca["algorithm"]), tensors(cb["algorithm"])
    assert ta.keys() == tb.keys() and len(ta) > 20
    for key, x in ta.items():
        y = tb[key]
        assert x.shape == y.shape and x.dtype == y.dtype, key
        if exact or not x.is_floating_point():
            assert torch.equal(x, y), key
        else:
            scale = float(x.abs().max()) or 1.0
            torch.testing.assert_close(y, x, rtol=1e-3, atol=1e-4 * scale, msg=lambda m, key=key: f"{key}: {m}")


def train_rows(run_dir: Path) -> dict[tuple[int, str], float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return {
            (int(r["step"]), r["tag"]): float(r["value"])
            for r in csv.DictReader(f)
            if r["tag"] != "train/updates_per_s"
        }


TINY_BY_ALGO = {
    "td3bc": TINY,
    "bc": TINY,
    "iql": {**TINY, "max_steps": UPDATES},
    "bcq": {"vae_hidden": [32, 32], "actor_hidden": [32, 32], "critic_hidden": [32, 32]},
}


@pytest.mark.parametrize("algo", sorted(TINY_BY_ALGO))
def test_each_stacked_agent_trains_as_its_single_run(session, tmp_path, algo):
    tiny = dict(algo=algo, algo_config=TINY_BY_ALGO[algo])
    reports = stacked(session, tmp_path / "stack", seeds=[0, 2], tasks=["reach:0", "reach:1"], **tiny)
    assert [(r["task"], r["seed"]) for r in reports] == [("reach:0", 0), ("reach:0", 2), ("reach:1", 0), ("reach:1", 2)]
    for report in reports:
        single = tmp_path / f"single_{report['task']}_{report['seed']}"
        train(config(session, single, seed=report["seed"], task=report["task"], **tiny))
        agent = Path(report["run_dir"])
        assert agent == tmp_path / "stack" / f"{algo}_{report['task'].replace(':', '-')}_proprio_{report['seed']}"
        compare(single / "checkpoint.pt", agent / "checkpoint.pt", exact=False)
        ours, theirs = train_rows(agent), train_rows(single)
        assert ours.keys() == theirs.keys() and len(ours) > 2
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
        assert json.loads((agent / "config.json").read_text())["seed"] == report["seed"]
        assert report["stacked"]["agents"] == 4 and report["updates"] == UPDATES


def test_an_agent_does_not_depend_on_its_stack_mates(session, tmp_path):
    """Agent 0 of stacks of one size is bit for bit the same whoever the others are."""
    stacked(session, tmp_path / "a", seeds=[0, 1, 2])
    stacked(session, tmp_path / "b", seeds=[0, 5, 6])
    name = "td3bc_reach-0_proprio_0"
    compare(tmp_path / "a" / name / "checkpoint.pt", tmp_path / "b" / name / "checkpoint.pt", exact=True)


def test_stacked_run_continues_exactly_in_process(session, tmp_path):
    stacked(session, tmp_path / "straight", seeds=[3, 4])
    stacked(session, tmp_path / "split", seeds=[3, 4], updates=20)
    reports = stacked(session, tmp_path / "split", seeds=[3, 4])  # the same command, more updates: continues
    assert [r["updates"] for r in reports] == [UPDATES, UPDATES]
    for seed in (3, 4):
        name = f"td3bc_reach-0_proprio_{seed}"
        compare(tmp_path / "straight" / name / "checkpoint.pt", tmp_path / "split" / name / "checkpoint.pt", exact=True)
        assert train_rows(tmp_path / "split" / name) == train_rows(tmp_path / "straight" / name)  # losses too
    with pytest.raises(TrainError, match="checkpoints are at different updates"):  # a new agent cannot join
        StackedTrainer(agent_configs(config(session, tmp_path / "split", updates=60), [3, 4, 5]))
    assert not (tmp_path / "split" / "td3bc_reach-0_proprio_5").exists()


def test_sigkill_then_rerun_equals_the_uninterrupted_stacked_run(session, tmp_path):
    out, steps, every = tmp_path / "killed", 1200, 100
    cmd = [sys.executable, "-m", "pandalab.cli", "train", "--data", str(session), "--algo-config", json.dumps(TINY)]
    cmd += ["--batch-size", "16", "--updates", str(steps), "--checkpoint-every", str(every), "--eval-episodes", "0"]
    cmd += ["--out", str(out), "--threads", "1", "--no-progress", "--seeds", "0,1,2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = out / "td3bc_reach-0_proprio_2" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    assert 0 < load_checkpoint(first)["step"] < steps
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert rerun.stderr.count("resuming") == 3, rerun.stderr
    stacked(session, tmp_path / "straight", seeds=[0, 1, 2], updates=steps, checkpoint_every=every)
    for seed in (0, 1, 2):
        name = f"td3bc_reach-0_proprio_{seed}/checkpoint.pt"
        compare(tmp_path / "straight" / name, out / name, exact=True)
        assert load_checkpoint(out / name)["step"] == steps


def test_ctrl_c_between_the_agents_renames_is_held_until_every_checkpoint_is_in_place(session, tmp_path, monkeypatch):
    """Ctrl-C landing after the first agent's rename: held until every agent's checkpoint is renamed
    and recorded, so the line printed names checkpoints that are all on disk at that update."""
    import learning.checkpoint as checkpoint_module
    from pandalab.train import stacked_interrupted_text

    real_replace, renamed = checkpoint_module.os.replace, []

    def replace_then_ctrl_c(src, dst):  # os.replace everywhere: also the temp file -> .pending renames
        real_replace(src, dst)
        if Path(dst).name != "checkpoint.pt":
            return
        renamed.append(dst)
        if len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # Python acts on a signal between bytecodes: give it many
                time.sleep(0.001)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace_then_ctrl_c)
    configs = agent_configs(config(session, tmp_path / "out", updates=1000), [3, 4, 5])
    trainer = StackedTrainer(configs)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    monkeypatch.undo()
    assert trainer.saved_step == 20 and len(renamed) == 3
    assert [load_checkpoint(c.run_dir() / "checkpoint.pt")["step"] for c in configs] == [20, 20, 20]
    assert not list((tmp_path / "out").rglob("*.pending")), "a half-done commit was left"
    line = stacked_interrupted_text(configs, trainer, "pandalab train ...")
    assert "interrupted at update 20; last checkpoints (update 20) in " in line, line


def _fake(path: Path, step: int, pending: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".pending") if pending else path
    write_checkpoint(target, {"format": "pandalab-train-checkpoint", "step": step})


def test_checkpoints_a_kill_left_half_written_are_settled_together(tmp_path):
    paths = [tmp_path / d / "checkpoint.pt" for d in ("a", "b", "c")]
    # killed while writing the new checkpoints (c has none): every agent keeps update 100
    for p in paths:
        _fake(p, 100)
    _fake(paths[0], 200, pending=True)
    _fake(paths[1], 200, pending=True)
    settle_pending_checkpoints(paths)
    assert [load_checkpoint(p)["step"] for p in paths] == [100, 100, 100]
    assert not list(tmp_path.glob("*/*.pending"))
    # killed while renaming them (a is renamed, b and c pending): every agent moves to update 200
    _fake(paths[0], 200)
    _fake(paths[1], 200, pending=True)
    _fake(paths[2], 200, pending=True)
    settle_pending_checkpoints(paths)
    assert [load_checkpoint(p)["step"] for p in paths] == [200, 200, 200]
    assert not list(tmp_path.glob("*/*.pending"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0,0"], "--seeds: 0 given twice"),
        (["--seeds", "a"], "--seeds takes whole numbers >= 0 separated by commas"),
        (["--seeds", "1,-2"], "--seeds takes whole numbers"),
        (["--seeds", ",".join(map(str, range(17)))], "--seeds: 17 given; at most 16"),
        (["--seeds", "0,1,2,3", "--tasks", "reach:0,reach:1,reach:2,reach:3,push"], "20 agents; at most 16"),
        (["--seed", "1", "--seeds", "0,1"], "give --seed or --seeds, not both"),
        (["--task", "reach:0", "--tasks", "reach:1,reach:2"], "give --task or --tasks, not both"),
        (["--tasks", "reach:0,bogus"], "--tasks: unknown task 'bogus'"),
        (["--tasks", "reach:0,reach:0"], "--tasks: reach:0 given twice"),
        (["--algo", "cql", "--seeds", "0,1"], "algorithm 'cql' cannot train stacked agents on proprio observations"),
        (["--seeds", "0,1", "--resume", "somewhere.pt"], "--resume PATH names one checkpoint"),
    ],
)
def test_bad_stack_arguments_get_one_line_and_exit_2(session, tmp_path, capsys, extra, message):
    args = ["train", "--data", str(session), "--updates", "5", "--eval-episodes", "0", "--no-progress"]
    assert pandalab([*args, "--out", str(tmp_path / "x"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pandalab train: ") and message in err, err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_cli_trains_a_stack_into_single_run_directories(session, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", str(session), "--algo", "bc", "--algo-config", json.dumps(TINY), "--updates", "10"]
    assert pandalab([*args, "--batch-size", "8", "--eval-episodes", "0", "--no-progress", "--seeds", "4,7"]) == 0
    out = capsys.readouterr().out
    for seed in (4, 7):  # where `--seed N` would put each
        run = Path("runs") / f"bc_reach-0_proprio_{seed}"
        assert (run / "report.json").is_file() and str(run) in out
        assert load_checkpoint(run)["config"]["seed"] == seed
    assert "stacked    2 bc agents, 10 updates each" in out


def test_ctrl_c_prints_one_line_with_the_agents_checkpoints_and_the_command_that_resumes(session, tmp_path):
    out = tmp_path / "interrupted"
    args = ["train", "--data", str(session), "--algo-config", json.dumps(TINY), "--batch-size", "16", "--seeds", "1,2"]
    args += ["--updates", "1000000", "--checkpoint-every", "50", "--eval-episodes", "0", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pandalab", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    last_agent = out / "td3bc_reach-0_proprio_2" / "checkpoint.pt"
    while not last_agent.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pandalab train: interrupted at update "), err
    assert "last checkpoints (update " in last and str(out / "td3bc_reach-0_proprio_1") in last, last
    assert shlex.split(last.split("; resume with: ")[1])[1:] == args  # the very command, runnable as printed
