"""`CameraRig`: every camera of a real cell, as the bridge server uses them.

The server opens the rig before it connects the arm: a camera that cannot be opened, or opens and
delivers nothing within its ``open_timeout_s``, stops the start with a `DriverFault`
(``camera_error``) whose one-line message names it (``camera 'wrist' (opencv /dev/video4): cannot
open: no such device /dev/video4``); the arm is then never connected.  While serving, `images`
gives each camera's newest frame with its age, and `check` (every tick) reports cameras newly lost
and back.  Nothing here blocks: the cameras' own threads do the reads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from robot_drivers.base import DriverFault, FaultReason
from robot_drivers.cameras import camera_class
from robot_drivers.cameras.base import Camera, CameraConfig


class CameraRig:
    """The cameras of ``configs`` (or the given ``cameras``, already built), in that order."""

    def __init__(self, configs: Sequence[CameraConfig] = (), cameras: Sequence[Camera] | None = None) -> None:
        self.cameras: list[Camera] = (
            list(cameras) if cameras is not None else [camera_class(c.source)(c) for c in configs]
        )
        names = [camera.name for camera in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"cameras: names must be unique, got {names}")
        self._seen_losses = {camera.name: 0 for camera in self.cameras}
        self._reported_lost: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        return [camera.name for camera in self.cameras]

    def open(self) -> None:
        """Open every camera, in order; the first that fails closes those opened and raises its
        `DriverFault` (``camera_error``, one line naming it)."""
        opened: list[Camera] = []
        for camera in self.cameras:
            try:
                camera.open()
            except DriverFault:
                for other in opened:
                    other.close()
                raise
            opened.append(camera)

    def describe(self) -> list[dict[str, Any]]:
        """The images every state carries: ``{name, width, height}`` as recorded (``hello``'s cameras)."""
        return [
            {"name": c.name, "width": c.config.record_width, "height": c.config.record_height} for c in self.cameras
        ]

    def sources(self) -> list[dict[str, Any]]:
        """Each camera's source, requested and achieved settings (`Camera.describe`)."""
        return [camera.describe() for camera in self.cameras]

    def status(self, now: float | None = None) -> list[dict[str, Any]]:
        """Each camera's frames, measured rate, newest frame's age and loss (`Camera.status`)."""
        now = time.monotonic() if now is None else now
        return [camera.status(now) for camera in self.cameras]

    def lost(self, now: float | None = None) -> str | None:
        """The first lost camera's one-line fault (``camera 'wrist' (...): why``), or None."""
        for camera in self.cameras:
            why = camera.lost(now)
            if why is not None:
                return f"{camera.config.label}: {why}"
        return None

    def check(self, now: float | None = None) -> tuple[list[str], list[str]]:
        """Cameras lost since the last call (one line each, a loss and recovery in between
        included) and cameras delivering again (their names)."""
        lost, back = [], []
        for camera in self.cameras:
            why = camera.lost(now)
            losses = camera.losses
            if losses > self._seen_losses[camera.name]:
                self._seen_losses[camera.name] = losses
                lost.append(f"{camera.config.label}: {why or 'lost, and delivering again'}")
                if why is not None:
                    self._reported_lost[camera.name] = why
            if why is None and self._reported_lost.pop(camera.name, None) is not None:
                back.append(camera.name)
        return lost, back

    def images(self, now: float | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Each camera's newest image and its age at ``now`` (`time.monotonic`, s); `DriverFault`
        (``camera_error``) naming the first lost camera."""
        now = time.monotonic() if now is None else now
        images, ages = {}, {}
        for camera in self.cameras:
            why = camera.lost(now)
            frame = camera.latest()
            if why is not None or frame is None:
                raise DriverFault(FaultReason.camera_error, f"{camera.config.label}: {why or 'no frame yet'}")
            images[camera.name] = frame.image
            ages[camera.name] = max(0.0, now - frame.captured_s)
        return images, ages

    def close(self) -> None:
        """Close every camera.  Idempotent."""
        for camera in self.cameras:
            camera.close()


def settings_text(source: dict[str, Any]) -> str:
    """A camera's requested, achieved and recorded settings in one line (`Camera.describe`'s dict),
    for the bridge's log and ``pandalab bridge check``."""

    def text(values: dict[str, Any], unknown: str) -> str:
        width, height, fps = values.get("width"), values.get("height"), values.get("fps")
        size = f"{width}x{height}" if width and height else f"{unknown} size"
        return f"{size} at {fps:g} fps" if isinstance(fps, int | float) and fps > 0 else f"{size}, {unknown} rate"

    requested = source.get("requested") or {}
    asked = text(requested, "default") if any(v is not None for v in requested.values()) else "the device's defaults"
    record = source.get("record") or {}
    return (
        f"requested {asked}, achieved {text(source.get('achieved') or {}, 'unknown')}, "
        f"recorded {record.get('width')}x{record.get('height')}"
    )
