"""Cameras of a real cell (robot_drivers/cameras) and how the bridge server and the collector use them.

Everything OpenCV does runs for real: the capture threads read video files written here with
``cv2.VideoWriter`` through ``cv2.VideoCapture`` (FFMPEG), the same path as a USB camera after its
open.  A file that ends, or whose reads start failing (truncated under the reader), is a camera
that stops delivering.  No RealSense device is connected to this machine (``pyrealsense2`` imports
and finds none): its configuration and the missing-device error are tested, its capture is not.
The bridge server runs in a thread of this process with its real simulated arm (PyBullet),
wrapped to record whether it was connected and every velocity target it was given.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import yaml

from collector.frame_ages import FrameAges
from robot_drivers import DriverFault, FaultReason, RobotState
from robot_drivers.bridge import protocol
from robot_drivers.bridge.client import BridgeDriver
from robot_drivers.bridge.config import BridgeConfigError, BridgeServerConfig, load_bridge_config
from robot_drivers.bridge.server import BridgeServer
from robot_drivers.cameras.base import CameraConfig
from robot_drivers.cameras.opencv import OpenCVCamera
from robot_drivers.cameras.realsense import RealSenseCamera
from robot_drivers.cameras.rig import CameraRig
from sim.bridge_arm import SimArm
from tests.bridge.clients import Client

REPO = pathlib.Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 160, 120
"""Size of the generated videos, pixels (not the recorded size: the camera resizes)."""


def write_video(path: pathlib.Path, frames: int, fps: float = 30.0) -> pathlib.Path:
    """An MJPG video of ``frames`` frames: frame i is red level 40 + 2 i (its number, read back by
    `frame_number`) and blue 100 (RGB order), with a white band along its top rows (right way up)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        bgr = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        bgr[:, :, 2] = 40 + 2 * (i % 100)
        bgr[:, :, 0] = 100
        bgr[: HEIGHT // 6] = 255
        writer.write(bgr)
    writer.release()
    return path


def frame_number(image: np.ndarray) -> int:
    """The number `write_video` drew into a frame (from the red level below the band)."""
    return round((float(np.median(image[image.shape[0] // 2 :, :, 0])) - 40) / 2)


def camera_config(device, **overrides) -> CameraConfig:
    device = device if isinstance(device, int) else str(device)
    fields = {"name": "wrist", "source": "opencv", "device": device, "fps": 30, "reopen_after_s": 0}
    return CameraConfig(**{**fields, **overrides})


def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail("condition not reached in time")


# ---- the OpenCV capture thread ----------------------------------------------------------------------------
def test_an_opencv_file_camera_reports_what_it_achieved_and_keeps_the_newest_frame(tmp_path):
    camera = OpenCVCamera(camera_config(write_video(tmp_path / "a.avi", 150), record_width=84, record_height=64))
    camera.open()
    try:
        time.sleep(1.0)
        described = camera.describe()
        assert described["requested"] == {"width": None, "height": None, "fps": 30.0}
        assert described["achieved"]["width"] == WIDTH and described["achieved"]["height"] == HEIGHT
        assert described["achieved"]["fps"] == 30.0 and described["record"] == {"width": 84, "height": 64}
        for _ in range(3):
            frame = camera.latest()
            now, wall = time.monotonic(), time.time()
            status = camera.status(now)
            # the newest frame: its number is the count delivered so far, and it shows that frame
            assert frame.index >= status["frames"] - 1 and frame.index >= 20, (frame.index, status)
            assert abs(frame_number(frame.image) - (frame.index - 1) % 100) <= 1, (
                frame_number(frame.image),
                frame.index,
            )
            age = now - frame.captured_s
            assert 0.0 <= age < 0.1, age  # at 30 fps, a frame is replaced every 33 ms
            assert abs((wall - frame.captured_wall_s) - age) < 0.01
            assert 25.0 <= status["fps_measured"] <= 35.0, status
            assert status["lost"] is None and status["losses"] == 0
            time.sleep(0.2)
        later = camera.latest()
        assert later.index > frame.index  # ... and it keeps being replaced
        image = later.image
        assert image.shape == (64, 84, 3) and image.dtype == np.uint8 and not image.flags.writeable
        assert abs(int(np.median(image[40:, :, 2])) - 100) <= 3  # RGB: blue is the third channel
        assert image[:5].min() > 240 and image[-5:].max() < 250  # right way up: the band on top
    finally:
        camera.close()


def test_a_file_that_ends_is_a_lost_camera_after_the_failed_reads(tmp_path):
    camera = OpenCVCamera(camera_config(write_video(tmp_path / "short.avi", 15), max_failed_reads=5))
    rig = CameraRig(cameras=[camera])
    rig.open()
    try:
        assert rig.check() == ([], [])
        images, ages = rig.images()
        assert set(images) == {"wrist"} and 0 <= ages["wrist"] < 0.1
        lost = wait_until(lambda: rig.check()[0], timeout_s=5)
        assert lost == [f"camera 'wrist' (opencv {tmp_path / 'short.avi'}): 5 reads in a row failed"]
        assert camera.status()["frames"] == 15 and camera.losses == 1
        with pytest.raises(DriverFault) as raised:
            rig.images()
        assert raised.value.reason is FaultReason.camera_error
        assert raised.value.message == lost[0] and "\n" not in raised.value.message
        assert rig.check() == ([], [])  # reported once
    finally:
        rig.close()


def test_a_source_that_stops_delivering_is_lost_after_the_frame_timeout_and_reopened(tmp_path):
    """Reads that fail slower than ``max_failed_reads`` allows: the frame timeout declares the loss;
    with ``reopen_after_s`` the thread opens the source again and the camera is back."""
    path = write_video(tmp_path / "short.avi", 10)
    camera = OpenCVCamera(
        camera_config(path, max_failed_reads=10_000, frame_timeout_s=0.4, reopen_after_s=0.3, open_timeout_s=2)
    )
    rig = CameraRig(cameras=[camera])
    rig.open()
    try:
        lost = wait_until(lambda: rig.check()[0], timeout_s=5)
        assert len(lost) == 1 and "camera 'wrist'" in lost[0] and "no frame for" in lost[0], lost
        assert "frame_timeout_s 0.4" in lost[0]
        back = wait_until(lambda: rig.check()[1], timeout_s=5)
        assert back == ["wrist"] and camera.recoveries >= 1
        assert rig.lost() is None or "no frame" in rig.lost()  # it may be lost again: the file is short
    finally:
        rig.close()


def test_a_camera_missing_at_start_is_one_line_naming_it(tmp_path):
    not_a_video = tmp_path / "notes.avi"
    not_a_video.write_text("not a video\n")
    cases = [
        (
            camera_config(tmp_path / "gone.avi"),
            f"camera 'wrist' (opencv {tmp_path / 'gone.avi'}): cannot open: no such file",
        ),
        (
            camera_config("/dev/video97"),
            "camera 'wrist' (opencv /dev/video97): cannot open: no such device /dev/video97",
        ),
        (camera_config(97, name="side"), "camera 'side' (opencv /dev/video97): cannot open: no such device"),
        (
            camera_config(not_a_video),
            f"camera 'wrist' (opencv {not_a_video}): cannot open (not a video OpenCV can read)",
        ),
    ]
    for config, expected in cases:
        with pytest.raises(DriverFault) as raised:
            CameraRig([config]).open()
        assert raised.value.reason is FaultReason.camera_error
        assert raised.value.message.startswith(expected) and "\n" not in raised.value.message, raised.value.message


def test_a_rig_whose_second_camera_is_missing_closes_the_first(tmp_path):
    first = OpenCVCamera(camera_config(write_video(tmp_path / "a.avi", 300), name="front"))
    rig = CameraRig(cameras=[first, OpenCVCamera(camera_config(tmp_path / "gone.avi"))])
    with pytest.raises(DriverFault, match="camera 'wrist'"):
        rig.open()
    assert first._thread is None  # closed again: nothing left capturing


# ---- RealSense: no device here ------------------------------------------------------------------------------
def test_a_realsense_camera_without_a_device_is_the_one_line_error():
    """No RealSense is connected to this machine: opening one must fail naming the camera (this is
    all of the RealSense path that can run here; its capture is untested)."""
    import pyrealsense2 as rs

    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense device is connected: this test is about its absence")
    config = CameraConfig(name="front", source="realsense", device=123456789012, width=640, height=480, fps=30)
    assert config.device == "123456789012"  # a serial written as a YAML number is its text
    with pytest.raises(DriverFault) as raised:
        CameraRig([config]).open()
    assert raised.value.reason is FaultReason.camera_error
    assert raised.value.message == (
        "camera 'front' (realsense serial 123456789012): cannot open: no RealSense device is connected"
    )
    anyone = RealSenseCamera(CameraConfig(name="front", source="realsense"))
    with pytest.raises(DriverFault, match=r"^\[camera_error\] camera 'front' \(realsense the only connected device\)"):
        anyone.open()


# ---- configuration ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cameras", "expected"),
    [
        ([{"name": "wrist", "source": "opencv"}], "cameras.0: device: an opencv camera needs a device"),
        ([{"name": "wrist", "source": "usb", "device": 0}], "cameras.0.source: unknown camera source 'usb'"),
        ([{"name": "wrist", "source": "opencv", "device": 0, "depth": True}], "cameras.0: depth: only realsense"),
        ([{"name": "wrist", "source": "opencv", "device": -1}], "cameras.0: device: a device index is 0 or more"),
        ([{"name": "wrist", "source": "opencv", "device": 0, "fps": 0}], "cameras.0.fps: Input should be greater"),
        ([{"name": "a b", "source": "opencv", "device": 0}], "cameras.0.name: String should match pattern"),
        ([{"name": "w", "source": "opencv", "device": 0, "zoom": 2}], "cameras.0.zoom: Extra inputs"),
        ([{"name": "w", "source": "opencv", "device": 0, "fourcc": "MJPEG"}], "cameras.0.fourcc: String should"),
        ([{"name": "w", "source": "realsense", "width": 640}], "cameras.0: width, height, fps: a RealSense profile"),
        ([{"name": "w", "source": "realsense", "fourcc": "MJPG"}], "cameras.0: fourcc: only opencv"),
        ([{"name": "w", "source": "realsense", "device": "12-34"}], "cameras.0: device: a RealSense camera is named"),
        (
            [{"name": "w", "source": "opencv", "device": 0}, {"name": "w", "source": "opencv", "device": 1}],
            "cameras: each name once; 'w' repeated",
        ),
        ([{"name": "front", "source": "opencv", "device": 0}], "cameras: 'front' is also a camera of the arm"),
    ],
)
def test_a_bad_camera_config_is_one_line_naming_the_field(tmp_path, cameras, expected):
    path = tmp_path / "bridge.yaml"
    options = {"backend": "pybullet", "cameras": [{"name": "front"}]}
    path.write_text(yaml.safe_dump({"arm": "sim", "options": options, "cameras": cameras}))
    with pytest.raises(BridgeConfigError) as raised:
        load_bridge_config(path)
    lines = str(raised.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {expected}"), lines


def test_the_commented_camera_example_of_the_fr3_config_is_valid():
    text = (REPO / "configs" / "bridge_fr3.yaml").read_text()
    example = "\n".join(line[2:] for line in text[text.index("# cameras:") :].splitlines())
    cameras = yaml.safe_load(example)["cameras"]
    config = BridgeServerConfig(arm="sim", options={"backend": "pybullet", "cameras": []}, cameras=cameras)
    assert [(c.name, c.source) for c in config.cameras] == [("wrist", "opencv"), ("front", "realsense")]


# ---- the wire -------------------------------------------------------------------------------------------------
def _state(**fields) -> RobotState:
    return RobotState(time=1.0, q=np.zeros(7), dq=np.zeros(7), tip_pos=np.zeros(3), **fields)


def test_image_ages_travel_in_states_and_malformed_ones_are_refused():
    image = np.zeros((4, 5, 3), np.uint8)
    state = _state(images={"wrist": image, "front": image}, image_ages_s={"wrist": 0.0123, "front": 0.0})
    header, frames = protocol.decode_reply(protocol.encode_state(7, state))
    assert protocol.decode_state(header, frames).image_ages_s == {"wrist": 0.0123, "front": 0.0}
    header, frames = protocol.decode_reply(protocol.encode_state(7, _state(images={"wrist": image})))
    assert "image_ages_s" not in header["state"]  # an older server's reply: no ages, read as none
    assert protocol.decode_state(header, frames).image_ages_s == {}
    for ages in ({"wrist": -0.1}, {"wrist": "0.1"}, {"wrist": None}, {"side": 0.1}, [0.1], {"wrist": True}):
        header, frames = protocol.decode_reply(protocol.encode_state(7, _state(images={"wrist": image})))
        header["state"]["image_ages_s"] = ages
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_state(header, frames)


# ---- the collector's drop count ---------------------------------------------------------------------------------
def test_an_image_older_than_two_control_periods_is_a_drop():
    ages = FrameAges(control_rate_hz=20.0)  # two periods: 0.1 s
    for wrist in (0.0, 0.06, 0.099, 0.101, 0.5):
        ages.add(_state(image_ages_s={"wrist": wrist, "front": 0.0}))
    ages.add(_state())  # a state without images counts nothing
    assert ages.drops() == {"wrist": 2, "front": 0}
    summary = ages.summary()["wrist"]
    assert summary["steps"] == 5 and summary["drops"] == 2 and summary["drop_after_s"] == 0.1
    assert summary["age_max_s"] == 0.5 and abs(summary["age_mean_s"] - 0.152) < 1e-9
    assert ages.last_ages() == {"wrist": 0.5, "front": 0.0}
    ages.start_episode()
    assert ages.drops() == {} and ages.summary() == {}


# ---- the bridge server with cameras -----------------------------------------------------------------------------
class RecordingArm(SimArm):
    """The simulated arm, recording whether it was connected and every velocity target it is given."""

    def __init__(self, options) -> None:
        super().__init__(options)
        self.connects = 0
        self.targets: list[np.ndarray] = []

    def connect(self) -> None:
        self.connects += 1
        super().connect()

    def set_velocity_target(self, joint_velocity: np.ndarray) -> None:
        self.targets.append(np.array(joint_velocity, dtype=np.float64))
        super().set_velocity_target(joint_velocity)


def _server_config(tmp_path, cameras, arm_cameras=()) -> BridgeServerConfig:
    options = {"backend": "pybullet", "cameras": list(arm_cameras)}
    return BridgeServerConfig(address=f"ipc://{tmp_path}/bridge", options=options, cameras=cameras)


def test_a_camera_missing_at_start_stops_the_bridge_before_the_arm_is_connected(tmp_path):
    config = _server_config(tmp_path, [{"name": "wrist", "source": "opencv", "device": str(tmp_path / "gone.avi")}])
    arm = RecordingArm(config.options)
    lines: list[str] = []
    with pytest.raises(DriverFault) as raised:
        BridgeServer(config, arm=arm, log=lines.append).serve()
    assert raised.value.reason is FaultReason.camera_error
    assert raised.value.message.startswith(f"camera 'wrist' (opencv {tmp_path / 'gone.avi'}): cannot open")
    assert arm.connects == 0 and arm.targets == [] and lines == []
    # ... and from the command line: one line on stderr naming the camera, exit 3, nothing served
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    done = subprocess.run(
        [sys.executable, "-m", "pandalab", "bridge", "serve", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"pandalab bridge serve: {raised.value.message}"], done.stderr


def test_the_bridge_serves_camera_frames_with_their_ages_and_stops_the_arm_when_one_is_lost(tmp_path):
    """A file camera beside the simulated arm's own camera: hello lists both, states carry both with
    their ages; when the file ends the arm is stopped, commands and images are refused with
    ``camera_error`` naming the camera, and a stop does not clear it while the camera is lost."""
    video = write_video(tmp_path / "wrist.avi", 75)  # 2.5 s at 30 fps
    cameras = [{"name": "wrist", "source": "opencv", "device": str(video), "fps": 30, "max_failed_reads": 5}]
    config = _server_config(tmp_path, cameras, arm_cameras=[{"name": "front", "width": 24, "height": 24}])
    arm = RecordingArm(config.options)
    lines: list[str] = []
    server = BridgeServer(config, arm=arm, log=lines.append)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=server.serve, kwargs={"should_stop": stop.is_set, "ready": ready.set})
    thread.start()
    client = Client(config.address)
    driver = BridgeDriver(
        {
            "server": config.address,
            "cameras": [{"name": "wrist"}, {"name": "front", "width": 24, "height": 24}],
            "request_timeout_s": 2.0,
        }
    )
    try:
        assert ready.wait(30)
        assert any(
            line.startswith("camera 'wrist' (opencv ") and "achieved 160x120 at 30 fps" in line for line in lines
        )
        driver.connect()  # checks that the server offers both cameras at these sizes
        info = driver.server_info
        assert {(c["name"], c["width"], c["height"]) for c in info["cameras"]} == {("front", 24, 24), ("wrist", 84, 84)}
        assert [s["name"] for s in info["camera_sources"]] == ["wrist"]
        state = driver.read_state()
        assert state.images["wrist"].shape == (84, 84, 3) and state.images["front"].shape == (24, 24, 3)
        assert state.image_ages_s["front"] == 0.0 and 0.0 < state.image_ages_s["wrist"] < 0.1
        assert driver.server_status()["cameras"][0]["name"] == "wrist"
        driver.close()  # lets go of the arm (bye)
        # drive the arm, then let the file run out
        assert client.hello()["ok"]
        for seq in range(1000):
            reply = client.command(seq, [0.2, 0, 0, 0, 0, 0, 0])
            if not reply["ok"]:
                break
        assert reply["reason"] == "camera_error" and reply["error"].startswith(f"camera 'wrist' (opencv {video})")
        assert seq > 10 and any(np.any(target) for target in arm.targets), "the arm never moved"
        assert np.all(arm.targets[-1] == 0.0), "the arm was not stopped"
        assert any(line.startswith("camera_error: camera 'wrist'") for line in lines), lines
        refused = client.request(op="state", images=True)
        assert not refused["ok"] and refused["reason"] == "camera_error" and "camera 'wrist'" in refused["error"]
        assert client.request(op="state", images=False)["ok"]  # the joint state stays readable
        assert client.request(op="stop")["ok"]
        time.sleep(0.03)
        again = client.command(5000, [0.2, 0, 0, 0, 0, 0, 0])
        assert not again["ok"] and again["reason"] == "camera_error"  # still lost: still refused
        status = client.request(op="status")
        assert status["counters"]["camera_losses"] == 1 and status["cameras"][0]["lost"] is not None
    finally:
        client.close()
        driver.close()
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_bridge_check_prints_each_cameras_requested_and_achieved_settings_and_frame_age(tmp_path):
    from robot_drivers.bridge.check import run_bridge_check

    video = write_video(tmp_path / "wrist.avi", 300)
    cameras = [{"name": "wrist", "source": "opencv", "device": str(video), "fps": 30, "record_width": 32}]
    config = _server_config(tmp_path, cameras)
    server = BridgeServer(config, arm=SimArm(config.options), log=lambda line: None)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=server.serve, kwargs={"should_stop": stop.is_set, "ready": ready.set})
    thread.start()
    try:
        assert ready.wait(30)
        lines: list[str] = []
        assert run_bridge_check(config.address, samples=5, out=lines.append) == 0, lines
    finally:
        stop.set()
        thread.join(timeout=30)
    text = "\n".join(lines)
    assert "cameras     wrist 32x84" in text, text
    settings = "requested default size at 30 fps, achieved 160x120 at 30 fps, recorded 32x84"
    assert f"camera      wrist (opencv {video}): {settings}" in text, text
    measured = next(line for line in lines if line.strip().startswith("measured"))
    fps, age = re.match(r"\s+measured ([\d.]+) fps, newest frame ([\d.]+) ms old", measured).groups()
    assert 25 <= float(fps) <= 35 and 0 <= float(age) < 100, measured
