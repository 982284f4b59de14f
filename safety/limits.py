"""Declarative safety limits of the Panda: the single source of every number the filter enforces.

Defaults come from Franka's published limits for the Panda
(https://frankaemika.github.io/docs/control_parameters.html, "Limits for Panda"): joint position
limits, maximum joint velocities (2.175 rad/s for joints 1-4, 2.61 rad/s for joints 5-7) and
maximum joint accelerations (15, 7.5, 10, 12.5, 15, 20, 20 rad/s^2).  What the filter actually
enforces is tighter:

- joint positions: the published limits shrunk by `joint_margin` on both sides;
- joint velocities: the operating cap `velocity_cap`, 0.5 rad/s by default, the clip range of
  seed 001's joint velocity actions;
- joint accelerations: `acceleration_limit`, by default half of Franka's published maximum per
  joint.  Half leaves headroom for the joint controller's tracking error, for gravity and payload,
  and keeps the braking that the filter plans with well inside what the robot can deliver (Franka's
  own reflexes trip on commands near the maximum);
- the tool tip: inside the workspace box and at least `min_tip_height` above the table; the other
  points of the arm the filter watches (elbow, forearm, wrist, flange, hand) at least
  `min_body_height` above the table; the tool tip no faster than `max_tip_speed`.

All positions are in the robot base frame (x forward over the table, z up), in metres.  The
defaults match the simulated scene (table top at z = -0.112 m, table over x 0.16..0.96 m,
y -0.4..0.4 m); on hardware measure the table and set `table_height` and the box.

A configuration is rejected as a whole before the robot moves, with every wrong field named:
unknown keys (``extra="forbid"``), reversed limits, a cap above the hardware limit, a margin that
leaves no room to move.
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from safety.strict_model import StrictModel

Vec7 = tuple[float, float, float, float, float, float, float]
Vec3 = tuple[float, float, float]

FRANKA_Q_MIN: Vec7 = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
"""Franka's published lower joint position limits of the Panda, rad."""
FRANKA_Q_MAX: Vec7 = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
"""Franka's published upper joint position limits of the Panda, rad."""
FRANKA_DQ_MAX: Vec7 = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
"""Franka's published maximum joint velocities of the Panda, rad/s."""
FRANKA_DDQ_MAX: Vec7 = (15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0)
"""Franka's published maximum joint accelerations of the Panda, rad/s^2."""
FRANKA_DDDQ_MAX: Vec7 = (7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0)
"""Franka's published maximum joint jerks of the Panda, rad/s^3
(https://frankaemika.github.io/docs/control_parameters.html)."""
FRANKA_COLLISION_TORQUE_THRESHOLDS_NM: Vec7 = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)
"""External joint torque at which a Franka's collision reflex stops the arm, N m per joint: the
values libfranka's examples set with ``setCollisionBehavior`` (``setDefaultBehavior``)."""
FRANKA_COLLISION_FORCE_THRESHOLDS: tuple[float, float, float, float, float, float] = (
    20.0,
    20.0,
    20.0,
    25.0,
    25.0,
    25.0,
)
"""External wrench at the tool at which the reflex stops the arm: force x, y, z in N, then torque x,
y, z in N m (libfranka's examples, as above)."""
DEFAULT_ACCELERATION_LIMIT: Vec7 = tuple(0.5 * a for a in FRANKA_DDQ_MAX)  # type: ignore[assignment]
"""Operating joint acceleration limit, rad/s^2: half of Franka's published maximum."""

SIM_TABLE_TOP_Z = -0.112
"""Table top height of the simulated scene in the base frame, m (sim/scene.py TABLE_TOP_Z; copied
because safety/ imports nothing of ours)."""


