"""Offline datasets: transitions from the episode store, relabelled for a task, sampled on the device.

Reading. Episodes come from the store's reader, `store.SessionReader` (damaged files are
skipped with the store's `DamagedEpisodeWarning`; an `.h5` the manifest does not list yet is read
too, with the store's warning). Each episode of T steps holds the states s_0..s_{T-1} and the
command a_t sent in s_t (after the safety filter: always 7 joint velocities, also in ``tip_delta``
sessions). It gives the T - 1 transitions (s_t, a_t, r_{t+1}, s_{t+1}), t < T - 1: the last
state has no successor. The reward r_{t+1} is the task's reward of s_{t+1} (`learning.relabel`).
An episode salvaged from a damaged `.partial` may miss steps in its middle (`Episode.segments()`):
each run of consecutive steps is then treated like an episode of its own (no transition, n-step
window or frame stack crosses the gap).

Ends of episodes. Every end in this project is a truncation, never a terminal: the time limit
(``complete``) and the cuts (``safety_stop``, ``fault``, ``operator_stop``, ``crash_salvaged``)
stop the recording, not the task, and the tasks have no terminal states (reach's success is not
terminal in seed 001's protocol: the arm may overshoot and the return keeps counting). So value
targets bootstrap from the last state of the window. ``terminal_on_success=True`` makes the task's
success a terminal instead (an option for sparse tasks; off by default).

n-step returns (precomputed once, so sampling is three gathers): for the transition from state t,
k = min(n, T - 1 - t) steps fit in its episode; reward = sum_{j<k} gamma^j r_{t+j+1},
next_obs = s_{t+k}, discount = gamma^k (0 when a terminal falls inside the window).

Observations (``obs``):

- ``proprio``: q and dq, the 14 values of seed 001;
- ``proprio+object``: adds the cube position (3) and quaternion (4) from privileged state:
  simulation data only, refused with `PrivilegedStateMissing` otherwise;
- ``image``: one camera's uint8 frames, each kept ONCE (N, 3, H, W); the stack of
  ``frame_stack`` frames (oldest first, channels concatenated: (3 * stack, H, W)) is rebuilt at
  sample time from the frame indices t - stack + 1..t, clamped to the episode's first frame, so a
  stack never crosses an episode start (the first frame repeats, as DrQ's environment wrapper does
  at reset). Datasets larger than RAM use a memory-mapped cache of the frames, built once
  (``image_cache``: ``memory``, ``memmap`` or ``auto``: memmap when the frames exceed half of the
  available memory), under ``cache_dir`` (default ``<data root>/.pandalab-cache``).

Actions are the commands divided by the session's joint velocity caps (safety.velocity_cap, min
with the hardware limits) into [-1, 1]; `action_limit` scales a policy's output back.

Vector data lives as torch tensors on the training device; frames as one uint8 tensor (on the
device, or in CPU memory / the memory map). Batches are drawn by index with a `torch.Generator`
whose state `sampler_state()` returns for checkpoints. Up-sampling of rewarded transitions (seed
002 section 4.2): with ``upsample_alpha`` > 0 each batch element comes with probability alpha from
Unif(D_highrew) (the transitions whose s_{t+1} satisfies the task's success predicate), else from
Unif(D).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learning.algorithms.base import ObservationSpec
from learning.relabel import PRIVILEGED_KEYS, check_privileged, relabel
from sim.tasks import Task, make_task
from store import (
    SPEC_FILE,
    Episode,
    SessionReader,
    SessionSpec,
    SpecError,
    atomic_write_text,
    find_sessions,
    read_manifest,
    read_session_spec,
)
from store.spec import OBSERVATION_FIELDS

OBS_KINDS = ("proprio", "proprio+object", "image")
BASE_KEYS = ("obs/q", "obs/dq", "obs/tip_pos", "command")


class DatasetError(ValueError):
    """Data that cannot be trained on (the message says why and names the session)."""


class DamagedSessionError(DatasetError):
    """A session whose session.yaml is there but cannot be read as its settings (not UTF-8, not
    YAML, not a mapping, a setting of the wrong type); the message is one line naming the file."""


class DatasetWarning(UserWarning):
    """Data left out of a dataset (a session with a damaged session.yaml), named in the message."""


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """A session learning reads: where it lies and what it recorded (`store.spec.SessionSpec`)."""

    path: Path
    spec: SessionSpec

    @property
    def session_id(self) -> str:
        return self.spec.session_id or self.path.name

    @property
    def velocity_caps(self) -> np.ndarray:
        """Joint velocity caps of the session's safety limits, rad/s: the action scale."""
        from safety.limits import SafetyLimits

        return SafetyLimits(**self.spec.safety).velocity_caps

    def env_spec(self) -> dict[str, Any]:
        """How to rebuild the robot the data came from, for evaluation (`learning.evaluate`)."""
        return self.spec.env_spec()


