"""The ROS 2 files for the robot PC (launch/): no ROS 2 runs here, so they are read, not run.

- The launch files are parsed (`ast`), then executed with stand-ins for ROS 2's ``launch`` and
  ``launch_ros`` packages that only record how each action is built: what the checks below read is
  the description the file would hand to ``ros2 launch`` (the environment it sets and when, the
  franka_ros2 launch file it includes and with what, the controller it spawns, the bridge it starts).
- The names must agree with the bridge's ros2 arm (robot_drivers/bridge/arm_ros2.py), the controllers
  YAML, the bridge config and the Cyclone configuration of the ROS side.  Whether franka_ros2 itself
  accepts them is not checked here: that needs a live ROS 2 system.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys
import types
import xml.etree.ElementTree as ElementTree
from typing import Any

import pytest
import yaml

from robot_drivers.bridge.arm_ros2 import DEFAULT_CONTROLLER, Ros2Arm, Ros2Options
from robot_drivers.bridge.config import load_bridge_config
from robot_drivers.bridge.ros2_wire import CycloneOptions

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
CELLS = {"fr3": "fr3", "panda": "fer"}
"""pandalab robot model -> franka_ros2 robot_type (current franka_ros2 calls the Panda `fer`)."""
VELOCITY_CONTROLLER = "velocity_controllers/JointGroupVelocityController"
FRANKA_JOINT_STATES = "/franka/joint_states"
"""Where franka_ros2's franka.launch.py remaps the joint_state_broadcaster's topic (1 kHz)."""


# ---- launch files: executed against recording stand-ins of ROS 2's launch packages --------------
class Built:
    """One launch action or substitution as the file built it: its class name and arguments."""

    def __init__(self, kind: str, args: tuple, kwargs: dict) -> None:
        self.kind, self.args, self.kwargs = kind, args, kwargs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Built) and (self.kind, self.args, self.kwargs) == (
            other.kind,
            other.args,
            other.kwargs,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{self.kind}{self.args}{self.kwargs}"

    def arg(self, index: int, name: str) -> Any:
        return self.args[index] if len(self.args) > index else self.kwargs[name]


def _recording_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def __getattr__(attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return lambda *args, **kwargs: Built(attribute, args, kwargs)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__path__ = []  # a package: `from launch.actions import ...`
    return module


ROS_MODULES = (
    "launch",
    "launch.actions",
    "launch.conditions",
    "launch.event_handlers",
    "launch.launch_description_sources",
    "launch.substitutions",
    "launch_ros",
    "launch_ros.actions",
    "launch_ros.substitutions",
)


def LC(name: str) -> Built:
    """What the files build for ``LaunchConfiguration(name)``."""
    return Built("LaunchConfiguration", (name,), {})


def describe(path: pathlib.Path) -> Built:
    """The LaunchDescription ``generate_launch_description()`` of ``path`` returns (recorded)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    assert any(
        isinstance(node, ast.FunctionDef) and node.name == "generate_launch_description" for node in tree.body
    ), f"{path.name} defines no generate_launch_description()"
    saved = {name: sys.modules.get(name) for name in ROS_MODULES}
    sys.modules.update({name: _recording_module(name) for name in ROS_MODULES})
    try:
        spec = importlib.util.spec_from_file_location(f"_launch_file_{path.stem.replace('.', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    assert isinstance(description, Built) and description.kind == "LaunchDescription"
    return description


def entities(description: Built) -> list[Built]:
    return list(description.arg(0, "initial_entities"))


def declared(items: list[Built]) -> dict[str, Any]:
    """Launch argument -> default value."""
    return {e.arg(0, "name"): e.kwargs.get("default_value") for e in items if e.kind == "DeclareLaunchArgument"}


def include_source(include: Built) -> Any:
    source = include.arg(0, "launch_description_source")
    assert source.kind == "PythonLaunchDescriptionSource"
    return source.arg(0, "launch_file_path")


def resolved(path: pathlib.Path) -> tuple[dict[str, Any], list[Built]]:
    """A launch file's argument defaults and actions, following an include of another file of launch/
    (whose actions it runs, with the arguments it passes on overriding that file's defaults)."""
    items = entities(describe(path))
    defaults = declared(items)
    actions = []
    for item in items:
        if item.kind == "IncludeLaunchDescription" and isinstance(include_source(item), str):
            included = pathlib.Path(include_source(item))
            assert included.parent == LAUNCH and included.exists(), f"{path.name} includes {included}"
            passed = dict(item.kwargs["launch_arguments"])
            assert passed == {name: LC(name) for name in passed}, "arguments passed on as they are"
            inner_defaults, inner_actions = resolved(included)
            assert set(passed) <= set(inner_defaults), f"{included.name} declares {sorted(passed)}"
            defaults = {**inner_defaults, **{name: defaults[name] for name in passed}}
            actions += inner_actions
        elif item.kind != "DeclareLaunchArgument":
            actions.append(item)
    return defaults, actions


def launch_file(model: str) -> pathlib.Path:
    return LAUNCH / f"franka_ros2_{model}.launch.py"


def controllers_path(model: str) -> pathlib.Path:
    return LAUNCH / f"franka_ros2_controllers_{model}.yaml"


def bridge_path(model: str) -> pathlib.Path:
    return ROOT / "configs" / f"bridge_ros2_{model}.yaml"


@pytest.mark.parametrize("model", CELLS)
def test_launch_file_defaults_name_this_cells_files(model):
    defaults, _ = resolved(launch_file(model))
    assert defaults["robot_type"] == CELLS[model]
    assert pathlib.Path(defaults["controllers_yaml"]) == controllers_path(model)
    assert pathlib.Path(defaults["bridge_config"]) == bridge_path(model)
    for name in ("controllers_yaml", "bridge_config"):
        assert pathlib.Path(defaults[name]).is_file(), defaults[name]
    assert defaults["use_fake_hardware"] == "false"
    assert defaults["start_bridge"] == "true"


@pytest.mark.parametrize("model", CELLS)
def test_launch_file_sets_cyclone_before_starting_anything(model):
    defaults, actions = resolved(launch_file(model))
    environment = {a.arg(0, "name"): a.arg(1, "value") for a in actions if a.kind == "SetEnvironmentVariable"}
    assert environment["RMW_IMPLEMENTATION"] == "rmw_cyclonedds_cpp"
    assert environment["CYCLONEDDS_URI"] == LC("cyclonedds_uri")
    assert defaults["cyclonedds_uri"] == f"file://{LAUNCH / 'cyclonedds_loopback.xml'}"
    assert environment["ROS_DOMAIN_ID"] == LC("ros_domain_id")
    config = load_bridge_config(bridge_path(model))
    assert int(defaults["ros_domain_id"]) == Ros2Options(**config.options).dds.domain_id
    # the environment is set before the first process starts (processes take it when they start)
    kinds = [a.kind for a in actions]
    first_process = min(kinds.index(kind) for kind in ("IncludeLaunchDescription", "Node") if kind in kinds)
    assert max(i for i, a in enumerate(actions) if a.kind == "SetEnvironmentVariable") < first_process


@pytest.mark.parametrize("model", CELLS)
def test_launch_file_brings_up_franka_ros2_with_our_controllers(model):
    _, actions = resolved(launch_file(model))
    (franka,) = [a for a in actions if a.kind == "IncludeLaunchDescription"]
    path = include_source(franka)
    assert path.kind == "PathJoinSubstitution"
    assert path.args[0] == [Built("FindPackageShare", ("franka_bringup",), {}), "launch", "franka.launch.py"]
    passed = dict(franka.kwargs["launch_arguments"])
    for name in ("robot_ip", "robot_type", "use_fake_hardware", "fake_sensor_commands", "controllers_yaml"):
        assert passed[name] == LC(name)


def spawner(actions: list[Built]) -> Built:
    (node,) = [a for a in actions if a.kind == "Node"]
    assert (node.kwargs["package"], node.kwargs["executable"]) == ("controller_manager", "spawner")
    return node


@pytest.mark.parametrize("model", CELLS)
def test_launch_file_spawns_the_bridges_controller_then_starts_the_bridge(model):
    _, actions = resolved(launch_file(model))
    node = spawner(actions)
    assert node.kwargs["arguments"][0] == DEFAULT_CONTROLLER
    assert "--inactive" not in node.kwargs["arguments"]
    (handler,) = [a for a in actions if a.kind == "RegisterEventHandler"]
    on_exit = handler.args[0]
    assert on_exit.kind == "OnProcessExit" and on_exit.kwargs["target_action"] is node
    (bridge,) = on_exit.kwargs["on_exit"](types.SimpleNamespace(returncode=0), None)
    assert bridge.kind == "ExecuteProcess"
    assert bridge.kwargs["cmd"] == [LC("pandalab"), "bridge", "serve", "--config", LC("bridge_config")]
    assert bridge.kwargs["condition"] == Built("IfCondition", (LC("start_bridge"),), {})
    failed = on_exit.kwargs["on_exit"](types.SimpleNamespace(returncode=1), None)
    assert [a.kind for a in failed] == ["LogInfo"], "no bridge when the controller did not come up"


# ---- controllers YAML --------------------------------------------------------------------------
class UniqueKeyLoader(yaml.SafeLoader):
    """YAML without silently dropped repeated keys (ROS merges them, PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"repeated keys {repeated}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def controllers(model: str) -> dict[str, Any]:
    """The node parameters of the controllers YAML (under franka's namespace-agnostic "/**")."""
    data = yaml.load(controllers_path(model).read_text(), Loader=UniqueKeyLoader)
    assert set(data) == {"/**"}
    return data["/**"]


@pytest.mark.parametrize("model", CELLS)
def test_controllers_yaml_declares_the_bridges_velocity_controller(model):
    nodes = controllers(model)
    manager = nodes["controller_manager"]["ros__parameters"]
    assert manager["update_rate"] == 1000
    declared_types = {name: value["type"] for name, value in manager.items() if isinstance(value, dict)}
    assert declared_types == {
        DEFAULT_CONTROLLER: VELOCITY_CONTROLLER,
        # franka.launch.py spawns these two itself from the file it is given
        "joint_state_broadcaster": "joint_state_broadcaster/JointStateBroadcaster",
        "franka_robot_state_broadcaster": "franka_robot_state_broadcaster/FrankaRobotStateBroadcaster",
    }
    # every controller given parameters is one the controller manager declares
    assert set(nodes) - {"controller_manager"} <= set(declared_types)
    assert nodes["franka_robot_state_broadcaster"]["ros__parameters"]["robot_type"] == CELLS[model]


@pytest.mark.parametrize("model", CELLS)
def test_controller_joints_are_the_arms_joints_in_order(model):
    joints = controllers(model)[DEFAULT_CONTROLLER]["ros__parameters"]["joints"]
    assert joints == [f"{CELLS[model]}_joint{i}" for i in range(1, 8)], "franka_ros2's <robot_type>_jointN"
    config = load_bridge_config(bridge_path(model))
    arm = Ros2Arm(config.options, robot_model=config.robot_model)
    assert list(arm.joint_names) == joints, "the bridge publishes velocities in the controller's order"
    assert list(arm.finger_names) == [f"{CELLS[model]}_finger_joint{i}" for i in (1, 2)]


def test_fr3_controller_joints_are_the_ros2_arms_defaults():
    joints = controllers("fr3")[DEFAULT_CONTROLLER]["ros__parameters"]["joints"]
    assert list(Ros2Arm({}, robot_model="fr3").joint_names) == joints


# ---- bridge configs ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", CELLS)
def test_bridge_config_drives_the_controller_with_the_ros2_arm(model):
    config = load_bridge_config(bridge_path(model))
    assert (config.arm, config.robot_model) == ("ros2", model)
    options = Ros2Options(**config.options)
    assert options.controller == DEFAULT_CONTROLLER
    assert options.controller in controllers(model)["controller_manager"]["ros__parameters"]
    assert options.commands_topic == f"/{DEFAULT_CONTROLLER}/commands"
    assert options.joint_states_topic == FRANKA_JOINT_STATES
    assert options.error_recovery_action == "/action_server/error_recovery"
    assert config.address.startswith("tcp://127.0.0.1:"), "loopback unless the cell says otherwise"


def canonical(xml_text: str) -> tuple:
    """An XML document without comments, whitespace or attribute order."""

    def walk(element: ElementTree.Element) -> tuple:
        return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(), [walk(c) for c in element])

    return walk(ElementTree.fromstring(xml_text.encode()))


@pytest.mark.parametrize("model", CELLS)
def test_cyclone_xml_of_the_ros_side_is_the_bridges_dds_settings(model):
    dds = Ros2Options(**load_bridge_config(bridge_path(model)).options).dds
    assert (dds.interface, dds.peers, dds.multicast, dds.config_file) == ("lo", ("127.0.0.1",), False, None)
    ros_side = (LAUNCH / "cyclonedds_loopback.xml").read_text()
    assert canonical(ros_side) == canonical(dds.xml())
    # and the comparison sees a difference
    assert canonical(ros_side) != canonical(CycloneOptions(interface="lo", peers=("127.0.0.1",)).xml())
