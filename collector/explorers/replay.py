"""The episode store as the replay buffer of the learned explorers `rnd` and `gcrnd` (DESIGN.md:
the store is the replay buffer).

Each `train(store)` of an explorer registers (`EpisodeReplay.sync`) the finished episodes the
manifest lists that it has not seen; their arrays are read lazily, on first use, and cached by
store index (optionally LRU-bounded, `ReplayConfig.max_cached_episodes`).  After a restart the
cache is rebuilt from the store; the explorer's checkpoint holds networks, optimisers,
normalisers, schedules, counters and random-generator states, never the data.

The transition of an episode's last recorded step is not used: its next state is not recorded.
Nor is that of the last step before a gap, in an episode salvaged with steps missing
(`Episode.segments()`): each run of consecutive steps is replayed as its own episode, and a
(s_t, a_t, s_t+1) pair never spans missing steps.  Actions are the explorer's own (the `action`
field), as recorded; the explorer scales them to [-1, 1].
"""

from __future__ import annotations

import collections
import pathlib
import warnings

import numpy as np
from pydantic import Field

from collector.explorers.base import ExplorerSpec
from safety.strict_model import StrictModel
from store import DamagedEpisodeError, EpisodeInfo, open_episode, read_manifest


class ReplayConfig(StrictModel):
    """How much of the store the replay keeps in memory.

    The field name is the ``explorer.parameters`` key of `rnd` and `gcrnd` (whose config,
    `rnd.LearnedExplorerConfig`, takes this very field)."""

    max_cached_episodes: int | None = Field(
        None, ge=1, description="Most episodes kept in memory (LRU); None = all (the store is the buffer)."
    )


