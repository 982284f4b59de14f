"""Camera sources of a real cell, owned by the bridge server beside the arm (DESIGN.md, "The bridge").

A simulated arm renders its own cameras; a real cell's cameras are listed in the bridge config's
``cameras:`` (`robot_drivers.cameras.base.CameraConfig`) and opened by a `CameraRig`
(`robot_drivers.cameras.rig`) before the arm is connected.  Each camera runs its own capture thread
that keeps only the newest frame with its capture time; the server merges those frames into the
states it sends, with each image's age.

A new camera kind is one module (a `robot_drivers.cameras.base.CaptureThreadCamera` subclass)
plus one line in `CAMERA_SOURCES`; modules are imported only when a camera of that kind is
configured (OpenCV and pyrealsense2 are not loaded by a bridge without cameras).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_drivers.cameras.base import Camera

CAMERA_SOURCES: dict[str, str] = {
    "opencv": "robot_drivers.cameras.opencv:OpenCVCamera",
    "realsense": "robot_drivers.cameras.realsense:RealSenseCamera",
}
"""Camera source kind (a camera config's ``source``) -> ``module:ClassName``."""


def source_names() -> list[str]:
    return sorted(CAMERA_SOURCES)


def camera_class(source: str) -> type[Camera]:
    """The camera class of ``source``; `KeyError` naming the known kinds if unknown."""
    try:
        target = CAMERA_SOURCES[source]
    except KeyError:
        raise KeyError(f"unknown camera source {source!r}; known: {', '.join(source_names())}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
