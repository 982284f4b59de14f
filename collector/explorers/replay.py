"""The episode store as the replay buffer of the learned explorers (DESIGN.md: the store is the
replay buffer): `EpisodeReplay` for `rnd` and `gcrnd` (arrays read on use, sampled by episode and
step), `EncodedEpisodes` for `sse` and `diayn` (every step encoded once and held as arrays).

Each `train(store)` of an explorer registers (`EpisodeReplay.sync`) the finished episodes the
manifest lists that it has not seen, through the store's reader (`store.SessionReader`: each
episode checked once when listed, a damaged one skipped with the store's warning); their arrays
are read on first use and cached by the reader (optionally LRU-bounded,
`ReplayConfig.max_cached_episodes`).  After a restart the cache is rebuilt from the store; the
explorer's checkpoint holds networks, optimisers, normalisers, schedules, counters and
random-generator states, never the data.

What the explorer saw is rebuilt from the session's own description (`store.read_session_spec`):
the store fields of its observation (`SessionSpec.observation_fields`) put together as the
collector did live (`SessionSpec.observation_from`), and for an image explorer the frames of the
explorer's camera (`SessionSpec.explorer_camera`).

The transition of an episode's last recorded step is not used: its next state is not recorded.
Nor is that of the last step before a gap, in an episode salvaged with steps missing
(`Episode.segments()`): each run of consecutive steps is replayed as its own episode, and a
(s_t, a_t, s_t+1) pair never spans missing steps.  Actions are the explorer's own (the `action`
field), as recorded; the explorer scales them to [-1, 1].
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

from collector.explorers.base import ExplorerSpec
from safety.strict_model import StrictModel
from store import DamagedEpisodeError, Episode, SessionReader, SessionSpec, read_session_spec
from store.spec import OBSERVATION_FIELDS


class ReplayConfig(StrictModel):
    """How much of the store the replay keeps in memory.

    The field name is the ``explorer.parameters`` key of `rnd` and `gcrnd` (whose config,
    `rnd.LearnedExplorerConfig`, takes this very field)."""

    max_cached_episodes: int | None = Field(
        None, ge=1, description="Most episodes kept in memory (LRU); None = all (the store is the buffer)."
    )


def explorer_observation(session: SessionSpec, spec: ExplorerSpec) -> str:
    """The observation kind of ``session`` an explorer built with ``spec`` acts on: ``image`` for
    an image explorer; else the session's own kind when it has the explorer's size, or the
    vector kind of that size (a session whose description leaves its observation at the
    default).  ValueError when no kind of the session has that size."""
    if spec.observation_kind == "image":
        return "image"
    size = (spec.observation_dim,)
    kinds = [session.observation] if session.observation in OBSERVATION_FIELDS else []
    for kind in [*kinds, *OBSERVATION_FIELDS]:
        if session.observation_shape(kind) == size:
            return kind
    raise ValueError(
        f"cannot rebuild {spec.observation_dim}-value explorer observations from session {session.session_id} "
        f"(it records {session.observation} observations)"
    )


class EpisodeReplay:
    """The session's finished episodes as a replay buffer, read from the store.

    `sync(session_dir)` registers the episodes its `SessionReader` lists since the last call
    (those with at least one step) and returns their store indices; arrays load on first use
    (`episode`, `gather`) and stay cached (LRU-bounded by ``config.max_cached_episodes``).  A
    damaged episode is skipped with the store's warning and never sampled; one found damaged
    while reading is dropped, and the read returns None (the tables are rebuilt: draw again).
    Observations are what the explorer sees: vectors (the session's observation fields: q, dq[,
    cube_pos, cube_quat]) as float32 (T, D), images of the explorer's camera as uint8
    (T, H, W, 3).

    Transitions (row t -> t + 1) exist only inside a segment (`SessionReader.segments`: one for
    an episode recorded whole; a salvaged one with steps missing has several), known when the
    episode is listed, so no sampled t is ever the last row of a segment."""

    def __init__(self, spec: ExplorerSpec, config: ReplayConfig | None = None) -> None:
        self.spec = spec
        self.config = config if config is not None else ReplayConfig()
        self.reader: SessionReader | None = None
        self.session: SessionSpec | None = None
        """The session's description (`store.read_session_spec`), read by the first `sync`."""
        self.observation_kind: str | None = None
        """The session's observation kind the explorer acts on (`explorer_observation`)."""
        self.fields: tuple[str, ...] = ()
        """The store fields of that observation."""
        self._cuts: dict[int, np.ndarray] = {}
        """Episodes with gaps only: sorted rows t whose row t + 1 starts a new segment."""
        self._rebuild()

    # -- registration
    def sync(self, session_dir: str | pathlib.Path) -> list[int]:
        session_dir = pathlib.Path(session_dir)
        if self.reader is None or self.reader.session_dir != session_dir:
            self._open(session_dir)
        new = [episode.index for episode in self.reader.refresh() if episode.steps > 0]
        if new:
            self._rebuild()
        return new

    def _open(self, session_dir: pathlib.Path) -> None:
        """Read the session's description and start reading its episodes (none registered yet)."""
        self.session = read_session_spec(session_dir)
        self.observation_kind = explorer_observation(self.session, self.spec)
        self.fields = self.session.observation_fields(self.observation_kind)
        self.reader = SessionReader(
            session_dir, required_keys=(*self.fields, "action"), max_cached_episodes=self.config.max_cached_episodes
        )

    def _rebuild(self) -> None:
        episodes = [] if self.reader is None else [e for e in self.reader.episodes.values() if e.steps > 0]
        self.indices = np.array([e.index for e in episodes], dtype=np.int64)
        lengths = np.array([e.steps for e in episodes], dtype=np.int64)
        self.lengths = lengths
        self._state_ends = np.cumsum(lengths)
        self._cuts = {}
        for episode in episodes:
            segments = self.reader.segments(episode.index)
            if len(segments) > 1:
                self._cuts[episode.index] = np.array([b - 1 for _, b in segments[:-1]], dtype=np.int64)
        counts = np.maximum(lengths - 1, 0)
        if self._cuts:  # episodes with gaps: one transition fewer per segment after the first
            counts = counts - np.array([len(self._cuts.get(int(i), ())) for i in self.indices], dtype=np.int64)
        self._transition_counts = counts
        self._transition_ends = np.cumsum(counts)

    def __contains__(self, index: object) -> bool:
        """Whether store index ``index`` is a registered episode (listed, not damaged, not empty)."""
        return self.reader is not None and index in self.reader and self.reader.episode(index).steps > 0

    @property
    def total_states(self) -> int:
        return int(self._state_ends[-1]) if len(self._state_ends) else 0

    @property
    def total_transitions(self) -> int:
        return int(self._transition_ends[-1]) if len(self._transition_ends) else 0

    def length(self, index: int) -> int:
        return self.reader.episode(index).steps

    # -- loading
    def _observations(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Observations from store fields (whole arrays or rows)."""
        observations = self.session.observation_from(arrays, self.observation_kind)
        if self.observation_kind == "image":
            return observations.astype(np.uint8, copy=False)
        return observations.astype(np.float32)

    def episode(self, index: int) -> dict[str, np.ndarray] | None:
        """``{"obs", "action"}`` arrays of one registered episode, or None if it is damaged."""
        if index not in self:
            return None
        try:
            arrays = self.reader.arrays(index, (*self.fields, "action"))
        except DamagedEpisodeError:
            self._rebuild()
            return None
        return {"obs": self._observations(arrays), "action": arrays["action"].astype(np.float32)}

    # -- sampling (numpy Generator: part of the explorer's checkpointed state)
    def sample_transitions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` transitions uniformly over all (store index, row t) whose row t + 1 is the next
        step (the same segment: never across missing steps); empty arrays when there is none."""
        if self.total_transitions == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        flat = rng.integers(0, self.total_transitions, size=n)
        slot = np.searchsorted(self._transition_ends, flat, side="right")
        starts = self._transition_ends - self._transition_counts
        episodes, steps = self.indices[slot], flat - starts[slot]
        if self._cuts:  # k-th transition of an episode with gaps -> its row, skipping segment ends
            for index in np.unique(episodes):
                cuts = self._cuts.get(int(index))
                if cuts is not None:
                    rows = episodes == index
                    steps[rows] += np.searchsorted(cuts - np.arange(len(cuts)), steps[rows], side="right")
        return episodes, steps

    def sample_states(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``min(n, all)`` distinct states uniformly over all (store index, step)."""
        total = self.total_states
        flat = np.sort(rng.choice(total, size=min(n, total), replace=False))
        slot = np.searchsorted(self._state_ends, flat, side="right")
        starts = self._state_ends - self.lengths
        return self.indices[slot], flat - starts[slot]

    def gather(self, episodes: np.ndarray, steps: np.ndarray, key: str = "obs") -> np.ndarray | None:
        """Rows ``steps`` of ``key`` (``obs`` or ``action``) of the given episodes, in order; None
        if there is none or one is damaged."""
        if len(episodes) == 0 or not all(index in self.reader.episodes for index in np.unique(episodes).tolist()):
            return None  # none, or an episode dropped as damaged since it was drawn
        try:
            if key == "obs":
                return self._observations({field: self.reader.rows(field, episodes, steps) for field in self.fields})
            return self.reader.rows(key, episodes, steps).astype(np.float32)
        except DamagedEpisodeError:
            self._rebuild()
            return None


class EncodedEpisodes:
    """The replay of the explorers that train on encoded states held in memory (`sse`, `diayn`).

    `refresh(store)` reads each episode the store's reader lists since the last call, once: its
    observations put together as the collector did (`SessionSpec.observation_from`), encoded by the
    explorer's ``encode`` (its fixed random image encoder, or the identity on vectors), its actions
    divided by ``action_limit`` and clipped to [-1, 1], and the per-step ``labels`` the explorer
    gives the episode (``labels(episode)``: arrays of one value per step, e.g. SSE's done flags
    or DIAYN's skill; None leaves the episode out unread).  Then everything is concatenated:

    - ``x``, ``a``, ``next_x`` and each label ``L``: the (s_t, a_t, s_t+1) transitions, never across
      missing steps of a salvaged episode (`SessionReader.segments`) nor past its last step;
    - ``all_x``, ``all_a`` and ``all_L``: every recorded step.

    Nothing of it is checkpointed: after a restart the next `refresh` rebuilds it from the store."""

    def __init__(
        self,
        spec: ExplorerSpec,
        encode: Callable[[np.ndarray], torch.Tensor],
        action_limit: np.ndarray,
        state_dim: int,
        labels: Callable[[Episode], dict[str, np.ndarray] | None],
    ) -> None:
        self.spec = spec
        self.encode = encode
        self.action_limit = action_limit
        self.state_dim = state_dim
        self.labels = labels
        self.reader: SessionReader | None = None
        self.session: SessionSpec | None = None
        self.observation_kind: str | None = None
        self.fields: tuple[str, ...] = ()
        self._episodes: dict[int, dict[str, np.ndarray]] = {}
        """Per store index: states x, scaled actions a, the labels (and pair_rows with gaps)."""
        self.arrays: dict[str, np.ndarray] | None = None
        """The concatenated arrays (class docstring); None before the first `refresh`."""

    @property
    def transitions(self) -> int:
        """(s, a, s') transitions held."""
        return 0 if self.arrays is None else len(self.arrays["x"])

    def refresh(self, store: Any) -> int:
        """Read the episodes listed since the last call (``store``: a SessionStore or its
        directory); returns how many were added."""
        session_dir = pathlib.Path(getattr(store, "session_dir", store))
        if self.reader is None or self.reader.session_dir != session_dir:
            self.session = read_session_spec(session_dir)
            self.observation_kind = explorer_observation(self.session, self.spec)
            self.fields = self.session.observation_fields(self.observation_kind)
            self.reader = SessionReader(session_dir, required_keys=(*self.fields, "action"), max_cached_episodes=0)
        added = 0
        for episode in self.reader.refresh():
            data = self._episode_data(episode) if episode.steps else None
            if data is not None:
                self._episodes[episode.index] = data
                added += 1
        if added or self.arrays is None:
            self.arrays = self._concatenate()
        return added

    def _episode_data(self, episode: Episode) -> dict[str, np.ndarray] | None:
        labels = self.labels(episode)
        if labels is None:
            return None
        try:
            arrays = self.reader.arrays(episode.index, (*self.fields, "action"))
        except DamagedEpisodeError:  # the reader has warned
            return None
        states = self.encode(self.session.observation_from(arrays, self.observation_kind)).numpy()
        actions = np.clip(arrays["action"] / self.action_limit, -1.0, 1.0).astype(np.float32)
        data = {"x": states.astype(np.float32), "a": actions, **labels}
        segments = self.reader.segments(episode.index)
        if len(segments) > 1:  # steps missing: rows t whose row t + 1 is the next step
            data["pair_rows"] = np.concatenate([np.arange(a, b - 1) for a, b in segments]).astype(np.int64)
        return data

    def _concatenate(self) -> dict[str, np.ndarray]:
        episodes = [self._episodes[i] for i in sorted(self._episodes)]
        empty = {
            "x": np.zeros((0, self.state_dim), np.float32),
            "a": np.zeros((0, self.spec.action_dim), np.float32),
        }
        label_names = [k for k in episodes[0] if k not in ("x", "a", "pair_rows")] if episodes else []
        out: dict[str, np.ndarray] = {}
        rows = [e.get("pair_rows", np.arange(len(e["x"]) - 1)) for e in episodes]
        for key in ("x", "a", *label_names):
            out[key] = np.concatenate([e[key][r] for e, r in zip(episodes, rows, strict=True)] or [empty[key]])
            out[f"all_{key}"] = np.concatenate([e[key] for e in episodes] or [empty[key]])
        out["next_x"] = np.concatenate([e["x"][r + 1] for e, r in zip(episodes, rows, strict=True)] or [empty["x"]])
        return out


def train_per_new_transition(explorer: Any, store: Any, prefix: str) -> dict[str, float]:
    """The `train` of the explorers on `EncodedEpisodes` (`sse`, `diayn`; seed 001's budget: one
    update per new transition): read the episodes added to the store (``explorer.replay``), then,
    once the replay holds ``warmup_transitions`` (default: one batch), run ``explorer.update()``
    once per transition added since the last call (or ``updates_per_episode`` times). Returns the
    updates' mean statistics and the counters, each named ``<prefix>_...``."""
    explorer.replay.refresh(store)
    explorer.train_calls += 1
    config, held = explorer.config, explorer.replay.transitions
    new = max(held - explorer.transitions_consumed, 0)
    explorer.transitions_consumed = held
    n_updates, totals = 0, {}
    if held >= (config.warmup_transitions or config.batch_size):
        n_updates = new if config.updates_per_episode is None else config.updates_per_episode
        for _ in range(n_updates):
            for key, value in explorer.update().items():
                totals[key] = totals.get(key, 0.0) + value
    stats = {f"{prefix}_{key}": value / max(n_updates, 1) for key, value in totals.items()}
    counters = {f"{prefix}_updates": n_updates, f"{prefix}_updates_total": explorer.updates}
    return {**stats, **counters, f"{prefix}_transitions": held}
