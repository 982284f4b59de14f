"""The training checkpoint (``checkpoint.pt`` in a run directory): what it holds, how it is
written, read, matched against a run and restored.

A checkpoint is a ``torch.save``d dict (``format`` `CHECKPOINT_FORMAT`, ``version``
`CHECKPOINT_VERSION`) holding the algorithm's state (networks, target networks, optimisers,
counters, the normalisation statistics of its `ObservationSpec`), the step counter, every RNG state
(torch, CUDA, numpy, python, the dataset sampler's generator), the evaluation history and what
`pandalab eval` needs to rebuild the policy and the robot without the data (config, observation
spec, action scale, camera, frame stack, env spec). It is replaced atomically (temp file, fsync,
rename). A checkpoint whose `IDENTITY_FIELDS` differ from a run's (another algorithm, observation
kind, task, data or hyper-parameters) is refused.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from learning.train_config import TrainConfig, TrainError
from store import atomic_write_bytes

if TYPE_CHECKING:
    from learning.algorithms.base import Algorithm, ObservationSpec
    from learning.dataset import OfflineDataset

CHECKPOINT_FORMAT = "pandalab-train-checkpoint"
CHECKPOINT_VERSION = 1
IDENTITY_FIELDS = (
    "algo",
    "obs",
    "task",
    "data",
    "algo_config",
    "batch_size",
    "n_step",
    "gamma",
    "seed",
    "camera",
    "frame_stack",
    "upsample_alpha",
    "terminal_on_success",
)
"""Fields a resumed run must share with its checkpoint (anything else, e.g. ``updates``, may change)."""


class RunState(NamedTuple):
    """What a run has done so far, saved in its checkpoint and restored from it."""

    step: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    train_seconds: float
    eval_seconds: float


def identity(config: TrainConfig) -> dict[str, Any]:
    d = config.model_dump(mode="json")
    ident = {k: d[k] for k in IDENTITY_FIELDS}
    ident["data"] = [str(Path(p).resolve()) for p in d["data"]]
    return ident


def make_checkpoint(
    config: TrainConfig,
    algo: Algorithm,
    dataset: OfflineDataset,
    eval_steps: int,
    state: RunState,
    rng: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint of a run now (the global RNG states are read at this call unless ``rng`` gives
    them: a stacked agent saves the states its own run would hold)."""
    spec = dataset.obs_spec
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "identity": identity(config),
        "config": config.model_dump(mode="json"),
        "algo": config.algo,
        "algo_config": algo.config.model_dump(mode="json"),
        "obs": config.obs,
        "task": config.task,
        "obs_spec": {"kind": spec.kind, "shape": list(spec.shape), "mean": spec.mean, "std": spec.std},
        "action_dim": algo.action_dim,
        "action_limit": dataset.action_limit,
        "camera": dataset.camera,
        "frame_stack": dataset.frame_stack,
        "env_spec": dataset.env_spec,
        "eval_steps": eval_steps,
        "step": state.step,
        "algorithm": algo.state_dict(),
        "rng": rng_state() if rng is None else rng,
        "sampler": dataset.sampler_state(),
        "history": state.history,
        "best": state.best,
        "train_seconds": state.train_seconds,
        "eval_seconds": state.eval_seconds,
    }


@contextlib.contextmanager
def ctrl_c_held():
    """Hold Ctrl-C (SIGINT) until the block ends, then act on it: a checkpoint's rename and the
    trainer's record of the step it holds happen together, so the one line printed after Ctrl-C
    names the checkpoint really on disk. Off the main thread (where handlers cannot be set) the
    block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's default raises KeyboardInterrupt here
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def write_checkpoint(path: Path, ckpt: dict[str, Any]) -> Path:
    """Replace ``path`` atomically with ``ckpt``."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file (or the checkpoint.pt of a run directory); `TrainError` if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise TrainError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise TrainError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a pandalab training checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def check_checkpoint_matches(ckpt: dict[str, Any], config: TrainConfig) -> None:
    """Refuse a checkpoint of another algorithm, observation, task, data or hyper-parameters."""
    saved = ckpt["identity"]
    ours = identity(config)
    for key in IDENTITY_FIELDS:
        if saved.get(key) != ours.get(key):
            raise TrainError(
                f"checkpoint {ckpt['path']} was trained with {key}={saved.get(key)!r}, not {ours.get(key)!r}: "
                "it cannot continue this run (choose another --out, or the same settings)"
            )


