"""Robot backends by name.

A new backend is one module plus one line in `DRIVER_BACKENDS`.  Modules are imported only when
a backend is created, so importing this registry never loads a simulator or a transport.
"""

from __future__ import annotations

import importlib
from typing import Any

from robot_drivers.base import RobotDriver

DRIVER_BACKENDS: dict[str, str] = {
    "robosuite": "sim.robosuite_backend:RobosuitePanda",
    "pybullet": "sim.pybullet_backend:PyBulletPanda",
    "bridge": "robot_drivers.bridge.client:BridgeDriver",
}
"""Backend name -> ``module:ClassName`` of its `RobotDriver` implementation."""
SIMULATED_BACKENDS: tuple[str, ...] = ("robosuite", "pybullet")
"""The backends that are simulators (privileged state, no real-time pacing by default, teleported
resets): the one list of them."""


def backend_names() -> list[str]:
    return sorted(DRIVER_BACKENDS)


def driver_class(name: str) -> type[RobotDriver]:
    """The driver class registered as ``name``; `KeyError` naming the known backends if unknown."""
    try:
        target = DRIVER_BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown robot backend {name!r}; known: {', '.join(backend_names())}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_driver(name: str, config: Any = None) -> RobotDriver:
    """Construct (but do not connect) the backend ``name`` with its ``config``."""
    return driver_class(name)(config)
