"""The trainer: checkpoints and exact resume (also after a real SIGKILL), reports, `pandalab eval`."""

from __future__ import annotations

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

from learning.checkpoint import load_checkpoint
from learning.progress import summary_text
from learning.train_config import TrainConfig, TrainError
from learning.trainer import train
from pandalab.cli import main as pandalab

from .helpers import write_session

REPO = Path(__file__).resolve().parents[2]
TINY = {"hidden_dims": [32, 32]}


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_session(root, "s", [30, 25, 30], tip_fn=lambda e, t: (0.45 + 0.01 * t, 0.05 * e, 0.1))


def config(session: Path, out: Path, **kw) -> TrainConfig:
    fields = dict(
        data=[str(session)],
        algo="td3bc",
        algo_config=TINY,
        batch_size=16,
        updates=60,
        checkpoint_every=20,
        eval_episodes=0,
        out=str(out),
        threads=1,
        progress=False,
    )
    fields.update(kw)
    return TrainConfig(**fields)


def params(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)["algorithm"]
    return {f"{net}.{k}": v for net, sd in state["networks"].items() for k, v in sd.items()}


def assert_same_params(a: Path, b: Path) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys() and len(pa) > 4
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_resume_continues_exactly_in_process(session, tmp_path):
    train(config(session, tmp_path / "straight"))
    train(config(session, tmp_path / "split", updates=30))  # stops at 30 (checkpoint 20 and a final one at 30)
    assert load_checkpoint(tmp_path / "split")["step"] == 30
    report = train(config(session, tmp_path / "split"))  # the same command with more updates continues
    assert report["updates"] == 60
    assert_same_params(tmp_path / "straight" / "checkpoint.pt", tmp_path / "split" / "checkpoint.pt")
    ckpt = load_checkpoint(tmp_path / "split")
    assert {"algorithm", "rng", "sampler", "step", "obs_spec", "env_spec", "history"} <= set(ckpt)
    assert {"networks", "optimizers", "generator"} <= set(ckpt["algorithm"])
    assert any("target" in k for k in ckpt["algorithm"]["networks"])
    assert ckpt["obs_spec"]["mean"] is not None  # normalisation statistics travel with the checkpoint


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_parameters(session, tmp_path):
    out = tmp_path / "killed"
    steps, every = 1500, 100
    cmd = [
        sys.executable,
        "-m",
        "pandalab.cli",
        "train",
        "--data",
        str(session),
        "--algo",
        "td3bc",
        "--algo-config",
        json.dumps(TINY),
        "--batch-size",
        "16",
        "--updates",
        str(steps),
        "--checkpoint-every",
        str(every),
        "--eval-episodes",
        "0",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = out / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    killed_at = load_checkpoint(out)["step"]
    assert 0 < killed_at < steps and killed_at % every == 0
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"from update {killed_at}" in rerun.stderr
    assert load_checkpoint(out)["step"] == steps
    torch.set_num_threads(1)
    train(config(session, tmp_path / "straight", updates=steps, checkpoint_every=every))
    assert_same_params(tmp_path / "straight" / "checkpoint.pt", ckpt)


def test_ctrl_c_prints_one_line_with_the_last_checkpoint_and_the_command_that_resumes(session, tmp_path):
    out = tmp_path / "interrupted"
    args = ["train", "--data", str(session), "--algo-config", json.dumps(TINY), "--batch-size", "16"]
    args += ["--updates", "1000000", "--checkpoint-every", "50", "--eval-episodes", "0", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pandalab", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pandalab train: interrupted at update "), err
    assert f"last checkpoint {out / 'checkpoint.pt'} (update " in last and "; resume with: " in last, last
    assert shlex.split(last.split("; resume with: ")[1])[1:] == args  # the very command, runnable as printed
    # progress came at once: the data loading, then the first update
    assert "data: checking the episodes of s: 3/3" in err and "update 1/1000000" in err, err


def test_ctrl_c_while_a_checkpoint_is_renamed_into_place_names_that_checkpoint(session, tmp_path, monkeypatch):
    """Ctrl-C landing just after the rename (before the trainer recorded the step) is held until the
    step is recorded: the line printed names the checkpoint really on disk, not "no checkpoint yet"."""
    import learning.trainer as trainer_module
    from learning.trainer import Trainer
    from pandalab.train import interrupted_text

    real_write = trainer_module.write_checkpoint

    def write_then_ctrl_c(path, ckpt):
        written = real_write(path, ckpt)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # Python acts on a signal between bytecodes: give it many
            time.sleep(0.001)
        return written

    monkeypatch.setattr(trainer_module, "write_checkpoint", write_then_ctrl_c)
    cfg = config(session, tmp_path / "run", updates=1000, checkpoint_every=20)
    trainer = Trainer(cfg)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert trainer.saved_step == load_checkpoint(tmp_path / "run")["step"] == 20
    line = interrupted_text(cfg, trainer, "pandalab train ...")
    assert f"last checkpoint {cfg.run_dir() / 'checkpoint.pt'} (update 20); resume with: " in line, line
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C acts as before afterwards


def test_report_json_and_eval_command(session, tmp_path, capsys):
    out = tmp_path / "run"
    report = train(config(session, out, updates=40, eval_every=20, eval_episodes=2, eval_steps=15))
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["updates"] == 40 and on_disk["algo"] == "td3bc" and on_disk["task"] == "reach:0"
    assert [e["step"] for e in on_disk["history"]] == [20, 40]
    for key in ("success_rate", "return_mean", "closest_distance_mean_m", "final_distance_mean_m"):
        assert key in on_disk["last"] and key in on_disk["best"]
    assert on_disk["last"]["closest_distance_mean_m"] <= on_disk["last"]["final_distance_mean_m"]
    assert on_disk["dataset"]["transitions"] == 29 + 24 + 29
    assert on_disk["behaviour"]["closest_distance_m"] > 0 and "episode_closest_distance_mean_m" in on_disk["behaviour"]
    assert on_disk["eval"]["backend"] == "pybullet" and on_disk["eval"]["episode_steps"] == 15
    assert report["last"] == on_disk["last"]
    # training and evaluation time apart: updates/s count training time only
    assert on_disk["evaluations"] == 2 and on_disk["eval_seconds"] > 0 and on_disk["updates_per_s"] > 0
    assert on_disk["train_seconds"] > 0 and "evaluation 2 x 2 episodes x 15 steps" in summary_text(on_disk)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,tag,value" and any(",eval/closest_distance_mean_m," in r for r in rows)
    assert list((out / "tb").glob("events.out.tfevents.*"))

    video = tmp_path / "rollout.mp4"
    capsys.readouterr()
    code = pandalab(
        [
            "eval",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--episodes",
            "2",
            "--episode-steps",
            "12",
            "--video",
            str(video),
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)
    assert "episode 1/2: success" in printed.err and "episode 2/2: success" in printed.err  # progress per episode
    assert result["episodes"] == 2 and result["algo"] == "td3bc" and result["step"] == 40
    assert "closest_distance_mean_m" in result
    import av

    with av.open(str(video)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert container.streams.video[0].codec_context.name == "h264"
    assert len(frames) == 13 and frames[0].shape[0] >= 240  # enlarged to at least 240 pixels high

    assert pandalab(["eval", "--checkpoint", str(out), "--algo", "bcq", "--episodes", "1"]) == 2
    assert "td3bc algorithm checkpoint, not bcq" in capsys.readouterr().err
    assert pandalab(["eval", "--checkpoint", str(out), "--obs", "image", "--episodes", "1"]) == 2
    assert "not image" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert pandalab(["eval", "--checkpoint", str(junk)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_mismatched_checkpoints_and_bad_data_fail_at_once(session, tmp_path, capsys):
    out = tmp_path / "run"
    train(config(session, out, updates=20))
    with pytest.raises(TrainError, match="algo='td3bc', not 'bc'"):
        train(config(session, out, algo="bc"))
    with pytest.raises(TrainError, match="obs='proprio', not 'proprio\\+object'"):
        train(config(session, tmp_path / "other", obs="proprio+object"), resume=out / "checkpoint.pt")
    with pytest.raises(TrainError, match="no checkpoint"):
        train(config(session, tmp_path / "fresh"), resume=True)
    base = ["train", "--updates", "5", "--eval-episodes", "0", "--no-progress", "--out", str(tmp_path / "x")]
    (tmp_path / "empty").mkdir()
    assert pandalab([*base, "--data", str(tmp_path / "empty")]) == 2
    assert "no episodes" in capsys.readouterr().err
    hw = write_session(tmp_path / "hw", "bench", [5], privileged=False)
    assert pandalab([*base, "--data", str(hw), "--task", "push"]) == 2
    err = capsys.readouterr().err
    assert "needs privileged simulator state" in err and "session bench" in err
    assert pandalab([*base, "--data", str(session), "--resume", str(out), "--algo", "bcq"]) == 2
    assert "algo='td3bc', not 'bcq'" in capsys.readouterr().err


def test_collecting_never_loads_the_trainer():
    code = (
        "import sys, pandalab.cli as c; c.build_parser().parse_args(['collect', '--config', 'x']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'learning'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_image_policy_trains_and_evaluates_with_the_same_frame_stack(tmp_path):
    sd = write_session(tmp_path / "data", "img", [12, 10], image=(16, 16))
    drq = {"encoder_channels": 4, "hidden_dim": 32, "feature_dim": 8}
    report = train(
        config(
            sd,
            tmp_path / "drq",
            algo="drqbc",
            obs="image",
            algo_config=drq,
            updates=6,
            checkpoint_every=3,
            eval_episodes=1,
            eval_steps=5,
        )
    )
    assert report["dataset"]["obs_shape"] == [9, 16, 16] and report["dataset"]["n_step"] == 3  # DrQ+BC: 3-step
    assert report["last"]["episodes"] == 1
    ckpt = load_checkpoint(tmp_path / "drq")
    assert ckpt["camera"] == "front" and ckpt["frame_stack"] == 3
