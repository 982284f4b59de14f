"""ROS 2 on the wire without ROS (robot_drivers/bridge/ros2_wire.py) and the ``ros2`` arm's motion
shaping and options, checked against independent references: `rosbags`' ROS 2 typestores (the
.msg definitions and their CDR serialisation), and accelerations and jerks computed here by finite
differences of the published velocities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from robot_drivers.bridge import ros2_wire
from robot_drivers.bridge.arm_ros2 import Ros2Arm, Ros2Options, _VelocityProfile
from robot_drivers.bridge.ros2_wire import (
    CycloneOptions,
    Float64MultiArray,
    Header,
    JointState,
    MultiArrayDimension,
    MultiArrayLayout,
    Time,
)
from safety import SafetyLimits
from safety.robot_model import limits_fields

TYPESTORES = [get_typestore(Stores.ROS2_HUMBLE), get_typestore(Stores.ROS2_JAZZY)]
MESSAGES = [Time, Header, JointState, MultiArrayDimension, MultiArrayLayout, Float64MultiArray]
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)


def _ros_name(message: type) -> str:
    return ros2_wire.ROS_TYPE_NAMES[message]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("store", TYPESTORES, ids=("humble", "jazzy"))
def test_each_message_has_the_ros2_dds_type_name_and_the_msg_definitions_fields_in_order(message, store):
    ros_name = _ros_name(message)
    package, _, name = ros_name.split("/")
    assert message.__idl_typename__ == f"{package}::msg::dds_::{name}_"
    fields = [field for field, _ in store.fielddefs[ros_name][1]]
    assert list(message.__dataclass_fields__) == fields


def _rosbags_joint_state(store, msg: JointState):
    t = store.types
    return t["sensor_msgs/msg/JointState"](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec),
            frame_id=msg.header.frame_id,
        ),
        name=list(msg.name),
        position=np.array(msg.position, dtype=np.float64),
        velocity=np.array(msg.velocity, dtype=np.float64),
        effort=np.array(msg.effort, dtype=np.float64),
    )


@settings(max_examples=150, deadline=None)
@given(
    sec=st.integers(-(2**31), 2**31 - 1),
    nanosec=st.integers(0, 2**32 - 1),
    frame=names,
    joints=st.lists(st.tuples(names, floats, floats, floats), max_size=9),
    velocities=st.integers(0, 9),
)
def test_joint_states_are_byte_identical_to_rosbags_cdr_both_ways(sec, nanosec, frame, joints, velocities):
    msg = JointState(
        header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame),
        name=[j[0] for j in joints],
        position=[j[1] for j in joints],
        velocity=[j[2] for j in joints][:velocities],  # franka_ros2 fills every array; a message may not
        effort=[j[3] for j in joints],
    )
    ours = msg.serialize()
    assert ours[:4] == b"\x00\x01\x00\x00"  # XCDR1, little-endian
    for store in TYPESTORES:
        theirs = bytes(store.serialize_cdr(_rosbags_joint_state(store, msg), "sensor_msgs/msg/JointState"))
        assert ours == theirs
        back = JointState.deserialize(theirs)
        assert back.name == msg.name and back.header.frame_id == frame
        assert np.array_equal(back.position, msg.position, equal_nan=True)
        decoded = store.deserialize_cdr(ours, "sensor_msgs/msg/JointState")
        assert decoded.header.stamp.sec == sec and decoded.header.stamp.nanosec == nanosec
        assert np.array_equal(decoded.velocity, msg.velocity, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(floats, max_size=16),
    dims=st.lists(st.tuples(names, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=3),
    offset=st.integers(0, 2**32 - 1),
)
def test_velocity_commands_are_byte_identical_to_rosbags_cdr(data, dims, offset):
    msg = Float64MultiArray(
        layout=MultiArrayLayout(dim=[MultiArrayDimension(*d) for d in dims], data_offset=offset), data=data
    )
    for store in TYPESTORES:
        t = store.types
        theirs = t["std_msgs/msg/Float64MultiArray"](
            layout=t["std_msgs/msg/MultiArrayLayout"](
                dim=[t["std_msgs/msg/MultiArrayDimension"](label=a, size=b, stride=c) for a, b, c in dims],
                data_offset=offset,
            ),
            data=np.array(data, dtype=np.float64),
        )
        assert msg.serialize() == bytes(store.serialize_cdr(theirs, "std_msgs/msg/Float64MultiArray"))


def test_topic_names_and_stamps_follow_ros2_conventions():
    assert ros2_wire.dds_topic("/joint_states") == "rt/joint_states"
    assert ros2_wire.dds_topic("/franka/joint_states") == "rt/franka/joint_states"
    assert ros2_wire.check_ros_topic("ns/velocity_controller/commands") == "/ns/velocity_controller/commands"
    for bad in ("", "/", "/a//b", "/a/", "/1a", "/a b", "/a-b", "/é"):
        with pytest.raises(ValueError, match="not a ROS 2 topic name"):
            ros2_wire.check_ros_topic(bad)
    t = ros2_wire.stamp(1700000000.25)
    assert (t.sec, t.nanosec) == (1700000000, 250_000_000)
    t = ros2_wire.stamp(12.9999999999)
    assert 0 <= t.nanosec <= 999_999_999


def test_cyclone_options_describe_loopback_only_and_refuse_bad_settings(tmp_path):
    xml = ros2_wire.loopback_options(7).xml()
    assert '<NetworkInterface name="lo"/>' in xml
    assert "<AllowMulticast>false</AllowMulticast>" in xml
    assert '<Peer Address="127.0.0.1"/>' in xml
    assert 'address="10.0.0.2"' in CycloneOptions(interface="10.0.0.2").xml()
    assert "<Peers>" not in CycloneOptions().xml() and "<AllowMulticast>true" in CycloneOptions().xml()
    for bad in ({"domain_id": 233}, {"domain_id": -1}, {"interface": "eth0/../x"}, {"peers": ["a b"]}):
        with pytest.raises(ValueError):
            CycloneOptions(**bad)
    own = tmp_path / "cyclone.xml"
    own.write_text("<CycloneDDS/>")
    assert CycloneOptions(config_file=own).xml() == "<CycloneDDS/>"
    with pytest.raises(ValueError, match="leave interface, peers and multicast unset"):
        Ros2Options(dds={"config_file": str(own), "interface": "lo"})
    with pytest.raises(ValueError, match="config_file"):
        Ros2Options(dds={"config_file": str(tmp_path / "missing.xml")})


def test_ros2_options_default_to_franka_ros2_names():
    arm = Ros2Arm({}, robot_model="fr3")
    assert arm.joint_names == tuple(f"fr3_joint{i}" for i in range(1, 8))
    assert arm.options.commands_topic == "/joint_velocity_controller/commands"
    assert Ros2Arm({}, robot_model="panda").joint_names[0] == "panda_joint1"
    assert Ros2Options(controller="/ns/velocity").commands_topic == "/ns/velocity/commands"
    with pytest.raises(ValueError, match="7 distinct"):
        Ros2Options(joint_names=["a"] * 7)


# ---- the velocity profile --------------------------------------------------------------------------
def _limits() -> SafetyLimits:
    return SafetyLimits(**limits_fields("fr3", {}))


def test_velocity_profiles_keep_the_operating_acceleration_and_jerk_through_retargets():
    """Random targets at random moments (mid-ramp included), sampled every 1 ms: the accelerations
    and jerks from finite differences of the velocities stay within the limits, and every target
    is reached."""
    limits = _limits()
    accelerations, jerks = limits.accelerations, limits.jerks
    profile = _VelocityProfile(accelerations, jerks)
    rng = np.random.default_rng(3)
    dt = 0.001
    t, velocities, changes = 0.0, [], []
    for _ in range(40):
        target = rng.uniform(-0.5, 0.5, 7) * (rng.random(7) < 0.7)
        profile.retarget(target, t)
        hold = rng.uniform(0.01, 0.4)
        for _ in range(int(hold / dt)):
            velocities.append(profile.velocity(t))
            t += dt
        changes.append((target, profile.velocity(t + 10.0)))
    v = np.array(velocities)
    acceleration = np.diff(v, axis=0) / dt
    jerk = np.diff(v, n=2, axis=0) / dt**2
    assert np.all(np.abs(acceleration) <= accelerations * (1 + 1e-6) + 1e-9)
    # a second difference averages the jerk over two samples: within the limit wherever it is constant
    assert np.all(np.abs(jerk) <= jerks * (1 + 1e-6) + 1e-6)
    assert np.max(np.abs(acceleration)) > 0.5 * accelerations.min(), "the profile never accelerated"
    for target, reached in changes:
        np.testing.assert_array_equal(reached, target)


def test_a_stop_from_the_cap_takes_the_time_the_limits_allow_and_ends_exactly_at_rest():
    limits = _limits()
    profile = _VelocityProfile(limits.accelerations, limits.jerks)
    profile.retarget(np.full(7, 0.5), 0.0)
    profile.retarget(np.zeros(7), 5.0)
    assert not profile.at_rest(5.0)
    # time-optimal from 0.5 rad/s with acceleration a and jerk j: 0.5 / a + a / j (the slowest joint)
    a, j = limits.accelerations, limits.jerks
    expected = float(np.max(0.5 / a + a / j))
    times = np.arange(5.0, 5.0 + 2 * expected, 0.0005)
    moving = [t for t in times if not profile.at_rest(t)]
    assert abs((moving[-1] - 5.0) - expected) < 0.002
    assert np.array_equal(profile.velocity(5.0 + expected + 0.001), np.zeros(7))
