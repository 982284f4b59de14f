"""The camera interface of a real cell and the capture thread every camera kind builds on.

A `Camera` is opened once (`Camera.open`: blocking, bounded by ``open_timeout_s``; a camera that
cannot be opened, or opens and delivers nothing, is a `DriverFault` with reason ``camera_error``
naming it), then delivers frames by itself until `Camera.close`.

`CaptureThreadCamera` runs one thread per camera that reads the source as fast as it delivers
(the blocking reads happen there, never in the bridge server's loop) and keeps only the newest
`Frame`: the image converted to what the session records (RGB uint8, ``record_height`` x
``record_width``, right way up, resized with ``cv2.INTER_AREA``), its capture time on the
monotonic and the wall clock, and its number.  A camera is **lost** after ``max_failed_reads``
failed reads in a row or when no frame arrived for ``frame_timeout_s`` (a read that blocks, an
unplugged USB cable); `Camera.lost` then gives a one-line reason.  A lost camera's thread closes
its source and tries to open it again every ``reopen_after_s`` (0: never); once it delivers again
it is no longer lost (`Camera.losses` and `Camera.recoveries` count both).

A kind implements three hooks: `_open_source` (returns what the device says it delivers),
`_read_source` (one frame, RGB, any size; None when a read fails) and `_close_source`.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import threading
import time
from typing import Any

import numpy as np
from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator

from robot_drivers.base import DriverFault, FaultReason
from safety.strict_model import StrictModel

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
"""A camera name: one segment of a store key (the store records ``obs/images/<name>``)."""
FPS_WINDOW_S = 2.0
"""The measured frame rate counts the frames of the last this many seconds."""
FAILED_READ_PAUSE_S = 0.01
"""Pause after a failed read before the next one, s (a source failing at once must not spin)."""


class CameraConfig(StrictModel):
    """One camera of a real cell, an entry of the bridge config's ``cameras:``."""

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=64,
        description="Camera name, as sessions name it (robot.options.cameras) and the store records it "
        "(obs/images/<name>); letters, digits, '_', '.', '-'.",
    )
    source: str = Field(description="Camera kind: opencv (USB/V4L2, or a video file) or realsense (Intel RealSense).")
    device: StrictInt | StrictStr | None = Field(
        None,
        description="opencv: a device index (0), a device path (/dev/video4, or a /dev/v4l/by-id/... link, "
        "stable across replugging) or a video file path (tests); realsense: the device's serial number "
        "(optional: the only connected device).",
    )
    width: int | None = Field(
        None, gt=0, le=8192, description="Capture width requested from the device, pixels (None: its default)."
    )
    height: int | None = Field(
        None, gt=0, le=8192, description="Capture height requested from the device, pixels (None: its default)."
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Frame rate requested from the device, frames/s (None: its default); a video file is "
        "played at this rate (None: the file's own).",
    )
    record_width: int = Field(
        84, gt=0, le=2048, description="Width of the recorded image, pixels (the session's camera width)."
    )
    record_height: int = Field(
        84, gt=0, le=2048, description="Height of the recorded image, pixels (the session's camera height)."
    )
    fourcc: str | None = Field(
        None,
        pattern=r"^[ -~]{4}$",
        description="opencv only: the pixel format requested from a device as a FOURCC (e.g. MJPG, for full "
        "frame rates at high resolutions over USB 2); None: the device's default.",
    )
    depth: bool = Field(
        False,
        description="realsense only: also stream depth, aligned to the colour image (kept beside the colour "
        "frame on the bridge; not recorded: the episode format holds RGB images).",
    )
    max_failed_reads: int = Field(
        10, ge=1, le=10_000, description="Failed reads in a row after which the camera is lost."
    )
    frame_timeout_s: float = Field(
        1.0, gt=0.0, le=60.0, description="With no new frame for this long, s, the camera is lost."
    )
    open_timeout_s: float = Field(
        5.0, gt=0.0, le=60.0, description="Longest wait at start for the camera to open and deliver a frame, s."
    )
    reopen_after_s: float = Field(
        2.0,
        ge=0.0,
        le=600.0,
        description="A lost camera is closed and opened again every this many seconds until it delivers, s "
        "(0: never; the bridge must be restarted).",
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        from robot_drivers.cameras import source_names

        if source not in source_names():
            raise ValueError(f"unknown camera source {source!r}; known: {', '.join(source_names())}")
        return source

    @model_validator(mode="before")
    @classmethod
    def _serial_as_text(cls, data: Any) -> Any:
        """A RealSense serial written as a number in YAML (``device: 123456789012``) is its text."""
        if isinstance(data, dict) and data.get("source") == "realsense":
            device = data.get("device")
            if isinstance(device, int) and not isinstance(device, bool):
                return {**data, "device": str(device)}
        return data

    @model_validator(mode="after")
    def _source_accepts_it(self) -> CameraConfig:
        from robot_drivers.cameras import camera_class

        camera_class(self.source).check_config(self)
        return self

    @property
    def label(self) -> str:
        """How messages name the camera: ``camera 'wrist' (opencv /dev/video4)``."""
        from robot_drivers.cameras import camera_class

        return f"camera {self.name!r} ({self.source} {camera_class(self.source).device_text(self)})"


@dataclasses.dataclass(frozen=True)
class Frame:
    """The newest frame of a camera.

    Attributes:
        image: RGB uint8, shape (record_height, record_width, 3), right way up.
        captured_s: `time.monotonic` when the frame was handed over by the source (after its read
            returned: the exposure was earlier by the device's transfer latency), s.
        captured_wall_s: the wall clock (`time.time`) at the same instant, s since the epoch.
        index: the frame's number since the camera was opened, from 1.
        depth: the depth image aligned to ``image`` (realsense with ``depth``), uint16 in the
            device's depth units (1 mm by default), shape (record_height, record_width); else None.
    """

    image: np.ndarray
    captured_s: float
    captured_wall_s: float
    index: int
    depth: np.ndarray | None = None


class Camera(abc.ABC):
    """One camera of a real cell (config: `CameraConfig`).  Every failure raises `DriverFault`
    with reason ``camera_error`` and a message naming the camera (`CameraConfig.label`)."""

    kind: str
    """The ``source`` name this class is registered under."""

    def __init__(self, config: CameraConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    @abc.abstractmethod
    def check_config(cls, config: CameraConfig) -> None:
        """Refuse settings this kind cannot use (`ValueError`, one line naming the field)."""

    @classmethod
    def device_text(cls, config: CameraConfig) -> str:
        """The device as messages show it."""
        return str(config.device)

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device and wait until it delivers a frame (at most ``open_timeout_s``)."""

    @abc.abstractmethod
    def latest(self) -> Frame | None:
        """The newest frame (None before the first)."""

    @abc.abstractmethod
    def lost(self, now: float | None = None) -> str | None:
        """Why the camera is lost (one line), or None while it delivers; ``now``: `time.monotonic`."""

    @property
    @abc.abstractmethod
    def losses(self) -> int:
        """How often the camera was lost since it was opened."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Requested and achieved capture settings (``bridge check``)."""

    @abc.abstractmethod
    def status(self, now: float | None = None) -> dict[str, Any]:
        """Frames delivered, measured frame rate, the newest frame's age (s), lost or not."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop capturing and release the device.  Idempotent."""


class CaptureThreadCamera(Camera):
    """A camera read by its own thread, keeping the newest frame (see the module docstring)."""

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: Frame | None = None
        self._frames = 0
        self._frame_times: collections.deque[float] = collections.deque()
        self._last_frame_at = 0.0
        self._lost: str | None = None
        self._losses = 0
        self._recoveries = 0
        self._achieved: dict[str, Any] = {}
        self._delivered_shape: tuple[int, int] | None = None
        """(height, width) of the source's frames as they arrive (the achieved size)."""

    # ---- the hooks a kind implements ---------------------------------------------------------------
    @abc.abstractmethod
    def _open_source(self) -> dict[str, Any]:
        """Open the device (raising `DriverFault` naming the camera if it cannot be); returns what it
        says it delivers: ``width``, ``height`` (pixels), ``fps`` (frames/s), None where unknown."""

    @abc.abstractmethod
    def _read_source(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """One frame: (RGB uint8 image of any size, depth or None); None when the read failed.  May
        block until the device delivers."""

    @abc.abstractmethod
    def _close_source(self) -> None:
        """Release the device (called from the capture thread, or after it ended)."""

    # ---- Camera -------------------------------------------------------------------------------------
    def fault(self, what: str) -> DriverFault:
        """A ``camera_error`` naming this camera: ``camera 'wrist' (opencv /dev/video4): what``."""
        return DriverFault(FaultReason.camera_error, f"{self.config.label}: {' '.join(str(what).split())}")

    def open(self) -> None:
        if self._thread is not None:
            return
        try:
            achieved = self._open_source()
        except DriverFault:
            raise
        except Exception as error:  # a library's own exception: one line naming the camera
            raise self.fault(f"cannot open: {type(error).__name__}: {error}") from None
        with self._lock:
            self._achieved = dict(achieved)
            self._last_frame_at = time.monotonic()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.config.open_timeout_s
        with self._lock:
            while self._frame is None and self._lost is None and time.monotonic() < deadline:
                self._lock.wait(timeout=max(0.0, deadline - time.monotonic()))
            delivered, why = self._frame is not None, self._lost
        if not delivered:
            self.close()
            timeout = self.config.open_timeout_s
            raise self.fault(f"opened, but {why}" if why else f"opened, but delivered no frame within {timeout:g} s")

    def latest(self) -> Frame | None:
        with self._lock:
            return self._frame

    def lost(self, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._lost is None and self._thread is not None and not self._stopping.is_set():
                silent = now - self._last_frame_at
                if silent > self.config.frame_timeout_s:
                    self._mark_lost(f"no frame for {silent:.2f} s (frame_timeout_s {self.config.frame_timeout_s:g})")
            return self._lost

    @property
    def losses(self) -> int:
        with self._lock:
            return self._losses

    @property
    def recoveries(self) -> int:
        with self._lock:
            return self._recoveries

    def describe(self) -> dict[str, Any]:
        config = self.config
        with self._lock:
            achieved = dict(self._achieved)
            if self._delivered_shape is not None:  # what arrives beats what the driver claims
                achieved["height"], achieved["width"] = self._delivered_shape
        return {
            "name": config.name,
            "source": config.source,
            "device": self.device_text(config),
            "requested": {"width": config.width, "height": config.height, "fps": config.fps},
            "achieved": achieved,
            "record": {"width": config.record_width, "height": config.record_height},
        }

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        lost = self.lost(now)
        with self._lock:
            frame = self._frame
            times = list(self._frame_times)
            frames, losses, recoveries = self._frames, self._losses, self._recoveries
        recent = [t for t in times if t > now - FPS_WINDOW_S]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return {
            "name": self.name,
            "frames": frames,
            "fps_measured": round(fps, 2),
            "age_s": None if frame is None else round(now - frame.captured_s, 4),
            "lost": lost,
            "losses": losses,
            "recoveries": recoveries,
        }

    def close(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:  # the thread releases the source as it ends (one blocked in a read the
            thread.join(timeout=max(2.0, 2 * self.config.frame_timeout_s))  # device never answers: later)
            return
        try:
            self._close_source()
        except Exception:  # releasing a device that is already gone
            pass

    # ---- the capture thread ---------------------------------------------------------------------------
    def _mark_lost(self, why: str) -> None:
        """Called with the lock held."""
        if self._lost is None:
            self._lost = why
            self._losses += 1
            self._lock.notify_all()

    def _run(self) -> None:
        try:
            self._capture()
        finally:  # the thread releases its own source: never while a read of it may be running
            try:
                self._close_source()
            except Exception:  # a device that is already gone
                pass

    def _capture(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                lost = self._lost is not None
            if lost:
                if not self._reopen():
                    return
                failures = 0
                continue
            try:
                read = self._read_source()
                if read is not None:
                    captured, captured_wall = time.monotonic(), time.time()
                    shape = (int(read[0].shape[0]), int(read[0].shape[1]))
                    frame_image, frame_depth = self._to_record_size(*read)
            except Exception:  # a library's error on a read, a frame of the wrong kind: a failed read
                read = None
            if self._stopping.is_set():
                return
            if read is None:
                failures += 1
                if failures >= self.config.max_failed_reads:
                    with self._lock:
                        self._mark_lost(f"{failures} reads in a row failed")
                else:
                    self._stopping.wait(FAILED_READ_PAUSE_S)
                continue
            failures = 0
            with self._lock:
                if self._lost is not None:  # declared lost by the timeout while this read blocked
                    continue
                self._frames += 1
                self._frame = Frame(frame_image, captured, captured_wall, self._frames, frame_depth)
                self._delivered_shape = shape
                self._last_frame_at = captured
                self._frame_times.append(captured)
                while self._frame_times and self._frame_times[0] < captured - FPS_WINDOW_S:
                    self._frame_times.popleft()
                self._lock.notify_all()

    def _reopen(self) -> bool:
        """Close the lost source and open it again until it opens (False: stop, or never reopen)."""
        try:
            self._close_source()
        except Exception:  # a device that is already gone
            pass
        if self.config.reopen_after_s <= 0:
            self._stopping.wait()
            return False
        while not self._stopping.wait(self.config.reopen_after_s):
            try:
                achieved = self._open_source()
            except Exception:  # still gone: try again later
                continue
            with self._lock:
                self._achieved = dict(achieved)
                self._lost = None
                self._recoveries += 1
                self._last_frame_at = time.monotonic()  # frame_timeout_s from now for its first frame
            return True
        return False

    def _to_record_size(self, image: np.ndarray, depth: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB uint8 (record_height, record_width, 3); depth resized by nearest neighbour."""
        import cv2

        size = (self.config.record_width, self.config.record_height)
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"{self.config.label}: frames must be uint8, got {image.dtype}")
        if image.shape[1::-1] != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        image = np.ascontiguousarray(image)
        image.setflags(write=False)
        if depth is not None:
            if depth.shape[1::-1] != size:
                depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
            depth = np.ascontiguousarray(depth)
            depth.setflags(write=False)
        return image, depth
