"""Export a session as a Minari dataset for one task, relabelled the way the trainer relabels it.

``pandalab data export SESSION --to minari --task reach:0 [--dataset-id NS/NAME-vN] [--out ROOT]``
writes the dataset ``<ROOT>/<dataset id>`` (ROOT: ``--out``, else ``$MINARI_DATASETS_PATH``, else
Minari's default ``~/.minari/datasets``), so that, with ``MINARI_DATASETS_PATH=ROOT``,
``minari.load_dataset(ID)`` opens it and ``dataset.recover_environment(eval_env=True)`` builds
the environment to evaluate a policy in.  The default id is ``pandalab/<session>-<task>-v0``
(``reach:0`` -> ``reach-0``).  Written with minari's own storage classes (HDF5, images stored raw:
``jpeg_encoding`` off, lossless).

Episodes, as `learning.dataset.OfflineDataset` builds transitions: an episode of T consecutive
steps holds the states s_0..s_{T-1} and the command a_t sent in s_t, so a Minari episode has

==================== ================ ==========================================================
field                shape            from the episode's
==================== ================ ==========================================================
observations         T of each        dict: ``q``, ``dq`` (obs/q, obs/dq), ``tip_pos``, and in
                                      simulation ``cube_pos``, ``cube_quat``, ``cube_top_face``
                                      (privileged/...), and one uint8 image per camera under its
                                      name: the keys, shapes and bounds of `sim.gym_env.PandaEnv`'s
                                      observations (the cube's only where recorded)
actions              T - 1 x 7        command: joint velocities sent after the safety filter,
                                      rad/s (the eval env's action space: +-velocity caps)
rewards              T - 1            the task's reward of s_{t+1} (`learning.relabel`)
terminations         T - 1            all False: no end in this project is a terminal (the
                                      trainer's default; learning/dataset.py "Ends of episodes")
truncations          T - 1            True on the last transition only (time limit or a cut:
                                      the recording stopped, not the task)
infos                T of each        ``success`` (the task's predicate in s_t, as the env's info),
                                      ``time`` (the recorded step time, s)
==================== ================ ==========================================================

Episodes with fewer than two steps give no transition and are left out (as in training); an
episode salvaged with steps missing gives one Minari episode per run of consecutive steps (no
transition across a gap).  Each Minari episode's attributes name its source: ``outcome``,
``pandalab_episode`` (index in the session), ``pandalab_file``, ``pandalab_first_step``.

``eval_env_spec`` is ``pandalab/Panda-v0`` created by `learning.evaluate.make_env` from the
session's robot (simulator, cameras, control rate, home pose, safety limits; data recorded on
hardware is evaluated in robosuite), with the task and the session's episode length: the
environment ``pandalab train``'s evaluation scores policies in.  Simulated sessions also get the
same spec as ``env_spec`` (the data came from that simulator, actions as joint velocities).

Damage.  A damaged episode file (checksum, HDF5, schema, a missing obs/q, obs/dq, obs/tip_pos or
command) or one whose arrays do not match the first exported episode's is skipped with a one-line
warning naming it and listed in the dataset's ``pandalab_skipped`` metadata; a session with no
usable episode, an unknown task, a task that needs the cube on data without it, a malformed
dataset id and an existing dataset are one-line errors.  The dataset is written into a temporary
folder beside the output and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pandalab.exports import (
    ExportError,
    ExportResult,
    SkipEpisode,
    make_scratch,
    one_line,
    put_in_place,
    read_spec,
    readable_episodes,
    skip,
    writing,
)

ENV_ID = "pandalab/Panda-v0"
ENV_ENTRY_POINT = "learning.evaluate:make_env"
"""How `learning` builds its evaluation environment (a `sim.gym_env.PandaEnv`) from a session's env spec."""
REQUIRED_KEYS = ("obs/q", "obs/dq", "obs/tip_pos", "command")
DATASET_ID = re.compile(r"^(?:(?P<namespace>[-_\w][-_\w/]*[-_\w])/)?(?P<name>[-_\w]+?)-v(?P<version>\d+)$")
"""Minari's dataset id: ``(namespace/)name-vN``."""
PRIVILEGED = {"cube_pos": (3,), "cube_quat": (4,), "cube_top_face": ()}


