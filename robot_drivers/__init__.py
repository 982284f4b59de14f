"""Robot drivers: the `RobotDriver` interface, its data types, and the registry of backends."""

from robot_drivers.base import DriverFault, FaultReason, RobotDriver
from robot_drivers.registry import backend_names, create_driver, driver_class
from robot_drivers.types import NUM_JOINTS, ActionSpace, Command, RobotState

__all__ = [
    "NUM_JOINTS",
    "ActionSpace",
    "Command",
    "DriverFault",
    "FaultReason",
    "RobotDriver",
    "RobotState",
    "backend_names",
    "create_driver",
    "driver_class",
]