class SafetyLimits(StrictModel):
    """Every limit the safety layer enforces; see the module docstring for where the defaults
    come from.  Arrays derived from the fields (operating joint limits, the tool-tip box) are
    available as properties."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    q_min: Vec7 = Field(FRANKA_Q_MIN, description="Hardware lower joint position limits, rad (Franka: Panda).")
    q_max: Vec7 = Field(FRANKA_Q_MAX, description="Hardware upper joint position limits, rad (Franka: Panda).")
    joint_margin: float = Field(
        0.1, ge=0.0, le=0.5, description="Distance kept from each hardware joint position limit, rad."
    )
    velocity_max: Vec7 = Field(FRANKA_DQ_MAX, description="Hardware joint velocity limits, rad/s (Franka: Panda).")
    velocity_cap: float = Field(
        0.5, gt=0.0, description="Operating joint velocity cap, rad/s, every joint (seed 001: 0.5 rad/s)."
    )
    acceleration_max: Vec7 = Field(
        FRANKA_DDQ_MAX, description="Hardware joint acceleration limits, rad/s^2 (Franka: Panda)."
    )
    jerk_max: Vec7 = Field(FRANKA_DDDQ_MAX, description="Hardware joint jerk limits, rad/s^3 (Franka: Panda).")
    acceleration_limit: Vec7 = Field(
        DEFAULT_ACCELERATION_LIMIT,
        description="Operating joint acceleration limit, rad/s^2: commands change by at most this times the "
        "control period per step, and all braking is planned with it (default: half of Franka's maximum).",
    )
    workspace_min: Vec3 = Field(
        (0.25, -0.35, -0.112), description="Lower corner (x, y, z) of the tool-tip workspace box, base frame, m."
    )
    workspace_max: Vec3 = Field(
        (0.80, 0.35, 0.50), description="Upper corner (x, y, z) of the tool-tip workspace box, base frame, m."
    )
    table_height: float = Field(
        SIM_TABLE_TOP_Z, description="Height of the table top in the base frame, m (simulated scene: -0.112)."
    )
    min_tip_height: float = Field(
        0.02, ge=0.0, le=0.5, description="Smallest height of the tool tip above the table top, m."
    )
    min_body_height: float = Field(
        0.05,
        ge=0.0,
        le=0.5,
        description="Smallest height above the table top of the arm's other watched points (elbow, forearm, "
        "wrist, flange, middle and both ends of the hand), m: roughly the links' radius.",
    )
    min_base_distance: float = Field(
        0.2,
        ge=0.0,
        le=0.5,
        description="Smallest horizontal distance of the forearm, wrist, flange and hand from the vertical axis "
        "through the base, m: keeps the arm from folding back onto its base (self-collision with links 0-1).",
    )
    collision_margin: float = Field(
        0.008,
        ge=0.0,
        le=0.1,
        description="Smallest gap, m, kept between the capsules of non-adjacent links and between each moving "
        "link's capsule and the table top (safety/collision_model.py). The filter plans this plus "
        "tracking_margin_position; the capsules contain each link's collision geometry with 5 mm to spare, so "
        "the arm is planned to stop at least 2.8 cm from the simulators' collision shapes and is never closer than "
        "1.3 cm. At most 0.009 with the default tracking margin: turning joint 7 through its range at the home "
        "pose brings the hand's and link 5's capsules to 2.47 cm.",
    )
    tracking_margin_joint: float = Field(
        0.03,
        ge=0.0,
        le=0.1,
        description="Extra distance, rad, the filter keeps from the operating joint limits for the joint servo's "
        "tracking error (measured in MuJoCo: up to 16 mrad of overshoot at joint 6).",
    )
    tracking_margin_position: float = Field(
        0.015,
        ge=0.0,
        le=0.05,
        description="Extra distance, m, the filter keeps inside the box and above the table heights for the joint "
        "servo's tracking error (measured in MuJoCo: up to 8 mm of overshoot at 0.5 rad/s).",
    )
    max_tip_speed: float = Field(1.0, gt=0.0, le=3.0, description="Largest tool-tip speed, m/s.")
    tip_delta_max: float = Field(
        0.02, gt=0.0, le=0.1, description="Largest tool-tip displacement per control step per axis, m (tip_delta)."
    )
    reset_tolerance: float = Field(
        0.002,
        gt=0.0,
        le=0.05,
        description="A planned reset is done once every joint is this close to home, rad, and slower than rest_speed.",
    )
    rest_speed: float = Field(
        0.01,
        gt=0.0,
        le=0.2,
        description="Joint speed below which the arm counts as at rest at the end of a planned reset, rad/s.",
    )

    # ---- validators: each names the offending field (pydantic puts it in the error's loc) -----
    @field_validator("q_max")
    @classmethod
    def _q_max_above_q_min(cls, q_max: Vec7, info: ValidationInfo) -> Vec7:
        q_min = info.data.get("q_min")
        if q_min is not None:
            bad = [i + 1 for i in range(7) if not q_min[i] < q_max[i]]
            if bad:
                raise ValueError(f"q_max must exceed q_min for every joint; reversed or equal at joints {bad}")
        return q_max

    @field_validator("joint_margin")
    @classmethod
    def _margin_leaves_room(cls, margin: float, info: ValidationInfo) -> float:
        q_min, q_max = info.data.get("q_min"), info.data.get("q_max")
        if q_min is not None and q_max is not None:
            bad = [i + 1 for i in range(7) if q_max[i] - q_min[i] <= 2 * margin + 0.05]
            if bad:
                raise ValueError(
                    f"joint_margin {margin} rad leaves less than 0.05 rad of travel at joints {bad}; "
                    "the margin must be well under half of each joint's range"
                )
        return margin

    @field_validator("velocity_max", "acceleration_max", "jerk_max", "acceleration_limit")
    @classmethod
    def _positive(cls, values: Vec7, info: ValidationInfo) -> Vec7:
        bad = [i + 1 for i, v in enumerate(values) if not v > 0]
        if bad:
            raise ValueError(f"{info.field_name} must be positive; not at joints {bad}")
        return values

    @field_validator("velocity_cap")
    @classmethod
    def _cap_below_hardware(cls, cap: float, info: ValidationInfo) -> float:
        hardware = info.data.get("velocity_max")
        if hardware is not None and cap > min(hardware):
            raise ValueError(f"velocity_cap {cap} rad/s exceeds the hardware velocity limit {min(hardware)} rad/s")
        return cap

    @field_validator("acceleration_limit")
    @classmethod
    def _acceleration_below_hardware(cls, limit: Vec7, info: ValidationInfo) -> Vec7:
        hardware = info.data.get("acceleration_max")
        if hardware is not None:
            bad = [i + 1 for i in range(7) if limit[i] > hardware[i]]
            if bad:
                raise ValueError(f"acceleration_limit exceeds the hardware acceleration limit at joints {bad}")
        return limit

    @field_validator("workspace_max")
    @classmethod
    def _box_not_reversed(cls, upper: Vec3, info: ValidationInfo) -> Vec3:
        lower = info.data.get("workspace_min")
        if lower is not None:
            bad = [axis for axis, lo, hi in zip("xyz", lower, upper, strict=True) if not lo < hi]
            if bad:
                raise ValueError(f"workspace_max must exceed workspace_min on every axis; reversed on {bad}")
        return upper

    @field_validator("min_tip_height")
    @classmethod
    def _floor_below_box_top(cls, height: float, info: ValidationInfo) -> float:
        upper, table = info.data.get("workspace_max"), info.data.get("table_height")
        if upper is not None and table is not None and table + height >= upper[2]:
            raise ValueError(
                f"min_tip_height puts the tool-tip floor ({table + height} m) at or above "
                f"workspace_max z ({upper[2]} m)"
            )
        return height

    # ---- derived arrays ---------------------------------------------------------------------
    @property
    def q_lower(self) -> np.ndarray:
        """Operating lower joint limits: hardware limits plus the margin, rad, (7,)."""
        return np.asarray(self.q_min) + self.joint_margin

    @property
    def q_upper(self) -> np.ndarray:
        """Operating upper joint limits: hardware limits minus the margin, rad, (7,)."""
        return np.asarray(self.q_max) - self.joint_margin

    @property
    def velocity_caps(self) -> np.ndarray:
        """Operating joint velocity cap per joint, rad/s, (7,)."""
        return np.minimum(np.full(7, self.velocity_cap), np.asarray(self.velocity_max))

    @property
    def accelerations(self) -> np.ndarray:
        """Operating joint acceleration limit per joint, rad/s^2, (7,)."""
        return np.asarray(self.acceleration_limit, dtype=np.float64)

    @property
    def jerks(self) -> np.ndarray:
        """Operating joint jerk limit per joint, rad/s^3, (7,): Franka's published jerks scaled by
        the same fraction of the published accelerations as `accelerations` (planned motions:
        `safety.reset`)."""
        return np.asarray(self.jerk_max) * self.accelerations / np.asarray(self.acceleration_max)

    @property
    def tip_lower(self) -> np.ndarray:
        """Lower corner of the region the tool tip must stay in: the box, raised to the tip floor
        (table height + min_tip_height) where that is higher, m, (3,)."""
        lower = np.asarray(self.workspace_min, dtype=np.float64).copy()
        lower[2] = max(lower[2], self.table_height + self.min_tip_height)
        return lower

    @property
    def tip_upper(self) -> np.ndarray:
        """Upper corner of the tool-tip region, m, (3,)."""
        return np.asarray(self.workspace_max, dtype=np.float64)

    @property
    def body_floor(self) -> float:
        """Lowest height the arm's other watched points may reach, m (table + min_body_height)."""
        return self.table_height + self.min_body_height
