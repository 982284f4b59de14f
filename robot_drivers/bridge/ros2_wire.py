"""ROS 2 messages on the wire without ROS: Eclipse Cyclone DDS (PyPI ``cyclonedds``) speaking ROS 2's
conventions, for the bridge's ``ros2`` arm and the franka_ros2 stand-in (``tools/franka_ros2_standin.py``).

rclpy cannot be installed on our machines (no PyPI package, not in Debian), but a ROS 2 graph whose
middleware is **rmw_cyclonedds** (``RMW_IMPLEMENTATION=rmw_cyclonedds_cpp``) is plain DDS with three
conventions, which this module follows:

- a ROS topic ``/a/b`` is the DDS topic ``rt/a/b``;
- a ROS message ``pkg/msg/Name`` is the DDS type ``pkg::msg::dds_::Name_`` with the fields of its
  ``.msg`` definition, in order;
- samples are XCDR1 little-endian (payload header ``00 01 00 00``): byte-identical to `rosbags`'
  ``serialize_cdr`` for the same message (tests/bridge/test_ros2_wire.py checks every message here).

rmw_fastrtps (ROS 2's default on Humble) speaks the same RTPS, but its type names and discovery
details differ; only rmw_cyclonedds is supported (the launch files in ``launch/`` set it).

Cyclone is configured from the arm's options (`CycloneOptions`): the domain id (``ROS_DOMAIN_ID``),
the network interface, unicast peers and whether to use multicast; or an existing Cyclone XML file
(the robot PC's ``CYCLONEDDS_URI``).  Tests configure loopback only, multicast off.
"""

# No `from __future__ import annotations` here: cyclonedds resolves the message classes' field types
# from their (evaluated) annotations.
import dataclasses
import pathlib
import xml.sax.saxutils
from dataclasses import field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float64, int32, sequence, uint32
from pydantic import Field, field_validator

from safety.strict_model import StrictModel

MAX_DOMAIN_ID = 232
"""Highest ROS 2 domain id (ROS_DOMAIN_ID) on Linux."""


# ---- messages (field order and types are the .msg definitions') -----------------------------------
@dataclasses.dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    """builtin_interfaces/msg/Time: seconds and nanoseconds since the epoch of the clock."""

    sec: int32 = 0
    nanosec: uint32 = 0


