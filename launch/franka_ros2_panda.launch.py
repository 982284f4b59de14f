"""pandalab on a franka_ros2 Panda (FER), robot PC side: launch/franka_ros2_fr3.launch.py with the Panda's names.

UNTESTED against a live ROS 2 system: no ROS 2 can run where pandalab is developed.
tests/bridge/test_launch_files.py only parses this file and checks its names.

Current franka_ros2 (>= 2.2, ROS 2 Humble) calls the Panda `fer`: robot_type:=fer, joints
fer_joint1..7 (franka_description's robots/fer), hence launch/franka_ros2_controllers_panda.yaml and
the explicit joint_names of configs/bridge_ros2_panda.yaml (pandalab's robot model stays `panda`).

A REAL Panda is not expected to run this way: franka_ros2 >= 2.2 needs libfranka >= 0.20, which
drives FR3 systems (>= 5.9) only, while a Panda (system 4.x) needs libfranka < 0.10, whose
franka_ros2 offered no velocity command interface.  Use it with franka_ros2's fake hardware to check
the wiring, and the franky backend for a real Panda (configs/hardware_panda.yaml):

    ros2 launch /opt/pandalab/launch/franka_ros2_panda.launch.py use_fake_hardware:=true

Every argument of launch/franka_ros2_fr3.launch.py applies (robot_ip, load_gripper, start_bridge, ...).
"""

# ruff: noqa: I001  (ruff takes `launch`, ROS 2's package, for this repository's launch/ folder)
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)

ROBOT_TYPE = "fer"
"""franka_ros2's robot_type for the Panda: its joints are fer_joint1..7."""
CONTROLLERS_YAML = os.path.join(HERE, "franka_ros2_controllers_panda.yaml")
BRIDGE_CONFIG = os.path.join(CHECKOUT, "configs", "bridge_ros2_panda.yaml")
FR3_LAUNCH = os.path.join(HERE, "franka_ros2_fr3.launch.py")
"""The launch file that does the work (middleware, franka_ros2, the controller, the bridge)."""


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("robot_type", default_value=ROBOT_TYPE, description="franka_ros2's robot type"),
        DeclareLaunchArgument(
            "controllers_yaml", default_value=CONTROLLERS_YAML, description="ros2_control controllers (with ours)"
        ),
        DeclareLaunchArgument("bridge_config", default_value=BRIDGE_CONFIG, description="Bridge config (arm: ros2)"),
    ]
    fr3_launch = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(FR3_LAUNCH),
        launch_arguments={
            name: LaunchConfiguration(name) for name in ("robot_type", "controllers_yaml", "bridge_config")
        }.items(),
    )
    return LaunchDescription([*arguments, fr3_launch])