def datasets_root(root: str | os.PathLike | None = None) -> Path:
    """Where Minari keeps local datasets: ``root``, else $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def default_dataset_id(session_dir: str | os.PathLike, task: str | None) -> str:
    """``pandalab/<session>-<task>-v0`` with any character Minari's ids refuse made ``-``."""
    name = re.sub(r"[^-_\w]+", "-", Path(session_dir).absolute().name).strip("-") or "session"
    slug = re.sub(r"[^-_\w]+", "-", task or "").strip("-")
    return f"pandalab/{name}-{slug}-v0" if slug else f"pandalab/{name}-v0"


def cli_out(session_dir: str, root: str | None, task: str | None, dataset_id: str | None) -> tuple[Path, str]:
    """(dataset directory, dataset id) for ``data export --to minari``: ``--out`` names the
    datasets root there (module docstring)."""
    dataset_id = dataset_id or default_dataset_id(session_dir, task)
    return datasets_root(root) / dataset_id, dataset_id


def observation_space(spec: Any, privileged: bool):
    """The dataset's observation space: `sim.gym_env.PandaEnv`'s for this session's cameras (the
    cube's keys only where the data holds them)."""
    from gymnasium import spaces

    from sim.scene import CUBE_FACES

    observation = {
        "q": spaces.Box(-np.pi * 2, np.pi * 2, shape=(7,), dtype=np.float64),
        "dq": spaces.Box(-10.0, 10.0, shape=(7,), dtype=np.float64),
        "tip_pos": spaces.Box(-2.0, 2.0, shape=(3,), dtype=np.float64),
    }
    if privileged:
        observation["cube_pos"] = spaces.Box(-5.0, 5.0, shape=(3,), dtype=np.float64)
        observation["cube_quat"] = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float64)
        observation["cube_top_face"] = spaces.Discrete(len(CUBE_FACES))
    for camera in spec.cameras:
        observation[camera.name] = spaces.Box(0, 255, shape=(camera.height, camera.width, 3), dtype=np.uint8)
    return spaces.Dict(observation)


def action_space(spec: Any):
    """Joint velocities within the session's caps, rad/s: the eval env's action space."""
    from gymnasium import spaces

    from safety.limits import SafetyLimits

    caps = SafetyLimits(**spec.safety).velocity_caps
    return spaces.Box(-caps, caps, shape=(7,), dtype=np.float64)


def eval_env_spec(spec: Any, task: str):
    """The gymnasium EnvSpec of the evaluation environment (module docstring); JSON-serialisable."""
    from gymnasium.envs.registration import EnvSpec

    env_spec = json.loads(json.dumps(spec.env_spec()))
    kwargs = {"env_spec": env_spec, "task": task, "episode_steps": int(spec.episode_steps)}
    return EnvSpec(id=ENV_ID, entry_point=ENV_ENTRY_POINT, kwargs=kwargs, disable_env_checker=True)


