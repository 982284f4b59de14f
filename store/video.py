"""Camera frames to an H.264 mp4 (PyAV): the one video writer of `pandalab data video`, evaluation
videos and the dataset exports.

H.264 in yuv420p plays everywhere (browsers, LeRobot's decoders); it needs even frame sizes, so a
frame is enlarged by an integer factor (nearest neighbour: recorded pixels stay sharp) to at least
``min_height`` pixels and then padded by one row / column where its size is odd.  Written to a temp
name beside the destination and renamed, so a killed writer never leaves a truncated file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

CRF = 18
"""x264's constant rate factor: visually lossless for 84x84 renders at a few kB per second."""


class VideoError(ValueError):
    """Frames that cannot be written (not RGB uint8 images, none at all)."""


def _upscaled(frame: np.ndarray, scale: int) -> np.ndarray:
    if scale > 1:
        frame = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, min_height: int = 0) -> Path:
    """Write RGB uint8 ``frames`` (each (H, W, 3), all the same size) as an H.264 mp4 at ``fps``
    frames per second; returns the path.  `VideoError` for frames that are not such images."""
    import av  # imported here: reading or writing episodes never needs it

    path = Path(path)
    if not fps > 0 or not math.isfinite(fps):
        raise VideoError(f"{path}: fps must be a positive number, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    written = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = np.asarray(frame)
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise VideoError(f"{path}: frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
                if stream is None:
                    shape = frame.shape
                    scale = max(1, math.ceil(min_height / shape[0]))
                    first = _upscaled(frame, scale)
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                    stream.height, stream.width = first.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(CRF)}
                elif frame.shape != shape:
                    raise VideoError(f"{path}: frame {written} is {frame.shape}, the first was {shape}")
                picture = av.VideoFrame.from_ndarray(_upscaled(frame, scale), format="rgb24")
                container.mux(stream.encode(picture))
                written += 1
            if stream is None:
                raise VideoError(f"{path}: no frames to write")
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