class EpisodeReplay:
    """The session's finished episodes as a replay buffer, read from the store.

    `sync(session_dir)` registers the episodes the manifest lists that are not registered yet (by
    store index) and returns their indices; arrays load on first use (`observations`, `actions`)
    and stay cached (LRU-bounded by ``config.max_cached_episodes``).  A damaged episode is skipped
    with a warning and never sampled.  Observations are what the explorer sees: vectors (q, dq[, cube_pos,
    cube_quat]) as float32 (T, D), images of the explorer's camera as uint8 (T, H, W, 3).

    Transitions (row t -> t + 1) exist only inside a segment (`Episode.segments()`: one for an
    episode recorded whole; a salvaged one with steps missing has several).  The manifest does
    not say which episodes have gaps: an episode's segments are read when it is first loaded
    (`_cuts`, kept when its arrays are evicted), and `sample_transitions` loads the episodes of a
    draw that were never loaded before it returns it (drawing again if one of them had gaps or was
    damaged), so no sampled t is ever the last row of a segment."""

    def __init__(self, spec: ExplorerSpec, config: ReplayConfig | None = None) -> None:
        self.spec = spec
        self.config = config if config is not None else ReplayConfig()
        self.max_cached = self.config.max_cached_episodes
        self.infos: dict[int, EpisodeInfo] = {}
        self._cache: collections.OrderedDict[int, dict[str, np.ndarray]] = collections.OrderedDict()
        self._camera: str | None = None
        self._session_dir: pathlib.Path | None = None
        self._inspected: set[int] = set()
        """Store indices whose segments are known (loaded at least once)."""
        self._cuts: dict[int, np.ndarray] = {}
        """Episodes with gaps only: sorted rows t whose row t + 1 starts a new segment."""
        self._tables_version = 0
        self._rebuild()

    # -- registration
    def sync(self, session_dir: str | pathlib.Path) -> list[int]:
        session_dir = pathlib.Path(session_dir)
        if self._session_dir != session_dir:
            self._session_dir, self._camera = session_dir, None
        new = [info for info in read_manifest(session_dir) if info.index not in self.infos and info.steps > 0]
        for info in new:
            self.infos[info.index] = info
        if new:
            self._rebuild()
        return [info.index for info in new]

    def _rebuild(self) -> None:
        self.indices = np.array(sorted(self.infos), dtype=np.int64)
        lengths = np.array([self.infos[i].steps for i in self.indices], dtype=np.int64)
        self.lengths = lengths
        self._state_ends = np.cumsum(lengths)
        counts = np.maximum(lengths - 1, 0)
        if self._cuts:  # episodes with gaps: one transition fewer per segment after the first
            counts = counts - np.array([len(self._cuts.get(int(i), ())) for i in self.indices], dtype=np.int64)
        self._transition_counts = counts
        self._transition_ends = np.cumsum(counts)
        self._tables_version += 1

    def _drop(self, index: int, reason: str) -> None:
        warnings.warn(f"explorer replay: skipping damaged episode {index}: {reason}", stacklevel=3)
        self.infos.pop(index, None)
        self._cache.pop(index, None)
        self._inspected.discard(index)
        self._cuts.pop(index, None)
        self._rebuild()

    def _note_segments(self, index: int, segments: list[tuple[int, int]]) -> None:
        """Record an episode's segments (once, on its first load); tables rebuilt if it has gaps."""
        self._inspected.add(index)
        cuts = np.array([b - 1 for _, b in segments[:-1]], dtype=np.int64)
        if len(cuts):
            self._cuts[index] = cuts
            self._rebuild()

    @property
    def total_states(self) -> int:
        return int(self._state_ends[-1]) if len(self._state_ends) else 0

    @property
    def total_transitions(self) -> int:
        return int(self._transition_ends[-1]) if len(self._transition_ends) else 0

    def length(self, index: int) -> int:
        return self.infos[index].steps

    # -- loading
    def _observation_key(self, episode) -> list[str]:
        spec = self.spec
        if spec.observation_kind == "image":
            if self._camera is None:
                self._camera = self._session_camera()
            candidates = [k for k in episode.keys if k.startswith("obs/images/")]
            wanted = f"obs/images/{self._camera}" if self._camera else None
            if wanted in candidates:
                return [wanted]
            shaped = [k for k in candidates if tuple(episode.fields[k].shape) == tuple(spec.image_shape)]
            if not shaped:
                raise DamagedEpisodeError(episode.path, f"no camera image of shape {spec.image_shape}")
            return shaped[:1]
        keys = ["obs/q", "obs/dq"]
        if spec.observation_dim == 21:
            keys += ["privileged/cube_pos", "privileged/cube_quat"]
        elif spec.observation_dim != 14:
            raise ValueError(f"cannot rebuild {spec.observation_dim}-value explorer observations from the store")
        return keys

    def _session_camera(self) -> str | None:
        """The first camera of the session's robot options (the collector's explorer camera)."""
        import yaml

        try:
            config = yaml.safe_load((self._session_dir / "session.yaml").read_text())
            return config["robot"]["options"]["cameras"][0]["name"]
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
            return None

    def _load(self, index: int) -> dict[str, np.ndarray] | None:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        info = self.infos.get(index)
        if info is None:  # dropped as damaged since it was drawn
            return None
        try:
            with open_episode(info.path, expected_sha256=info.sha256, info=info) as episode:
                keys = self._observation_key(episode)
                arrays = [episode.load(k) for k in keys]
                action = episode.load("action").astype(np.float32)
                segments = None if index in self._inspected else episode.segments()
        except (DamagedEpisodeError, KeyError, OSError) as error:
            self._drop(index, str(error))
            return None
        if segments is not None:
            self._note_segments(index, segments)
        if self.spec.observation_kind == "image":
            obs = arrays[0].astype(np.uint8, copy=False)
        else:
            obs = np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1).astype(np.float32)
        data = {"obs": obs, "action": action}
        self._cache[index] = data
        if self.max_cached is not None:
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return data

    def episode(self, index: int) -> dict[str, np.ndarray] | None:
        """``{"obs", "action"}`` arrays of one registered episode, or None if it is damaged."""
        return self._load(index)

    # -- sampling (numpy Generator: part of the explorer's checkpointed state)
    def sample_transitions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` transitions uniformly over all (store index, row t) whose row t + 1 is the next
        step (the same segment: never across missing steps); empty arrays when there is none."""
        while True:
            if self.total_transitions == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            flat = rng.integers(0, self.total_transitions, size=n)
            slot = np.searchsorted(self._transition_ends, flat, side="right")
            starts = self._transition_ends - self._transition_counts
            episodes, steps = self.indices[slot], flat - starts[slot]
            if self._segments_known(episodes):
                break
        if self._cuts:  # k-th transition of an episode with gaps -> its row, skipping segment ends
            for index in np.unique(episodes):
                cuts = self._cuts.get(int(index))
                if cuts is not None:
                    rows = episodes == index
                    steps[rows] += np.searchsorted(cuts - np.arange(len(cuts)), steps[rows], side="right")
        return episodes, steps

    def _segments_known(self, episodes: np.ndarray) -> bool:
        """Load the episodes of a draw never loaded before (their segments become known); False if
        that changed the tables (an episode with gaps, or a damaged one dropped): draw again."""
        unseen = [int(i) for i in np.unique(episodes) if int(i) not in self._inspected]
        if not unseen:
            return True
        version = self._tables_version
        for index in unseen:
            self._load(index)
        return self._tables_version == version

    def sample_states(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``min(n, all)`` distinct states uniformly over all (store index, step)."""
        total = self.total_states
        flat = np.sort(rng.choice(total, size=min(n, total), replace=False))
        slot = np.searchsorted(self._state_ends, flat, side="right")
        starts = self._state_ends - self.lengths
        return self.indices[slot], flat - starts[slot]

    def gather(self, episodes: np.ndarray, steps: np.ndarray, key: str = "obs") -> np.ndarray | None:
        """Rows ``steps`` of ``key`` of the given episodes, in order; None if one is damaged."""
        out = None
        for index in np.unique(episodes):
            data = self._load(int(index))
            if data is None:
                return None
            rows = np.nonzero(episodes == index)[0]
            values = data[key][steps[rows]]
            if out is None:
                out = np.empty((len(episodes), *values.shape[1:]), dtype=values.dtype)
            out[rows] = values
        return out