PENDING_SUFFIX = ".pending"
"""A stacked run writes its agents' checkpoints together: first each as ``checkpoint.pt.pending``,
then renames them all (`write_checkpoints_together`); `settle_pending_checkpoints` finishes or
drops a commit that a kill interrupted, so the agents always resume from the same update."""


def write_checkpoints_together(checkpoints: list[tuple[Path, dict[str, Any]]]) -> None:
    """Write several checkpoints so that a kill at any moment leaves either all the old ones or,
    after `settle_pending_checkpoints`, all the new ones."""
    for path, ckpt in checkpoints:
        write_checkpoint(path.with_name(path.name + PENDING_SUFFIX), ckpt)
    for path, _ in checkpoints:
        os.replace(path.with_name(path.name + PENDING_SUFFIX), path)


def settle_pending_checkpoints(paths: list[Path]) -> None:
    """Finish (every agent has its new checkpoint, pending or already renamed) or drop (some never
    got one) the commit of `write_checkpoints_together` that a kill interrupted."""
    pending = [p.with_name(p.name + PENDING_SUFFIX) for p in paths]
    if not any(p.is_file() for p in pending):
        return
    steps = {int(load_checkpoint(p)["step"]) for p in pending if p.is_file()}
    complete = len(steps) == 1 and all(
        p.is_file() or (path.is_file() and int(load_checkpoint(path)["step"]) in steps)
        for path, p in zip(paths, pending, strict=True)
    )
    for path, p in zip(paths, pending, strict=True):
        if p.is_file():
            if complete:
                os.replace(p, path)
            else:
                p.unlink()


def find_resume_checkpoint(config: TrainConfig, resume: bool | str | Path | None) -> dict[str, Any] | None:
    """The checkpoint a run continues from: ``resume`` if it is a path, else the run directory's own
    (re-running the same command continues the run); None for a fresh run. `TrainError` for
    ``resume=True`` without one, or a checkpoint that does not match ``config``."""
    own = config.run_dir() / "checkpoint.pt"
    if resume not in (None, False, True):
        ckpt = load_checkpoint(resume)
    elif own.is_file():
        ckpt = load_checkpoint(own)
    elif resume is True:
        raise TrainError(f"--resume: no checkpoint in {config.run_dir()}")
    else:
        return None
    check_checkpoint_matches(ckpt, config)
    return ckpt


def restore_checkpoint(ckpt: dict[str, Any], algo: Algorithm, dataset: OfflineDataset) -> RunState:
    """Load the algorithm's state, every RNG state and the sampler's from ``ckpt``; return the run's state."""
    algo.load_state_dict(ckpt["algorithm"])
    _set_rng_state(ckpt["rng"])
    dataset.load_sampler_state(ckpt["sampler"])
    return RunState(
        step=int(ckpt["step"]),
        history=list(ckpt.get("history", [])),
        best=ckpt.get("best"),
        train_seconds=float(ckpt.get("train_seconds", 0.0)),
        eval_seconds=float(ckpt.get("eval_seconds", 0.0)),
    )


def obs_spec_from_checkpoint(ckpt: dict[str, Any]) -> ObservationSpec:
    """The observation spec (with its normalisation statistics) the checkpoint's algorithm was built with."""
    from learning.algorithms.base import ObservationSpec

    spec = ckpt["obs_spec"]
    return ObservationSpec(spec["kind"], tuple(spec["shape"]), spec["mean"], spec["std"])


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, python) as a checkpoint saves them."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002 (the global stream other code may draw from)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