def read_session_info(session_dir: Path) -> SessionInfo:
    """What learning needs of the session at ``session_dir`` (`store.read_session_spec`: its
    session_spec.json, or for an older session its session.yaml).

    Raises DatasetError when the session has neither, and `DamagedSessionError` (one line naming
    the file) when it cannot be read or holds a setting of the wrong type."""
    session_dir = Path(session_dir)
    if not (session_dir / SPEC_FILE).is_file() and not (session_dir / "session.yaml").is_file():
        raise DatasetError(f"session {session_dir} has no session.yaml (needed for the action scale and evaluation)")
    try:
        info = SessionInfo(session_dir, read_session_spec(session_dir))
    except SpecError as error:
        raise DamagedSessionError(str(error)) from None
    try:
        info.velocity_caps  # noqa: B018 - the action scale: a safety section that does not validate is damage
    except (TypeError, ValueError) as error:
        name = SPEC_FILE if (session_dir / SPEC_FILE).is_file() else "session.yaml"
        raise DamagedSessionError(f"{session_dir / name}: damaged {name}: {_first_problem(error)}") from None
    return info


def _first_problem(error: Exception) -> str:
    """One line: a pydantic error's first field and message, else the exception's text."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (+{len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
        return f"safety.{where}: {first['msg']}{more}" if where else f"safety: {first['msg']}{more}"
    return " ".join(str(error).split())


def _check_compatible(infos: list[SessionInfo]) -> None:
    first = infos[0]
    for other in infos[1:]:
        for name, a, b in (
            ("action spaces", first.spec.action_space, other.spec.action_space),
            ("cameras", first.spec.cameras, other.spec.cameras),
            ("control rates", first.spec.control_rate_hz, other.spec.control_rate_hz),
        ):
            if a != b:
                raise DatasetError(
                    f"sessions {first.path} and {other.path} have different {name} ({a} vs {b}); "
                    "train on sessions recorded alike"
                )
        if not np.array_equal(first.velocity_caps, other.velocity_caps):
            raise DatasetError(
                f"sessions {first.path} and {other.path} have different joint velocity caps "
                f"({first.velocity_caps.tolist()} vs {other.velocity_caps.tolist()}): their actions scale differently"
            )


def _listed_episodes(session_dir: Path) -> int | None:
    """How many episodes the manifest lists (for progress; None when it cannot be read: the store
    reports that itself when the episodes are read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return len(read_manifest(session_dir))
        except Exception:
            return None


def _available_memory_bytes() -> int:
    """Memory available to this process without swapping, bytes (psutil)."""
    import psutil

    return int(psutil.virtual_memory().available)


def nstep_targets(
    reward_next: np.ndarray, terminal_next: np.ndarray, ep_last: np.ndarray, n: int, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step return, next-state index and discount of the transition from every state index.

    ``reward_next[i]`` / ``terminal_next[i]``: reward and terminal flag of the state after i (only
    meaningful where i < ep_last[i]); ``ep_last[i]``: index of the last state of i's episode. Rows
    with i == ep_last[i] (no transition) get reward 0, next i, discount 0."""
    size = reward_next.shape[0]
    index = np.arange(size)
    ret = np.zeros(size, dtype=np.float64)
    discount = np.ones(size, dtype=np.float64)
    cur = index.copy()
    alive = index < ep_last
    discount[~alive] = 0.0
    for _ in range(n):
        active = alive & (cur < ep_last)
        if not active.any():
            break
        rows = np.flatnonzero(active)
        ret[rows] += discount[rows] * reward_next[cur[rows]]
        ended = terminal_next[cur[rows]]
        discount[rows] *= gamma
        cur[rows] += 1
        discount[rows[ended]] = 0.0
        alive[rows[ended]] = False
        alive &= active
    return ret.astype(np.float32), cur, discount.astype(np.float32)


class OfflineDataset:
    """Transitions of one or more sessions for one task and observation kind (module docstring).

    Args:
        sources: session directories or data roots holding them.
        task: a `sim.tasks.Task` or its name (``reach:0``, ``push``, ...).
        obs: ``proprio``, ``proprio+object`` or ``image``.
        n_step, gamma: n-step returns (DrQ+BC: 3; the others 1) and the discount.
        camera: the image observation's camera (default: the session's first).
        frame_stack: frames per image observation (DrQ: 3).
        upsample_alpha: share of each batch drawn from the rewarded transitions (0: uniform).
        terminal_on_success: treat the task's success as terminal (default False: no terminals).
        device: where tensors live and batches are built.
        image_cache: ``memory``, ``memmap`` or ``auto``; cache_dir: where the memory map goes.
        seed: seed of the sampler's generator.
        progress: called as ``progress(stage, done, total)`` while reading, relabelling and
            loading frames (the trainer prints it, throttled); ``total`` may be None.
    """

    def __init__(
        self,
        sources: str | os.PathLike | Iterable[str | os.PathLike],
        task: Task | str,
        obs: str = "proprio",
        *,
        n_step: int = 1,
        gamma: float = 0.99,
        camera: str | None = None,
        frame_stack: int = 3,
        upsample_alpha: float = 0.0,
        terminal_on_success: bool = False,
        device: str | torch.device = "cpu",
        image_cache: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        verify_checksum: bool = True,
        progress: Callable[[str, int, int | None], None] | None = None,
    ) -> None:
        if obs not in OBS_KINDS:
            raise DatasetError(f"unknown observation kind {obs!r}; known: {', '.join(OBS_KINDS)}")
        if n_step < 1:
            raise DatasetError(f"n_step must be at least 1, got {n_step}")
        if not 0.0 <= upsample_alpha < 1.0:
            raise DatasetError(f"upsample_alpha must be in [0, 1), got {upsample_alpha}")
        if image_cache not in ("memory", "memmap", "auto"):
            raise DatasetError(f"image_cache must be memory, memmap or auto, got {image_cache!r}")
        if isinstance(sources, str | os.PathLike):
            sources = [sources]
        self.sources = [Path(s) for s in sources]
        self.task = make_task(task) if isinstance(task, str) else task
        self.obs_kind = obs
        self.n_step, self.gamma = int(n_step), float(gamma)
        self.frame_stack = int(frame_stack) if obs == "image" else 1
        self.upsample_alpha = float(upsample_alpha)
        self.terminal_on_success = terminal_on_success
        self.device = torch.device(device)
        self._progress = progress or (lambda stage, done, total=None: None)

        try:
            session_dirs = find_sessions(self.sources)
        except FileNotFoundError as error:
            raise DatasetError(str(error)) from None
        episodes: list[Episode] = []
        infos: list[SessionInfo] = []
        self.skipped_sessions: list[str] = []
        """One line per session left out (its session.yaml is damaged), naming the file."""
        for sd in session_dirs:
            try:
                info: SessionInfo | None = read_session_info(sd)
            except DamagedSessionError as error:  # skipped like a damaged episode, with a warning below
                self.skipped_sessions.append(str(error))
                continue
            except DatasetError:
                info = None  # no session.yaml: refused below if the session holds episodes
            listed = _listed_episodes(sd)
            stage = f"{'checking' if verify_checksum else 'opening'} the episodes of {sd.name}"
            self._progress(stage, 0, listed)
            reader = SessionReader(sd, required_keys=BASE_KEYS, verify_checksum=verify_checksum, include_unlisted=True)
            eps = reader.refresh(progress=lambda done, stage=stage, listed=listed: self._progress(stage, done, listed))
            eps = [e for e in eps if e.steps >= 2]
            if not eps:
                continue
            infos.append(info if info is not None else read_session_info(sd))
            for e in eps:
                e.session_dir = sd  # type: ignore[attr-defined]
            episodes += eps
        if not episodes and self.skipped_sessions:
            raise DatasetError("; ".join(self.skipped_sessions) + " (no other session holds episodes)")
        for skipped in self.skipped_sessions:
            warnings.warn(f"{skipped}; skipping the session", DatasetWarning, stacklevel=2)
        if not episodes:
            where = ", ".join(str(s) for s in self.sources)
            raise DatasetError(
                f"no episodes with at least 2 steps in {where} "
                f"({len(session_dirs)} session director{'y' if len(session_dirs) == 1 else 'ies'} found); "
                "point --data at session directories (holding manifest.jsonl and episodes/) or their data root"
            )
        _check_compatible(infos)
        self.sessions = infos
        self.session_info = infos[0]
        self.env_spec = infos[0].env_spec()
        self.action_limit = infos[0].velocity_caps.astype(np.float32)
        by_dir = {i.path: i for i in infos}

        needs_privileged = self.task.requires_privileged or obs == "proprio+object"
        if needs_privileged:
            what = f"task {self.task.name}" if self.task.requires_privileged else "observation proprio+object"
            for e in episodes:
                check_privileged(what, e.fields, f"{by_dir[e.session_dir].session_id} ({e.session_dir})")
        self.camera = None
        if obs == "image":
            cams = [c.name for c in self.session_info.spec.cameras]
            if not cams:
                raise DatasetError(f"observation image needs a camera; session {self.session_info.path} recorded none")
            self.camera = camera or cams[0]
            if self.camera not in cams:
                raise DatasetError(f"camera {self.camera!r} not recorded in {self.session_info.path}; it has {cams}")
            missing = [e for e in episodes if f"obs/images/{self.camera}" not in e.fields]
            if missing:
                raise DatasetError(f"episode {missing[0].path} has no images from camera {self.camera!r}")

        self.episodes = episodes
        lengths = np.array([e.steps for e in episodes], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        size = int(starts[-1])
        self.episode_starts = starts
        self.num_episodes = len(episodes)
        self.num_states = size
        self.outcomes = [e.outcome for e in episodes]

        vec_keys = OBSERVATION_FIELDS.get(obs, ())
        task_keys = ["obs/tip_pos"] + ([k for k in PRIVILEGED_KEYS] if self.task.requires_privileged else [])
        vector = np.empty((size, sum(int(np.prod(episodes[0].fields[k].shape)) for k in vec_keys)), np.float32)
        actions = np.empty((size, 7), np.float32)
        reward_state = np.empty(size, np.float32)
        success_state = np.empty(size, bool)
        tip = np.empty((size, 3), np.float64)
        first = np.empty(size, np.int64)
        ep_last = np.empty(size, np.int64)
        stage = f"reading and relabelling for {self.task.name}"
        for e_num, ep in enumerate(episodes):
            self._progress(stage, e_num, len(episodes))
            a, b = int(starts[e_num]), int(starts[e_num + 1])
            arrays = {k: ep.load(k) for k in set(vec_keys) | set(task_keys) | {"command"}}
            if vec_keys:
                vector[a:b] = np.concatenate([arrays[k].reshape(b - a, -1) for k in vec_keys], axis=1)
            command = arrays["command"].reshape(b - a, -1)
            if command.shape[1] != 7:
                raise DatasetError(f"{ep.path}: command has {command.shape[1]} values, expected 7 joint velocities")
            actions[a:b] = np.clip(command / self.action_limit, -1.0, 1.0)
            reward_state[a:b], success_state[a:b] = relabel(self.task, arrays)
            tip[a:b] = arrays["obs/tip_pos"]
            for s, t in ep.segments():  # one (0, T) unless a salvage lost steps: no transition across a gap
                first[a + s : a + t] = a + s
                ep_last[a + s : a + t] = a + t - 1
            ep.close()
        self._progress(stage, len(episodes), len(episodes))
        self.tip_pos = tip
        self.reward_state = reward_state
        self.success_state = success_state

        # Per transition start i: reward / success of s_{i+1} (0 / False on the last state of an episode).
        reward_next = np.zeros(size, np.float32)
        success_next = np.zeros(size, bool)
        reward_next[:-1] = reward_state[1:]
        success_next[:-1] = success_state[1:]
        is_start = np.arange(size) < ep_last
        reward_next[~is_start] = 0.0
        success_next[~is_start] = False
        terminal_next = success_next if terminal_on_success else np.zeros(size, bool)
        ret, nxt, disc = nstep_targets(reward_next.astype(np.float64), terminal_next, ep_last, self.n_step, self.gamma)
        self.valid_np = np.flatnonzero(is_start)
        self.high_np = np.flatnonzero(is_start & success_next)
        self.num_transitions = int(self.valid_np.size)
        self.terminal_next = terminal_next
        self.reward_next = reward_next
        self.success_next = success_next

        dev = self.device
        self.actions = torch.from_numpy(actions).to(dev)
        self.nstep_reward = torch.from_numpy(ret).to(dev)
        self.nstep_next = torch.from_numpy(nxt).to(dev)
        self.nstep_discount = torch.from_numpy(disc).to(dev)
        self.valid = torch.from_numpy(self.valid_np).to(dev)
        self.high = torch.from_numpy(self.high_np).to(dev)
        if self.upsample_alpha > 0 and self.high_np.size == 0:
            warnings.warn(
                f"upsample_alpha={self.upsample_alpha}: no transition reaches success of {self.task.name}; "
                "sampling uniformly",
                stacklevel=2,
            )
        self.first = torch.from_numpy(first).to(dev)

        if obs == "image":
            self.vector = None
            self.obs_mean = self.obs_std = None
            self.frames, self.frames_kind = self._load_frames(image_cache, cache_dir)
            _, c, h, w = self.frames.shape
            self.obs_spec = ObservationSpec("image", (c * self.frame_stack, h, w))
        else:
            self.frames, self.frames_kind = None, None
            self.vector = torch.from_numpy(vector).to(dev)
            mean = vector.astype(np.float64).mean(0)
            std = vector.astype(np.float64).std(0)  # raw: the algorithms add their own epsilon
            self.obs_mean, self.obs_std = mean.astype(np.float32), std.astype(np.float32)
            self.obs_spec = ObservationSpec("vector", (vector.shape[1],), self.obs_mean, self.obs_std)
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(int(seed))

    # ------------------------------------------------------------------------------ images

    def _cache_key(self) -> str:
        parts = [
            [str(e.path.resolve()), e.index, e.steps, e.info.sha256 if e.info is not None else None]
            for e in self.episodes
        ]
        return hashlib.sha256(json.dumps([self.camera, parts]).encode()).hexdigest()[:20]

    def _fill_frames(self, out: np.ndarray, stage: str) -> None:
        key = f"obs/images/{self.camera}"
        n = len(self.episodes)
        for e_num, ep in enumerate(self.episodes):
            self._progress(stage, e_num, n)
            a, b = int(self.episode_starts[e_num]), int(self.episode_starts[e_num + 1])
            out[a:b] = ep.load(key).transpose(0, 3, 1, 2)
            ep.close()
        self._progress(stage, n, n)

    def _load_frames(self, mode: str, cache_dir) -> tuple[torch.Tensor, str]:
        h, w, c = self.episodes[0].fields[f"obs/images/{self.camera}"].shape
        shape = (self.num_states, c, h, w)
        nbytes = int(np.prod(shape))
        if mode == "auto":
            mode = "memmap" if nbytes > _available_memory_bytes() // 2 else "memory"
        if mode == "memory":
            frames = np.empty(shape, np.uint8)
            self._fill_frames(frames, f"loading {nbytes / 2**20:.1f} MiB of {self.camera} frames into memory")
            return torch.from_numpy(frames).to(self.device), "memory"
        root = Path(cache_dir) if cache_dir is not None else self.session_info.path.parent / ".pandalab-cache"
        root.mkdir(parents=True, exist_ok=True)
        key = self._cache_key()
        path, meta = root / f"frames-{key}.u8", root / f"frames-{key}.json"
        if not (path.is_file() and meta.is_file() and json.loads(meta.read_text()).get("shape") == list(shape)):
            tmp = root / f".frames-{key}.{os.getpid()}.tmp"
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            self._fill_frames(mm, f"writing {nbytes / 2**20:.1f} MiB of {self.camera} frames to the cache {path}")
            mm.flush()
            del mm
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            atomic_write_text(
                meta, json.dumps({"shape": list(shape), "camera": self.camera, "episodes": len(self.episodes)})
            )
        else:
            self._progress(f"reusing the frame cache {path}", 1, 1)
        frames = np.load(path, mmap_mode="c")  # copy-on-write map: writable for torch, never written
        return torch.from_numpy(frames), "memmap"

    def image_bytes(self) -> int:
        """Bytes of image data held in memory (0 for a memory map), plus the index arrays images need."""
        held = self.frames.numel() if self.frames is not None and self.frames_kind == "memory" else 0
        return held + self.first.numel() * self.first.element_size()

    def raw_frame_bytes(self) -> int:
        return 0 if self.frames is None else self.frames.numel()

    def observations(self, index: torch.Tensor) -> torch.Tensor:
        """Observations of states ``index`` (a tensor on the dataset's device): (B, D) float32 or
        (B, 3 * stack, H, W) uint8 stacks, oldest frame first, never crossing an episode start."""
        if self.vector is not None:
            return self.vector[index]
        first = self.first[index]
        offsets = torch.arange(self.frame_stack - 1, -1, -1, device=index.device)
        rows = torch.maximum(index[:, None] - offsets[None, :], first[:, None])  # (B, stack)
        rows = rows.to(self.frames.device)
        stack = self.frames[rows.reshape(-1)]  # (B * stack, C, H, W)
        b = index.shape[0]
        return stack.reshape(b, -1, *stack.shape[-2:]).to(self.device, non_blocking=True)

    # ------------------------------------------------------------------------------ sampling

    def batch(self, index: torch.Tensor | Sequence[int]) -> dict[str, torch.Tensor]:
        """The transitions starting at state indices ``index`` (see the algorithm contract)."""
        index = torch.as_tensor(index, dtype=torch.int64, device=self.device)
        nxt = self.nstep_next[index]
        return {
            "obs": self.observations(index),
            "action": self.actions[index],
            "reward": self.nstep_reward[index],
            "discount": self.nstep_discount[index],
            "next_obs": self.observations(nxt),
        }

    def sample_indices(self, batch_size: int) -> torch.Tensor:
        g = self.generator
        pick = torch.randint(self.valid.numel(), (batch_size,), generator=g, device=self.device)
        index = self.valid[pick]
        if self.upsample_alpha > 0 and self.high.numel() > 0:
            coin = torch.rand(batch_size, generator=g, device=self.device)
            pick_high = torch.randint(self.high.numel(), (batch_size,), generator=g, device=self.device)
            index = torch.where(coin < self.upsample_alpha, self.high[pick_high], index)
        return index

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        return self.batch(self.sample_indices(batch_size))

    def with_sampler(self, seed: int) -> OfflineDataset:
        """A view of this dataset that shares its tensors but samples with its own generator,
        seeded with ``seed``: it draws the batches a dataset built with that seed draws (the agents
        of a stacked run, `learning.stacked_trainer`, each sample through one). `scale_rewards` on a
        view scales its own copy of the rewards."""
        view = copy.copy(self)
        view.generator = torch.Generator(device=self.device)
        view.generator.manual_seed(int(seed))
        return view

    def sampler_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_sampler_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.cpu() if isinstance(state, torch.Tensor) else state)

    # ------------------------------------------------------------------------------ summaries

    def behaviour_summary(self) -> dict[str, Any]:
        """The behaviour data's own score on the task: mean episode return (of the relabelled
        transitions), share of episodes that ever succeed, and for reach tasks the closest
        tool-tip distance to the goal over the whole dataset and per episode (mean)."""
        out: dict[str, Any] = {"episodes": self.num_episodes, "transitions": self.num_transitions}
        returns, successes, closest = [], [], []
        distance = getattr(self.task, "distance", None)
        dist = distance({"tip_pos": self.tip_pos}) if distance is not None else None
        for e in range(self.num_episodes):
            a, b = int(self.episode_starts[e]), int(self.episode_starts[e + 1])
            returns.append(float(self.reward_state[a + 1 : b].sum()))
            successes.append(bool(self.success_state[a:b].any()))
            if dist is not None:
                closest.append(float(dist[a:b].min()))
        out["episode_return_mean"] = float(np.mean(returns))
        out["success_rate"] = float(np.mean(successes))
        if dist is not None:
            out["closest_distance_m"] = float(dist.min())
            out["episode_closest_distance_mean_m"] = float(np.mean(closest))
            out["final_distance_mean_m"] = float(
                np.mean([dist[int(self.episode_starts[e + 1]) - 1] for e in range(self.num_episodes)])
            )
        return out

    def episode_returns(self) -> np.ndarray:
        """Undiscounted task return of every episode (sum of its one-step rewards), shape (episodes,)."""
        per_state = np.add.reduceat(self.reward_next.astype(np.float64), self.episode_starts[:-1])
        return per_state

    def scale_rewards(self, factor: float) -> None:
        """Multiply the (n-step) rewards the algorithms learn from by ``factor``; evaluation scores
        stay in the task's own units."""
        self.reward_scale = float(factor)
        self.nstep_reward = self.nstep_reward * self.reward_scale

    def summary(self) -> dict[str, Any]:
        outcomes: dict[str, int] = {}
        for o in self.outcomes:
            outcomes[o] = outcomes.get(o, 0) + 1
        return {
            "sessions": [str(s.path) for s in self.sessions],
            "skipped_sessions": list(self.skipped_sessions),
            "episodes": self.num_episodes,
            "states": self.num_states,
            "transitions": self.num_transitions,
            "outcomes": outcomes,
            "rewarded_transitions": int(self.high_np.size),
            "reward_scale": getattr(self, "reward_scale", 1.0),
            "task": self.task.name,
            "obs": self.obs_kind,
            "camera": self.camera,
            "obs_shape": list(self.obs_spec.shape),
            "n_step": self.n_step,
            "gamma": self.gamma,
            "action_limit": self.action_limit.tolist(),
        }
