"""``source: realsense``: an Intel RealSense camera (D400 series and alike) through ``pyrealsense2``.

The colour stream is requested as RGB8 at ``width`` x ``height`` and ``fps`` (0 in librealsense's
terms where unset: its default profile); ``device`` is the camera's serial number (printed on it,
and by ``rs-enumerate-devices``), needed only with more than one RealSense connected.  With
``depth: true`` the depth stream is enabled too and aligned to the colour image (`rs.align`); the
newest depth frame is kept beside the colour frame (`robot_drivers.cameras.base.Frame.depth`).

Untested against a device (none here): the tests check the configuration and that a missing
device is the one-line ``camera_error`` naming the camera.  ``pyrealsense2`` is imported when the
camera is opened, so a bridge without RealSense cameras never loads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_drivers.cameras.base import CameraConfig, CaptureThreadCamera

FRAME_WAIT_MS = 500
"""Longest one read waits for a frame set, ms (the thread then counts a failed read)."""


class RealSenseCamera(CaptureThreadCamera):
    """An Intel RealSense camera's colour stream (see the module docstring)."""

    kind = "realsense"

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._pipeline: Any = None
        self._align: Any = None

    @classmethod
    def check_config(cls, config: CameraConfig) -> None:
        device = config.device
        if device is not None and (not isinstance(device, str) or not device.strip().isalnum()):
            raise ValueError(f"device: a RealSense camera is named by its serial number (digits), got {device!r}")
        if config.fourcc is not None:
            raise ValueError("fourcc: only opencv cameras take a FOURCC (a RealSense streams RGB8)")
        given = [getattr(config, field) is not None for field in ("width", "height", "fps")]
        if any(given) and not all(given):
            raise ValueError("width, height, fps: a RealSense profile is requested whole: set all three or none")
        if config.fps is not None and config.fps != int(config.fps):
            raise ValueError(f"fps: a RealSense profile's rate is a whole number of frames/s, got {config.fps:g}")

    @classmethod
    def device_text(cls, config: CameraConfig) -> str:
        return f"serial {config.device}" if config.device is not None else "the only connected device"

    def _open_source(self) -> dict[str, Any]:
        try:
            import pyrealsense2 as rs
        except ImportError as error:
            raise self.fault(f"cannot open: pyrealsense2 does not import ({error}; pip install pyrealsense2)") from None
        serials = [device.get_info(rs.camera_info.serial_number) for device in rs.context().query_devices()]
        serial = self.config.device
        if not serials:
            raise self.fault("cannot open: no RealSense device is connected")
        if serial is None and len(serials) > 1:
            raise self.fault(
                f"cannot open: {len(serials)} RealSense devices are connected ({', '.join(serials)}); "
                "set device to one serial"
            )
        if serial is not None and serial not in serials:
            raise self.fault(f"cannot open: no RealSense device with this serial (connected: {', '.join(serials)})")
        config = self.config
        stream_config = rs.config()
        stream_config.enable_device(serial or serials[0])
        width, height, fps = config.width or 0, config.height or 0, int(config.fps or 0)
        stream_config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        if config.depth:
            stream_config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(stream_config)
        except RuntimeError as error:
            raise self.fault(f"cannot start the colour stream {width}x{height} at {fps} fps: {error}") from None
        self._pipeline = pipeline
        self._align = rs.align(rs.stream.color) if config.depth else None
        video = profile.get_stream(rs.stream.color).as_video_stream_profile()
        return {"width": video.width(), "height": video.height(), "fps": float(video.fps())}

    def _read_source(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        pipeline = self._pipeline
        if pipeline is None:
            return None
        ok, frames = pipeline.try_wait_for_frames(FRAME_WAIT_MS)
        if not ok:
            return None
        if self._align is not None:
            frames = self._align.process(frames)
        colour = frames.get_color_frame()
        if not colour:
            return None
        image = np.asanyarray(colour.get_data()).copy()
        depth = None
        if self._align is not None:
            depth_frame = frames.get_depth_frame()
            depth = np.asanyarray(depth_frame.get_data()).copy() if depth_frame else None
        return image, depth

    def _close_source(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop()
