"""The ``ros2`` arm against joint states published from this process over Cyclone on loopback: what
it makes of malformed, foreign and missing messages.  The publisher here is a test participant, not
franka_ros2 (none can run here); it stands in for the robot PC's joint-state broadcaster and, with a
reader on the commands topic, for the loaded controller."""

from __future__ import annotations

import itertools
import os
import threading
import time

import numpy as np
import pytest

from robot_drivers import DriverFault, FaultReason
from robot_drivers.bridge.arm_ros2 import Ros2Arm
from robot_drivers.bridge.ros2_wire import Float64MultiArray, Header, JointState, Ros2Graph, loopback_options, stamp

NAMES = [f"fr3_joint{i}" for i in range(1, 8)]
STATE_TIMEOUT_S = 0.3
"""The arm's state_timeout_ms here: the publisher thread and the arm share this process's GIL, and a
loaded 2-core machine can pause a thread for longer than franka_ros2's 100 ms default."""
Q = [0.1, -0.2, 0.3, -2.0, 0.5, 1.6, 0.7]
_domains = itertools.count()


class RobotSide:
    """Publishes `message()` (a JointState, or None for silence) every 2 ms in a thread, and reads the
    commands the arm publishes (a controller's subscription)."""

    def __init__(self) -> None:
        domain_id = 20 + (os.getpid() * 7 + next(_domains)) % 70
        self.options = loopback_options(domain_id)
        self.graph = Ros2Graph(self.options)
        self.writer = self.graph.writer("/franka/joint_states", JointState)
        self.controller = self.graph.reader("/joint_velocity_controller/commands", Float64MultiArray, depth=1000)
        self.message = lambda: joint_state()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.message()
            if message is not None:
                self.writer.write(message)
            time.sleep(0.002)

    def commands(self) -> list[np.ndarray]:
        return [np.array(s.data) for s in self.controller.take(N=1000) if isinstance(s, Float64MultiArray)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.graph.close()


def joint_state(names=NAMES, position=Q, velocity=(0.0,) * 7) -> JointState:
    return JointState(
        header=Header(stamp=stamp(time.time())),
        name=list(names),
        position=[float(x) for x in position],
        velocity=[float(x) for x in velocity],
    )


@pytest.fixture
def robot_side():
    side = RobotSide()
    yield side
    side.close()


def _run(arm: Ros2Arm, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        arm.tick(time.monotonic())
        time.sleep(0.001)


def _connected(side: RobotSide) -> Ros2Arm:
    options = {"dds": side.options.model_dump(mode="json"), "connect_timeout_s": 5.0}
    arm = Ros2Arm({**options, "state_timeout_ms": 1000 * STATE_TIMEOUT_S}, robot_model="fr3")
    arm.connect()
    return arm


def test_malformed_and_foreign_joint_states_change_nothing_and_alone_are_a_lost_stream(robot_side):
    arm = _connected(robot_side)
    try:
        _run(arm, 0.05)
        before = arm.state().q.copy()
        np.testing.assert_allclose(before, Q)
        bad = [
            lambda: joint_state(position=[np.nan, *Q[1:]]),  # a NaN position
            lambda: joint_state(velocity=[0, 0, np.inf, 0, 0, 0, 0]),  # an infinite velocity
            lambda: joint_state(names=NAMES[:6], position=Q[:6]),  # a joint missing
            lambda: joint_state(names=[f"panda_joint{i}" for i in range(1, 8)]),  # another arm's joints
            lambda: joint_state(position=Q[:3], velocity=()),  # arrays shorter than the names
        ]
        for message in bad:
            robot_side.message = message
            _run(arm, 0.05)
            np.testing.assert_array_equal(arm.state().q, before)
            assert arm.fault() is None
            robot_side.message = joint_state  # valid ones in between: never STATE_TIMEOUT_S without one
            _run(arm, 0.05)
        assert arm.malformed_states >= len(bad)
        # only malformed messages for longer than state_timeout_ms: the stream counts as lost
        robot_side.message = bad[0]
        _run(arm, STATE_TIMEOUT_S + 0.2)
        assert arm.fault() is not None and arm.fault_reason() == FaultReason.connection_lost.value
        assert not arm.link_alive()
        with pytest.raises(DriverFault, match="still no joint states"):
            arm.recover()
        # valid messages again: the link is back and a recover clears the fault
        robot_side.message = joint_state
        _run(arm, 0.05)
        assert arm.link_alive()
        arm.recover()
        assert arm.fault() is None
    finally:
        arm.close()


def test_a_stream_that_stops_ramps_the_commands_down_publishes_zero_then_nothing(robot_side):
    from robot_drivers.bridge.arm_ros2 import ZERO_MESSAGES

    arm = _connected(robot_side)
    try:
        robot_side.message = lambda: joint_state(velocity=arm._profile.velocity(time.monotonic()))
        arm.set_velocity_target(np.array([0.3, 0, 0, 0, 0, 0, 0]))
        _run(arm, 0.3)
        robot_side.commands()
        robot_side.message = lambda: None  # the robot side goes quiet
        _run(arm, STATE_TIMEOUT_S + 0.6)
        sent = robot_side.commands()
        assert arm.fault_reason() == FaultReason.connection_lost.value
        assert sent and sent[0][0] > 0.0, "nothing was published while the stream stopped"
        first_zero = next(i for i, c in enumerate(sent) if not np.any(c))
        assert np.all(np.diff([c[0] for c in sent[:first_zero]]) <= 0), "the ramp down is not monotonic"
        assert all(not np.any(c) for c in sent[first_zero:])
        assert len(sent) - first_zero == ZERO_MESSAGES
        _run(arm, 0.2)
        assert not robot_side.commands(), "still publishing"
    finally:
        arm.close()


def test_a_non_finite_target_is_a_stop():
    arm = Ros2Arm({}, robot_model="fr3")
    arm.set_velocity_target(np.array([0.3, 0, 0, 0, 0, 0, 0]))
    arm.set_velocity_target(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    assert np.array_equal(arm._profile._target, np.zeros(7))