def export_minari(
    session_dir: Path,
    out: Path,
    *,
    task: str | None = None,
    dataset_id: str | None = None,
    warn: Callable[[str], None] = lambda line: None,
) -> ExportResult:
    """Write the session at ``session_dir`` as the Minari dataset ``dataset_id`` (default
    `default_dataset_id`) at ``out`` for ``task`` (module docstring)."""
    if not task:
        raise ExportError("--to minari needs --task (reach:K, push, flip:COLOUR or push+flip:COLOUR)")
    from sim.tasks import make_task

    try:
        task_object = make_task(task)
    except ValueError as error:
        raise ExportError(one_line(error)) from None
    dataset_id = dataset_id or default_dataset_id(session_dir, task)
    if not DATASET_ID.match(dataset_id) or ".." in dataset_id.split("/"):
        raise ExportError(f"--dataset-id {dataset_id!r} is not a Minari dataset id ((namespace/)name-vN)")
    try:
        import minari
        from minari.data_collector import EpisodeBuffer
        from minari.dataset.minari_storage import MinariStorage
    except ImportError as error:
        raise ExportError(f"the minari export needs the minari package: {one_line(error)}") from None
    spec = read_spec(session_dir)
    writer = _Writer(spec, task_object, EpisodeBuffer, warn)
    writer.collect(session_dir)  # every check before anything is written
    if not writer.pending:
        raise ExportError(f"{session_dir}: no readable episode with a transition (2 steps) to export")
    scratch = make_scratch(out)
    dataset = scratch / out.name
    with writing(out, scratch):
        dataset.mkdir()
        storage = MinariStorage.new(
            dataset.absolute() / "data",  # absolute: minari's size accounting breaks on relative paths
            observation_space=observation_space(spec, writer.privileged),
            action_space=action_space(spec),
            env_spec=eval_env_spec(spec, task_object.name) if spec.simulated else None,
            data_format="hdf5",
            jpeg_encoding=False,
        )
        writer.write(storage)
        storage.update_metadata(
            {
                "dataset_id": dataset_id,
                "minari_version": minari.__version__,
                "eval_env_spec": eval_env_spec(spec, task_object.name).to_json(),
                "author": {"pandalab"},
                "algorithm_name": f"{spec.explorer} (task-agnostic exploration, relabelled for {task_object.name})",
                "description": (
                    f"pandalab session {spec.session_id} ({spec.backend}, {spec.action_space} explorer actions), "
                    f"commands as actions, rewards of task {task_object.name} relabelled in hindsight"
                ),
                "pandalab_session": spec.session_id,
                "pandalab_task": task_object.name,
                "pandalab_skipped": writer.skipped,
            }
        )
        put_in_place(dataset, out)
    _mark_namespaces(out, dataset_id)
    return ExportResult(out, f"minari/{task_object.name}", writer.episodes, writer.steps, skipped=writer.skipped)


def _mark_namespaces(out: Path, dataset_id: str) -> None:
    """Write Minari's namespace_metadata.json in each namespace folder above the dataset that has
    none (what `minari.create_namespace` leaves), when ``out`` lies at ``<root>/<dataset id>``."""
    parts = dataset_id.split("/")
    if len(parts) < 2 or tuple(out.parts[-len(parts) :]) != tuple(parts):
        return
    folder = out.parent
    for _ in parts[:-1]:
        marker = folder / "namespace_metadata.json"
        if not marker.exists():
            try:
                marker.write_text("{}")
            except OSError:  # the dataset is complete; listing namespaces is a nicety
                return
        folder = folder.parent