@dataclasses.dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    """std_msgs/msg/Header."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclasses.dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    """sensor_msgs/msg/JointState: names, positions (rad), velocities (rad/s), efforts (N m)."""

    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclasses.dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    """std_msgs/msg/MultiArrayDimension."""

    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclasses.dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    """std_msgs/msg/MultiArrayLayout."""

    dim: sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclasses.dataclass
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    """std_msgs/msg/Float64MultiArray: what a ros2_controllers JointGroupVelocityController takes on
    ``/<controller>/commands`` (one velocity per joint of its ``joints`` parameter, in that order, rad/s;
    the controller ignores the layout)."""

    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: sequence[float64] = field(default_factory=list)


ROS_TYPE_NAMES = {
    MultiArrayDimension: "std_msgs/msg/MultiArrayDimension",
    MultiArrayLayout: "std_msgs/msg/MultiArrayLayout",
    JointState: "sensor_msgs/msg/JointState",
    Float64MultiArray: "std_msgs/msg/Float64MultiArray",
    Header: "std_msgs/msg/Header",
    Time: "builtin_interfaces/msg/Time",
}
"""Each message class's ROS 2 name (as rosbags' typestores spell it)."""


def dds_topic(ros_topic: str) -> str:
    """The DDS topic of a ROS 2 topic: ``/franka/joint_states`` -> ``rt/franka/joint_states``."""
    return "rt/" + ros_topic.lstrip("/")


def stamp(seconds: float) -> Time:
    """A ROS time stamp for ``seconds`` (since the clock's epoch)."""
    sec = int(seconds // 1)
    return Time(sec=sec, nanosec=min(999_999_999, round((seconds - sec) * 1e9)))


def check_ros_topic(topic: str) -> str:
    """A ROS 2 topic name (``/a/b_c``: letters, digits, ``_`` and ``/``, no empty or digit-led token)."""
    tokens = topic.lstrip("/").split("/")
    if (
        not topic
        or topic.endswith("/")
        or any(not t or t[0].isdigit() or not all(c.isalnum() or c == "_" for c in t) for t in tokens)
        or not topic.isascii()
    ):
        raise ValueError(f"{topic!r} is not a ROS 2 topic name (like /joint_states or /ns/controller/commands)")
    return "/" + topic.lstrip("/")


# ---- Cyclone configuration -----------------------------------------------------------------------
class CycloneOptions(StrictModel):
    """How the bridge joins the ROS 2 graph over Cyclone DDS (the same settings as the robot PC's)."""

    domain_id: int = Field(0, ge=0, le=MAX_DOMAIN_ID, description="ROS_DOMAIN_ID of the franka_ros2 graph.")
    interface: str | None = Field(
        None,
        description="Network interface (name such as eth0 or lo, or its address) DDS uses; None: Cyclone's "
        "choice.  The robot PC's bridge talks to its own ROS graph: lo when everything runs there.",
    )
    peers: tuple[str, ...] = Field(
        (), description="Unicast discovery peers (addresses), for networks without multicast or loopback-only."
    )
    multicast: bool = Field(True, description="Let Cyclone use multicast (discovery and data); false with peers.")
    config_file: pathlib.Path | None = Field(
        None,
        description="An existing Cyclone XML file (the ROS side's CYCLONEDDS_URI) used as it is; then interface, "
        "peers and multicast must be left unset.",
    )

    @field_validator("interface")
    @classmethod
    def _interface(cls, interface: str | None) -> str | None:
        if interface is not None and (not interface or not all(c.isalnum() or c in "._:-" for c in interface)):
            raise ValueError(f"{interface!r} is not a network interface name or address")
        return interface

    @field_validator("peers")
    @classmethod
    def _peers(cls, peers: tuple[str, ...]) -> tuple[str, ...]:
        for peer in peers:
            if not peer or not all(c.isalnum() or c in ".:-[]" for c in peer):
                raise ValueError(f"{peer!r} is not a host name or address")
        return peers

    def xml(self) -> str:
        """The Cyclone configuration (XML) these options describe."""
        if self.config_file is not None:
            if self.interface is not None or self.peers or not self.multicast:
                raise ValueError("config_file is used as it is: leave interface, peers and multicast unset")
            try:
                return self.config_file.read_text()
            except OSError as error:
                raise ValueError(f"config_file {self.config_file}: {error.strerror or error}") from None
        general = []
        if self.interface is not None:
            general.append(
                f"<Interfaces><NetworkInterface {'address' if _is_address(self.interface) else 'name'}="
                f"{xml.sax.saxutils.quoteattr(self.interface)}/></Interfaces>"
            )
        general.append(f"<AllowMulticast>{'true' if self.multicast else 'false'}</AllowMulticast>")
        discovery = "<ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>60</MaxAutoParticipantIndex>"
        if self.peers:
            peers = "".join(f"<Peer Address={xml.sax.saxutils.quoteattr(peer)}/>" for peer in self.peers)
            discovery += f"<Peers>{peers}</Peers>"
        return (
            '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any">'
            f"<General>{''.join(general)}</General><Discovery>{discovery}</Discovery>"
            "</Domain></CycloneDDS>"
        )


def loopback_options(domain_id: int) -> CycloneOptions:
    """Cyclone on 127.0.0.1 only, multicast off (tests; a bridge on the same PC as its ROS graph)."""
    return CycloneOptions(domain_id=domain_id, interface="lo", peers=("127.0.0.1",), multicast=False)


def _is_address(interface: str) -> bool:
    return interface.replace(".", "").isdigit() or ":" in interface


class Ros2Graph:
    """One DDS participant on the ROS 2 graph: readers and writers of ROS 2 topics.

    QoS as ROS 2's defaults where it matters for matching: writers are reliable, keep-last (so a
    ros2_controllers subscription, reliable by default, matches); readers are best-effort,
    keep-last 1 (they match reliable and best-effort publishers alike, and only the newest sample
    is wanted)."""

    def __init__(self, options: CycloneOptions) -> None:
        from cyclonedds.domain import DomainParticipant

        self.options = options
        self._domain_id = options.domain_id
        _acquire_domain(options.domain_id, options.xml())
        try:
            self.participant = DomainParticipant(options.domain_id)
        except Exception:
            _release_domain(options.domain_id)
            raise

    def reader(self, ros_topic: str, message_type: type, depth: int = 1, reliable: bool = False):
        """A reader of ``ros_topic``; ``reliable`` (a recorder that wants every sample, with ``depth``
        large enough) matches reliable publishers only."""
        from cyclonedds.qos import Policy, Qos
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic
        from cyclonedds.util import duration

        topic = Topic(self.participant, dds_topic(ros_topic), message_type)
        reliability = (
            Policy.Reliability.Reliable(duration(milliseconds=100)) if reliable else Policy.Reliability.BestEffort
        )
        return DataReader(self.participant, topic, qos=Qos(reliability, Policy.History.KeepLast(depth)))

    def writer(self, ros_topic: str, message_type: type, depth: int = 1):
        from cyclonedds.pub import DataWriter
        from cyclonedds.qos import Policy, Qos
        from cyclonedds.topic import Topic
        from cyclonedds.util import duration

        topic = Topic(self.participant, dds_topic(ros_topic), message_type)
        qos = Qos(
            Policy.Reliability.Reliable(duration(milliseconds=100)),
            Policy.History.KeepLast(depth),
            Policy.Durability.Volatile,
        )
        return DataWriter(self.participant, topic, qos=qos)

    def close(self) -> None:
        """Leave the graph (readers and writers go with the participant).  Idempotent."""
        participant, self.participant = self.participant, None
        if participant is not None:
            del participant
            _release_domain(self._domain_id)


_domains: dict[int, list] = {}
"""Cyclone domains configured in this process: id -> [Domain, its XML, participants using it].  Cyclone
configures a domain once per process; participants on the same domain share it."""


def _acquire_domain(domain_id: int, xml_config: str) -> None:
    from cyclonedds.domain import Domain

    entry = _domains.get(domain_id)
    if entry is None:
        _domains[domain_id] = [Domain(domain_id, xml_config), xml_config, 1]
    elif entry[1] != xml_config:
        raise ValueError(f"ROS domain {domain_id} is already joined with other Cyclone settings in this process")
    else:
        entry[2] += 1


def _release_domain(domain_id: int) -> None:
    entry = _domains.get(domain_id)
    if entry is not None:
        entry[2] -= 1
        if entry[2] <= 0:
            del _domains[domain_id]


def newest_valid(reader) -> object | None:
    """The newest valid sample a reader holds (taking them all), or None: a writer that leaves the
    graph shows up as an invalid sample, which is not data."""
    newest = None
    for sample in reader.take(N=64):
        info = getattr(sample, "sample_info", None)
        if info is not None and not info.valid_data:
            continue
        if isinstance(sample, IdlStruct):  # Cyclone hands an invalid sample as another type
            newest = sample
    return newest
