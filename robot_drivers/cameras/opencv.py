"""``source: opencv``: a USB / V4L2 camera through OpenCV (``cv2.VideoCapture``), or a video file.

``device`` is a device index (``0``: ``/dev/video0``), a device node (``/dev/video4``; the links
under ``/dev/v4l/by-id/`` keep naming the same camera when USB ports change) or a video file.  On a
device, ``fourcc``, ``width``, ``height`` and ``fps`` are requested in that order (V4L2 picks the
nearest mode it has); what it then delivers is reported as achieved (the size from the frames
themselves, the rate as the driver reports it and as measured).  A video file (tests, replaying a
recording) is played in real time at ``fps`` (default: the file's own rate); when it ends, reads fail
and the camera is lost, like a camera that stops delivering.  Frames arrive as BGR and are turned
into RGB.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import cv2
import numpy as np

from robot_drivers.cameras.base import CameraConfig, CaptureThreadCamera

DEFAULT_FILE_FPS = 30.0
"""Playback rate of a video file that states none and has no ``fps`` configured, frames/s."""


class OpenCVCamera(CaptureThreadCamera):
    """A camera read with ``cv2.VideoCapture`` (see the module docstring)."""

    kind = "opencv"

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._capture_device: cv2.VideoCapture | None = None
        self._period_s: float | None = None
        """A file's playback period, s (None on a device: its reads wait for the frames)."""
        self._next_frame_at = 0.0

    @classmethod
    def check_config(cls, config: CameraConfig) -> None:
        device = config.device
        if device is None or device == "":
            raise ValueError("device: an opencv camera needs a device index (0), a device path (/dev/video4) or a file")
        if isinstance(device, int) and device < 0:
            raise ValueError(f"device: a device index is 0 or more, got {device}")
        if config.depth:
            raise ValueError("depth: only realsense cameras stream depth")

    @classmethod
    def device_text(cls, config: CameraConfig) -> str:
        return f"/dev/video{config.device}" if isinstance(config.device, int) else str(config.device)

    @property
    def is_file(self) -> bool:
        """Whether the device is a video file (played in real time) rather than a camera."""
        return isinstance(self.config.device, str) and not self.config.device.startswith("/dev/")

    def _open_source(self) -> dict[str, Any]:
        config = self.config
        path = self.device_text(config)
        if not os.path.exists(path) and (self.is_file or sys.platform.startswith("linux")):
            raise self.fault(f"cannot open: no such {'file' if self.is_file else 'device'} {path}")
        if self.is_file:
            capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        elif sys.platform.startswith("linux"):
            capture = cv2.VideoCapture(config.device, cv2.CAP_V4L2)
        else:
            capture = cv2.VideoCapture(config.device)
        if not capture.isOpened():
            capture.release()
            what = "not a video OpenCV can read" if self.is_file else "busy, or not a video capture device"
            raise self.fault(f"cannot open ({what})")
        if not self.is_file:
            if config.fourcc is not None:
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*config.fourcc))
            if config.width is not None:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            if config.height is not None:
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            if config.fps is not None:
                capture.set(cv2.CAP_PROP_FPS, config.fps)
        reported_fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
        achieved = {
            "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) or None,
            "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) or None,
            "fps": reported_fps,
            "fourcc": _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC)),
        }
        if self.is_file:
            fps = config.fps or reported_fps or DEFAULT_FILE_FPS
            self._period_s = 1.0 / fps
            achieved["fps"] = fps
            self._next_frame_at = time.monotonic()
        self._capture_device = capture
        return achieved

    def _read_source(self) -> tuple[np.ndarray, None] | None:
        capture = self._capture_device
        if capture is None:
            return None
        if self._period_s is not None:  # a file: one frame per period, as a camera delivers them
            delay = self._next_frame_at - time.monotonic()
            if delay > 0 and self._stopping.wait(delay):
                return None
            self._next_frame_at = max(self._next_frame_at + self._period_s, time.monotonic() - self._period_s)
        ok, frame = capture.read()
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB), None
        if frame.shape[2] == 4:
            return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB), None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), None

    def _close_source(self) -> None:
        capture, self._capture_device = self._capture_device, None
        if capture is not None:
            capture.release()


def _fourcc_text(code: float) -> str | None:
    """A FOURCC property as its four characters (None when the backend gives none)."""
    value = int(code)
    if value <= 0:
        return None
    text = "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() else None
