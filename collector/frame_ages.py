"""How old each recorded image was, and the frames a session missed (dropped).

A real cell's cameras run at their own rate in their own threads on the bridge; every state carries
each image's age (`robot_drivers.types.RobotState.image_ages_s`: from its frame's capture to the
state's read).  An image older than `DROP_PERIODS` control periods counts as a **drop** at that step:
the step recorded a frame the camera should long have replaced (a stalled camera, a USB bus that
cannot carry the rate, a frame rate below the control rate).  Per episode and camera: steps with an
age, drops, mean and largest age; in the episode metadata (``camera_frames``) and, for the episode
under way, in ``status`` and telemetry (``camera_drops``, ``camera_age_s``).

A simulator's cameras render on demand (age 0: never a drop); a state without ages (a bridge that
does not report them) counts nothing.
"""

from __future__ import annotations

from typing import Any

from robot_drivers import RobotState

DROP_PERIODS = 2.0
"""An image older than this many control periods at its step is a drop."""


class FrameAges:
    """Image ages of one episode, per camera, at ``control_rate_hz`` (Hz)."""

    def __init__(self, control_rate_hz: float) -> None:
        self.drop_after_s = DROP_PERIODS / float(control_rate_hz)
        """An image older than this at its step is a drop, s."""
        self._steps: dict[str, int] = {}
        self._drops: dict[str, int] = {}
        self._sum_s: dict[str, float] = {}
        self._max_s: dict[str, float] = {}
        self._last_s: dict[str, float] = {}

    def start_episode(self) -> None:
        """Forget the previous episode's ages."""
        for counts in (self._steps, self._drops, self._sum_s, self._max_s, self._last_s):
            counts.clear()

    def add(self, state: RobotState) -> None:
        """Count the images of one recorded step (the state it recorded)."""
        for name, age in state.image_ages_s.items():
            age = float(age)
            self._steps[name] = self._steps.get(name, 0) + 1
            self._drops[name] = self._drops.get(name, 0) + (age > self.drop_after_s)
            self._sum_s[name] = self._sum_s.get(name, 0.0) + age
            self._max_s[name] = max(self._max_s.get(name, 0.0), age)
            self._last_s[name] = age

    def drops(self) -> dict[str, int]:
        """Drops so far this episode, per camera."""
        return dict(self._drops)

    def last_ages(self) -> dict[str, float]:
        """The latest recorded step's image age per camera, s (rounded to 0.1 ms)."""
        return {name: round(age, 4) for name, age in self._last_s.items()}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per camera: ``steps`` with an age, ``drops``, ``age_mean_s``, ``age_max_s`` (the episode
        metadata's ``camera_frames``), and ``drop_after_s``, the threshold used."""
        return {
            name: {
                "steps": steps,
                "drops": self._drops[name],
                "age_mean_s": round(self._sum_s[name] / steps, 6),
                "age_max_s": round(self._max_s[name], 6),
                "drop_after_s": self.drop_after_s,
            }
            for name, steps in self._steps.items()
        }