class _Writer:
    """Episodes read, checked and relabelled, then written to a Minari storage."""

    def __init__(self, spec: Any, task: Any, buffer_class: Any, warn: Callable[[str], None]) -> None:
        self.spec, self.task, self.buffer_class, self.warn = spec, task, buffer_class, warn
        self.pending: list[tuple[Any, list[tuple[int, int]]]] = []
        self.skipped: list[str] = []
        self.privileged = False
        self.cameras = [camera.name for camera in spec.cameras]
        self.episodes = 0
        self.steps = 0

    def _check(self, episode: Any) -> None:
        fields = episode.fields
        for key, shape in (("obs/q", (7,)), ("obs/dq", (7,)), ("obs/tip_pos", (3,)), ("command", (7,))):
            if tuple(fields[key].shape) != shape:
                raise SkipEpisode(f"{key} is {tuple(fields[key].shape)} per step, not {shape}")
        for name in self.cameras:
            key = f"obs/images/{name}"
            camera = next(c for c in self.spec.cameras if c.name == name)
            want = (camera.height, camera.width, 3)
            if key not in fields:
                raise SkipEpisode(f"it has no {key}, which the session's cameras promise")
            if tuple(fields[key].shape) != want or np.dtype(fields[key].dtype) != np.uint8:
                raise SkipEpisode(f"{key} is {tuple(fields[key].shape)} {fields[key].dtype}, not uint8 {want}")
        for name, shape in PRIVILEGED.items():
            key = f"privileged/{name}"
            if key in fields and tuple(fields[key].shape) != shape:
                raise SkipEpisode(f"{key} is {tuple(fields[key].shape)} per step, not {shape}")

    def collect(self, session_dir: Path) -> None:
        """Check every episode (nothing is written yet): which ones, which segments, and whether
        the cube's state is in all of them."""
        from learning.relabel import PRIVILEGED_KEYS, check_privileged

        for episode in readable_episodes(session_dir, self.warn, self.skipped, REQUIRED_KEYS):
            try:
                self._check(episode)
            except SkipEpisode as reason:
                skip(episode, str(reason), self.warn, self.skipped)
                episode.close()
                continue
            segments = [(a, b) for a, b in episode.segments() if b - a >= 2]
            if not segments:
                self.warn(f"leaving out {episode.path}: fewer than 2 consecutive steps, no transition")
                episode.close()
                continue
            self.pending.append((episode, segments))
            episode.close()
        if not self.pending:
            return
        have = [all(k in e.fields for k in PRIVILEGED_KEYS) for e, _ in self.pending]
        if self.task.requires_privileged:
            for episode, _ in self.pending:
                try:
                    check_privileged(
                        f"task {self.task.name}", episode.fields, f"{self.spec.session_id} ({episode.path})"
                    )
                except ValueError as error:
                    raise ExportError(one_line(error)) from None
        self.privileged = all(have)

    def write(self, storage: Any) -> None:
        from learning.relabel import relabel

        keys = list(REQUIRED_KEYS) + [f"obs/images/{name}" for name in self.cameras]
        if self.privileged:
            keys += [f"privileged/{name}" for name in PRIVILEGED]
        for episode, segments in self.pending:
            try:
                arrays = {k: np.asarray(episode.load(k)) for k in keys}
                time_s = (
                    np.asarray(episode.load("time"), dtype=np.float64).reshape(-1)
                    if "time" in episode.fields
                    else episode.step_index() / self.spec.control_rate_hz
                )
                first_steps = episode.step_index()
            except Exception as error:  # the file changed or is damaged past its checksum: abort
                raise ExportError(f"{episode.path}: cannot be read: {one_line(error)}") from None
            finally:
                episode.close()
            reward, success = relabel(self.task, arrays)
            for a, b in segments:
                observations = {
                    "q": arrays["obs/q"][a:b].astype(np.float64),
                    "dq": arrays["obs/dq"][a:b].astype(np.float64),
                    "tip_pos": arrays["obs/tip_pos"][a:b].astype(np.float64),
                }
                if self.privileged:
                    observations["cube_pos"] = arrays["privileged/cube_pos"][a:b].astype(np.float64)
                    observations["cube_quat"] = arrays["privileged/cube_quat"][a:b].astype(np.float64)
                    observations["cube_top_face"] = arrays["privileged/cube_top_face"][a:b].astype(np.int64)
                for name in self.cameras:
                    observations[name] = arrays[f"obs/images/{name}"][a:b]
                transitions = b - a - 1
                truncations = np.zeros(transitions, dtype=bool)
                truncations[-1] = True
                buffer = self.buffer_class(
                    id=self.episodes,
                    observations=observations,
                    actions=arrays["command"][a : b - 1].astype(np.float64),
                    rewards=reward[a + 1 : b],
                    terminations=np.zeros(transitions, dtype=bool),
                    truncations=truncations,
                    infos={"success": success[a:b], "time": time_s[a:b]},
                )
                storage.update_episodes([buffer])
                storage.update_episode_metadata(
                    [
                        {
                            "outcome": episode.outcome,
                            "pandalab_episode": int(episode.index),
                            "pandalab_file": episode.path.name,
                            "pandalab_first_step": int(first_steps[a]),
                        }
                    ],
                    [self.episodes],
                )
                self.episodes += 1
                self.steps += transitions
