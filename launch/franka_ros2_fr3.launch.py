"""pandalab on a franka_ros2 cell, robot PC side: franka_ros2 + a joint velocity controller + the bridge.

UNTESTED against a live ROS 2 system: no ROS 2 can run where pandalab is developed.
tests/bridge/test_launch_files.py only parses this file and checks that the names it uses match the
bridge's ros2 arm, the controllers YAML and the bridge config.

Written for franka_ros2 >= 2.2 on ROS 2 Humble (franka_bringup's franka.launch.py with its
`robot_type` and `controllers_yaml` arguments), with ros2_controllers and rmw_cyclonedds installed
(ros-humble-velocity-controllers, ros-humble-rmw-cyclonedds-cpp).  On the robot PC:

    ros2 launch /opt/pandalab/launch/franka_ros2_fr3.launch.py robot_ip:=172.16.0.2

What it starts, in order:
1. the middleware: rmw_cyclonedds, on loopback only (CYCLONEDDS_URI, launch/cyclonedds_loopback.xml),
   domain ROS_DOMAIN_ID: the same settings as the bridge config's options.dds;
2. franka_ros2's bringup (franka.launch.py) with our controllers YAML: ros2_control at 1 kHz,
   joint_state_broadcaster (-> /franka/joint_states), franka_robot_state_broadcaster, the gripper
   node if load_gripper:=true;
3. the `joint_velocity_controller` (velocity_controllers/JointGroupVelocityController), loaded and
   activated by controller_manager's spawner: the robot switches to joint velocity control;
4. once that spawner has succeeded, `pandalab bridge serve` with the ros2 backend (start_bridge:=false
   when the bridge runs under systemd instead: launch/pandalab-bridge.service).

Safety: the velocity controller holds its last command and has no timeout of its own; the bridge's
watchdog brakes the arm when the collector stops commanding.  Ctrl-C ends everything at once: the
bridge brakes to rest on SIGINT while ros2_control stops and libfranka stops the robot.
"""

# ruff: noqa: I001  (ruff takes `launch`, ROS 2's package, for this repository's launch/ folder)
import os

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    LogInfo,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
"""The pandalab checkout this file is in (configs/, .venv/)."""

ROBOT_TYPE = "fr3"
"""franka_ros2's robot_type: its joints are <robot_type>_joint1..7."""
CONTROLLER = "joint_velocity_controller"
"""The bridge's controller (robot_drivers/bridge/arm_ros2.py, DEFAULT_CONTROLLER)."""
CONTROLLERS_YAML = os.path.join(HERE, "franka_ros2_controllers_fr3.yaml")
BRIDGE_CONFIG = os.path.join(CHECKOUT, "configs", "bridge_ros2_fr3.yaml")
CYCLONE_XML = os.path.join(HERE, "cyclonedds_loopback.xml")
ROS_DOMAIN_ID = "0"
"""= the bridge config's options.dds.domain_id."""


def generate_launch_description():
    arg = LaunchConfiguration
    arguments = [
        # -- the robot (passed on to franka_ros2's franka.launch.py) --
        DeclareLaunchArgument("robot_ip", default_value="172.16.0.2", description="The Franka's FCI address: SET"),
        DeclareLaunchArgument("robot_type", default_value=ROBOT_TYPE, description="franka_ros2's robot type"),
        DeclareLaunchArgument("use_fake_hardware", default_value="false", description="ros2_control mock hardware"),
        DeclareLaunchArgument(
            "fake_sensor_commands", default_value="false", description="With use_fake_hardware: fake sensor commands"
        ),
        DeclareLaunchArgument("load_gripper", default_value="false", description="Start the Franka Hand's node"),
        DeclareLaunchArgument(
            "controllers_yaml", default_value=CONTROLLERS_YAML, description="ros2_control controllers (with ours)"
        ),
        # -- the middleware: the bridge config's options.dds must describe the same --
        DeclareLaunchArgument(
            "cyclonedds_uri", default_value="file://" + CYCLONE_XML, description="Cyclone DDS configuration"
        ),
        DeclareLaunchArgument("ros_domain_id", default_value=ROS_DOMAIN_ID, description="ROS_DOMAIN_ID"),
        # -- the pandalab bridge --
        DeclareLaunchArgument("start_bridge", default_value="true", description="Start pandalab bridge serve"),
        DeclareLaunchArgument("bridge_config", default_value=BRIDGE_CONFIG, description="Bridge config (arm: ros2)"),
        DeclareLaunchArgument(
            "pandalab",
            default_value=os.path.join(CHECKOUT, ".venv", "bin", "pandalab"),
            description="The pandalab command",
        ),
    ]

    # Everything started below inherits these (the bridge reads none of them: it speaks Cyclone
    # directly, with its options.dds; ROS nodes need the matching rmw and settings).
    middleware = [
        SetEnvironmentVariable("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp"),
        SetEnvironmentVariable("CYCLONEDDS_URI", arg("cyclonedds_uri")),
        SetEnvironmentVariable("ROS_DOMAIN_ID", arg("ros_domain_id")),
    ]

    franka = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("franka_bringup"), "launch", "franka.launch.py"])
        ),
        launch_arguments={
            name: arg(name)
            for name in (
                "robot_ip",
                "robot_type",
                "use_fake_hardware",
                "fake_sensor_commands",
                "load_gripper",
                "controllers_yaml",
            )
        }.items(),
    )

    # Load, configure and activate the velocity controller (its type and joints: controllers_yaml).
    velocity_controller = Node(
        package="controller_manager",
        executable="spawner",
        arguments=[CONTROLLER, "--controller-manager-timeout", "60"],
        output="screen",
    )

    bridge = ExecuteProcess(
        cmd=[arg("pandalab"), "bridge", "serve", "--config", arg("bridge_config")],
        output="screen",
        sigterm_timeout="30",  # the bridge brakes the arm to rest before it exits
        condition=IfCondition(arg("start_bridge")),
    )

    def after_spawner(event, context):
        if event.returncode != 0:
            return [LogInfo(msg=f"spawner of {CONTROLLER} failed (exit {event.returncode}): bridge not started")]
        return [bridge]

    start_bridge = RegisterEventHandler(OnProcessExit(target_action=velocity_controller, on_exit=after_spawner))

    return LaunchDescription([*arguments, *middleware, franka, velocity_controller, start_bridge])
