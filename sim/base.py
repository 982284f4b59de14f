"""What both simulated backends share: the control period, the two action spaces, the joint servo
(command ramp, position hold), state assembly.

A backend subclasses `SimPandaDriver` and implements the physics hooks (the abstract methods starting
with an underscore); everything the rest of the system sees
(`RobotDriver`'s methods) is implemented once, here, so the backends cannot drift apart.

Joint servo (both backends), modelled on a real Panda in joint velocity control: libfranka's rate
limiter limits how fast the commanded velocity changes, then the robot's controller tracks the
limited command and its integral.  For each command (one control period; one inverse-kinematics
interval under tip_delta control) and then per physics substep (PyBullet 1/240 s, MuJoCo 2 ms):

- **Position hold**, once per command: ``q_ref`` integrates the ramped command (the real
  controller's desired position ``q_d``), and the command gets a correction ``(q_ref - q) /
  max(HOLD_TIME_CONSTANT_S, duration)``, which brings the arm back onto ``q_ref`` by the end of a
  20 Hz period (dead-beat).  Chosen over more holding torque: a velocity servo has no position
  feedback, so under gravity or a steady contact force it tracks zero with a small constant
  velocity error that integrates into creep (PyBullet's velocity motors crept 47 mrad in 10 s at
  joint 4 with the arm stretched out, and `stop` never saw rest), whatever its torque.  ``q_ref``
  is kept within `HOLD_MAX_ERROR_RAD` of ``q`` (a blocked arm does not wind up), so the correction
  never exceeds 0.02 rad/s; `reset` and the end of `stop` re-anchor it on the measured ``q``.
- **Command ramp** (libfranka's rate limiter), per substep: the servo target moves toward command
  plus correction, each joint separately, with acceleration at most `JOINT_ACCELERATION_LIMIT`
  (Franka's published 15, 7.5, 10, 12.5, 15, 20, 20 rad/s^2) and jerk at most `FRANKA_DDDQ_MAX`
  (its change per substep changes by at most ``j * timestep**2``; with ``j = 500 a`` for every
  joint that only binds at MuJoCo's 2 ms, where reversing the acceleration takes two substeps),
  clipped to Franka's maximum speeds `JOINT_SPEED_HARD_LIMIT`.  Its state persists across control
  periods; `reset` zeroes it.
- **What the engine is asked for**: the servo target, but never more than one substep of the
  published acceleration away from the joint's *measured* velocity, so a joint that fell behind
  (torque saturated, blocked, pushed) catches up no faster than its limit instead of jumping to
  its target.  The backend's `_command_servo` takes the joints there within the substep:
  PyBullet's velocity motors do (a constraint solved with the contacts, within the torque limits);
  MuJoCo's velocity actuators get a computed-torque feedforward (sim/robosuite_backend.py).

**Collision reflex** (a real Franka's, robot_drivers/collision_reflex.py): after every substep the
backend's `_external_joint_torques` (the joint torques of the contact forces its engine applied to
the arm) and the tool wrench they imply are checked against the configured thresholds.  When one
is exceeded the servo's goal becomes zero from the next substep on (the arm brakes within the
published acceleration and jerk, as above), `reflex` says why, the `send` in progress finishes its
period and raises `DriverFault` (``collision_reflex``), and later sends are refused until `reset`
(the simulated ``automaticErrorRecovery``).  Cost: every substep is stepped on its own (MuJoCo's
control steps without a camera went from 1061 to 846 per second; nothing measurable with one).

Cost: while the servo target moves the physics is stepped one substep at a time (joint state
read, target set; about 15 small numpy operations, plus MuJoCo's feedforward); once it has reached
the command, the rest of the period is one `_step_physics` call.  Control steps per second without
a camera fell by 5-17% for zero or smooth commands and by about half for a new random command every
period (ramping all period long); with an 84x84 camera image per step, rendering dominates and no
change was measured.

Measured on the engines' own joint state, per substep (tests/sim/test_servo_limits.py): joint
accelerations within 2% of the published limits for velocity steps, reversals, random commands
and the tip_delta controller in free space (contacts are impulsive: pressing the cube into the
table gives about 5 times the limits in MuJoCo, up to 36 in PyBullet), joint speeds never above
the published maxima (in contact too), zero-command drift under 0.03 mrad in 10 s, `stop` from
the 0.5 rad/s cap at rest within 0.1-0.15 s.  The price is lag behind the integrator model
``q += v * T`` the safety filter predicts with: the ramp realises each command change over
``dv / a`` instead of at once.  Braking from 0.5 rad/s on every joint at home, the tool tip comes to
rest 9-12 mm beyond that model at the filter's operating deceleration and 16-23 mm at the published
one (its emergency stop); see the test.

``tip_delta`` actions (seed 003: Cartesian displacement per step, orientation held pointing down)
are turned into joint velocity commands by resolved-rate control with damped least squares on the
tool tip's Jacobian, re-solved several times per control period, towards a tool-tip target that
accumulates the commanded displacements (kept within `resolved_rate.TIP_TARGET_LEAD_M` of the tool tip, so a
blocked arm does not wind up); no joint is asked for a speed it could not brake from within the
joint motion left (`IK_BRAKING_ACCELERATION`).  Those commands go through the same ramp and hold,
so the arm runs behind fast tip_delta commands, and an approach at 2 cm per step overshoots its
goal by what the arm still owes (up to `resolved_rate.TIP_TARGET_LEAD_M`) unless its last steps are small.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from robot_drivers.base import DriverFault, FaultReason, RobotDriver
from robot_drivers.collision_reflex import reflex_reason
from robot_drivers.types import NUM_JOINTS, ActionSpace, Command, RobotState
from safety import resolved_rate
from safety.limits import FRANKA_DDDQ_MAX, FRANKA_DDQ_MAX, FRANKA_DQ_MAX
from sim.config import CameraConfig, SimConfig
from sim.scene import CUBE_START_POS, CUBE_START_QUAT, DEFAULT_HOME_Q, top_face_index

IK_SOLVE_INTERVAL_S = 0.01
"""Time between two inverse-kinematics solves inside one control period, s."""
JOINT_SPEED_HARD_LIMIT = np.array(FRANKA_DQ_MAX)
"""Franka's own maximum joint speeds, rad/s: the servo never asks for more."""
IK_SPEED_LIMIT = 0.9 * JOINT_SPEED_HARD_LIMIT
"""Largest joint speeds the resolved-rate controller asks for, rad/s: 10% below Franka's maximum,
room for contact forces (an arm the tip_delta controller pressed into the cube and table ran 1%
above a command at the maximum in MuJoCo)."""
JOINT_ACCELERATION_LIMIT = np.array(FRANKA_DDQ_MAX)
"""Franka's published maximum joint accelerations, rad/s^2: the command ramp's rate."""
IK_BRAKING_ACCELERATION = 0.75 * JOINT_ACCELERATION_LIMIT
"""Deceleration, rad/s^2, the resolved-rate controller plans with: it asks for no joint speed it
could not brake from at this rate within the joint motion left to the tool-tip target (three
quarters of the ramp's rate: room for the 10 ms between solves; at half, the arm crawled behind
2 cm steps and could not push the cube in MuJoCo, at the full rate it overshot more)."""
HOLD_TIME_CONSTANT_S = 0.05
"""Shortest time over which the position hold brings the arm back onto the integrated command, s."""
HOLD_MAX_ERROR_RAD = 0.001
"""Largest distance of the hold's reference ``q_ref`` from the measured joint angle, rad; with
`HOLD_TIME_CONSTANT_S` it bounds the hold's velocity correction to 0.02 rad/s (PyBullet's creep
needs under 0.005 rad/s; a larger correction showed as velocity overshoot after every ramp)."""
AT_REST_SPEED = 1e-3
"""`stop` returns once every joint is slower than this, rad/s."""
STOP_TIMEOUT_S = 1.0
"""`stop` gives up waiting for rest after this much simulated time, s (from 2.61 rad/s the ramp
alone needs 0.35 s)."""


class SimPandaDriver(RobotDriver):
    """A simulated Panda in the seed-003 scene; subclasses provide the physics engine."""

    config_class = SimConfig
    """Options model; the collector validates a session's robot options with it before starting."""
    physics_timestep_s: float
    """Physics step, s; set by the subclass before `connect` returns."""
    servo_acceleration_fraction: float | np.ndarray = 1.0
    """Fraction of a substep's published acceleration the engine's servo is asked for at most (from
    the measured joint velocity); under 1 for an engine whose servo overshoots what it is asked."""

    def __init__(self, config: SimConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = SimConfig()
        elif isinstance(config, dict):
            config = SimConfig(**config)
        self.config = config
        self.action_space = config.action_space
        self.control_rate_hz = config.control_rate_hz
        self.rng = np.random.default_rng(config.seed)
        self._connected = False
        self._time_s = 0.0
        self._tip_target: resolved_rate.TipTarget | None = None
        self._zeros = np.zeros(NUM_JOINTS)
        self._servo_target = self._zeros
        """The servo target: command plus the hold's correction, rate-limited (libfranka's limiter
        does this to the command), rad/s."""
        self._target_change = self._zeros
        """The servo target's change over the last substep, rad/s (acceleration times timestep)."""
        self._ramp_reached = True
        """Whether the servo target has reached the last command (plus correction)."""
        self._q_ref = self._zeros
        """The position hold's reference: the integral of the ramped command, rad."""
        self.reflex: str | None = None
        """Why the collision reflex stopped the arm (one line), or None; until `reset` clears it,
        `send` refuses every command (a real arm in reflex mode waits for error recovery)."""

    # ---- RobotDriver -------------------------------------------------------------------------
    def connect(self) -> None:
        if self._connected:
            return
        self._build()
        self._connected = True
        self._ramp_step = JOINT_ACCELERATION_LIMIT * self.physics_timestep_s
        self._engine_step = self._ramp_step * self.servo_acceleration_fraction
        self._jerk_step = np.asarray(FRANKA_DDDQ_MAX) * self.physics_timestep_s**2
        # A change per substep within +-ramp_step changes by at most 2 * ramp_step from one substep
        # to the next: the jerk limit only binds where that exceeds jerk_step (timesteps under 4 ms).
        self._jerk_binds = bool(np.any(self._jerk_step < 2.0 * self._ramp_step))
        self.reset(DEFAULT_HOME_Q)

    def read_state(self, images: bool = True) -> RobotState:
        """The current state; ``images=False`` leaves the cameras out (the bridge's robot-side
        filter reads the state at every command and must not wait for a frame)."""
        self._require_connected()
        q, dq = self._joint_state()
        cube_pos, cube_quat = self._cube_pose()
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq)) and np.all(np.isfinite(cube_pos))):
            raise DriverFault(FaultReason.simulation_unstable, "the simulation produced non-finite state")
        images = {camera.name: self._render(camera) for camera in self.config.cameras} if images else {}
        return RobotState(
            time=self._time_s,
            q=q,
            dq=dq,
            tip_pos=self.tip_pose()[0],
            gripper_width=self._gripper_width(),
            images=images,
            image_ages_s=dict.fromkeys(images, 0.0),  # rendered now, on demand
            privileged={
                "cube_pos": cube_pos,
                "cube_quat": cube_quat,
                "cube_top_face": np.array(top_face_index(cube_quat), dtype=np.int64),
            },
        )

    def send(self, command: Command) -> None:
        self._require_connected()
        if not isinstance(command, Command):
            raise DriverFault(FaultReason.invalid_command, f"expected a Command, got {type(command).__name__}")
        if command.kind is not self.action_space:
            raise DriverFault(
                FaultReason.invalid_command,
                f"this driver takes {self.action_space.value} commands, got {command.kind.value}",
            )
        if not np.all(np.isfinite(command.values)):
            raise DriverFault(FaultReason.invalid_command, f"non-finite command values {command.values}")
        if self.reflex is not None:
            raise DriverFault(FaultReason.collision_reflex, f"{self.reflex}; the arm is stopped until a reset")
        if command.kind is ActionSpace.joint_velocity:
            self._advance_with_joint_velocity(command.values)
        else:
            self._advance_with_tip_delta(command.values)
        if self.reflex is not None:  # tripped during this period: the arm braked to a stop meanwhile
            raise DriverFault(FaultReason.collision_reflex, self.reflex)

    def idle(self) -> None:
        """Advance one control period commanding zero joint velocity: the arm brakes (within the
        published limits) and holds.  Allowed after a collision reflex, unlike `send`: a real arm's
        time goes on whatever its controller does (the bridge's free-running simulator)."""
        self._require_connected()
        self._advance_with_joint_velocity(np.zeros(NUM_JOINTS))

    def recover(self) -> None:
        """Clear a collision reflex where the arm stands (the simulated ``automaticErrorRecovery``);
        `send` takes commands again.  Nothing happens without one."""
        self._require_connected()
        self.reflex = None

    def stop(self) -> None:
        """Command zero joint velocity, period by period, until the arm is at rest.

        The command ramp brakes every joint at Franka's published accelerations (from the 0.5 rad/s
        cap joint 2 needs 67 ms: at rest after two or three control periods at 20 Hz, measured in
        tests/sim/test_servo_limits.py).  Once the ramp is at zero the hold is re-anchored where the
        arm is (it holds there, rather than pulling back to where the braking ramp's integral says
        it should be), and `stop` returns as soon as every joint is slower than `AT_REST_SPEED`;
        after `STOP_TIMEOUT_S` of simulated time it returns anyway (something keeps pushing the
        arm)."""
        self._require_connected()
        zero = np.zeros(NUM_JOINTS)
        anchored = False
        for _ in range(max(1, round(STOP_TIMEOUT_S * self.control_rate_hz))):
            self._advance_with_joint_velocity(zero)
            if not anchored and self._ramp_reached:
                self._anchor_hold()
                anchored = True
            if anchored and np.max(np.abs(self._joint_state()[1])) < AT_REST_SPEED:
                break
        self._tip_target = None

    def reset(self, home: np.ndarray | None = None) -> RobotState:
        """Put the arm at ``home`` (rad) at rest and the cube at its start pose, instantly.

        In simulation the arm is teleported; the safe joint-space move that hardware needs is
        planned by ``safety/`` and executed by the collector through the safety filter.
        """
        self._require_connected()
        home = DEFAULT_HOME_Q if home is None else np.asarray(home, dtype=np.float64)
        if home.shape != (NUM_JOINTS,) or not np.all(np.isfinite(home)):
            raise DriverFault(FaultReason.reset_failed, f"home must be 7 finite joint angles, got {home!r}")
        self._reset_scene(home.copy(), CUBE_START_POS.copy(), CUBE_START_QUAT.copy())
        self.reflex = None  # the simulated counterpart of libfranka's automaticErrorRecovery
        self._servo_target = self._target_change = self._zeros
        self._ramp_reached = True
        self._anchor_hold()
        self._time_s = 0.0
        self._tip_target = None
        return self.read_state()

    def close(self) -> None:
        if self._connected:
            self._close()
        self._connected = False

    # ---- extras used by tests and tools -----------------------------------------------------
    def tip_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool-tip position (m) and orientation (3x3 rotation matrix), base frame."""
        self._require_connected()
        return self._tip_pose()

    def place_cube(self, position: np.ndarray, quat_wxyz: np.ndarray, settle_s: float = 0.5) -> None:
        """Teleport the cube to a pose (base frame), at rest, then let physics run ``settle_s``
        seconds with the arm holding still."""
        self._require_connected()
        self._set_cube_pose(np.asarray(position, float), np.asarray(quat_wxyz, float))
        for _ in range(round(settle_s * self.control_rate_hz)):
            self._advance_with_joint_velocity(np.zeros(NUM_JOINTS))

    def arm_contacts(self) -> list[tuple[str, str]]:
        """Contacts of the arm (links and hand) at this instant, as (arm part, other) pairs where
        other is another arm part (self-collision), ``"table"`` or ``"cube"``.  Used by the
        collector to report self and table collisions as safety events (simulation only)."""
        self._require_connected()
        return self._arm_contacts()

    # ---- control ----------------------------------------------------------------------------
    def _substeps_per_period(self) -> int:
        return max(1, round(self.control_period_s / self.physics_timestep_s))

    def _advance_with_joint_velocity(self, joint_velocity: np.ndarray) -> None:
        n = self._substeps_per_period()
        self._run_servo(np.asarray(joint_velocity, dtype=np.float64), n)
        self._time_s += n * self.physics_timestep_s

    def _anchor_hold(self) -> None:
        """Hold the arm where it is now: the hold's reference becomes the measured joint angles."""
        self._q_ref = self._joint_state()[0]

    def _run_servo(self, command: np.ndarray, n: int) -> None:
        """Advance the physics ``n`` substeps with the servo tracking ``command`` (rad/s) through the
        position hold and the command ramp (module docstring).  One substep at a time while the
        servo target moves, then the rest in one `_step_physics` call."""
        h = self.physics_timestep_s
        speed = JOINT_SPEED_HARD_LIMIT
        step, jerk = self._ramp_step, self._jerk_step
        q, dq = self._joint_state()
        # The hold: one correction for the whole call, reaching q_ref by its end (or within
        # HOLD_TIME_CONSTANT_S); q_ref stays within HOLD_MAX_ERROR_RAD of q (no wind-up when blocked).
        error = np.minimum(np.maximum(self._q_ref - q, -HOLD_MAX_ERROR_RAD), HOLD_MAX_ERROR_RAD)
        q_ref = q + error
        correction = error / max(HOLD_TIME_CONSTANT_S, n * h)
        reflex = self.reflex is not None
        if reflex:  # stopped by the collision reflex: brake to rest, whatever was asked
            command = correction = self._zeros
        command = np.minimum(np.maximum(command, -speed), speed)
        goal = np.minimum(np.maximum(command + correction, -speed), speed)
        target, change = self._servo_target, self._target_change
        done = 0
        while True:
            # The ramp (libfranka's rate limiter): toward the goal within the acceleration limit
            # and, where a substep is short enough for it to matter (MuJoCo), the jerk limit.
            wanted = goal - target
            if self._jerk_binds:
                lower = np.maximum(change - jerk, -step)
                upper = np.minimum(change + jerk, step)
            else:
                lower, upper = -step, step
            change = np.minimum(np.maximum(wanted, lower), upper)
            if (change == wanted).all():
                target, k = goal, n - done
            else:
                target, k = target + change, 1
            self._servo_target = target
            # What the engine is asked for: never more than one substep of the published acceleration
            # from the measured velocity (a joint that fell behind, torque saturated or blocked,
            # catches up no faster than that instead of jumping to its target).
            reach = self._engine_step
            engine = self._command_servo(np.minimum(np.maximum(target, dq - reach), dq + reach), dq)
            if k > 1 and not (engine == target).all():
                k = 1
            stepped = self._watched_substeps(1)
            if k > 1 and (reflex or self.reflex is None):  # the target is reached: hold it for the rest
                self._command_servo(engine, engine)
                stepped += self._watched_substeps(k - 1)
                change = self._zeros
            q_ref = q_ref + (target - correction) * (stepped * h)  # the integral of the ramped command
            done += stepped
            if done >= n:
                break
            if not reflex and self.reflex is not None:  # the reflex tripped: brake for the rest
                reflex, goal, correction = True, self._zeros, self._zeros
            dq = self._joint_state()[1]
        self._target_change = change
        self._ramp_reached = bool((target == goal).all())
        self._q_ref = q_ref

    def _watched_substeps(self, n: int) -> int:
        """Step the physics ``n`` substeps, checking the collision reflex after each (as the real
        arm does at 1 kHz); returns how many were stepped: fewer than ``n`` when the reflex tripped
        (`reflex` then says why)."""
        if self.reflex is not None:  # already stopped by the reflex: nothing more to watch
            self._step_physics(n)
            return n
        for done in range(1, n + 1):
            self._step_physics(1)
            torques = self._external_joint_torques()
            if torques is None:
                continue
            reason = reflex_reason(torques, self._tip_jacobian(), self.config.collision_reflex)
            if reason is not None:
                self.reflex = reason
                return done
        return n

    def _advance_with_tip_delta(self, delta: np.ndarray) -> None:
        tip, rotation = self._tip_pose()
        self._tip_target = resolved_rate.advance_target(self._tip_target, tip, rotation, delta)

        n_total = self._substeps_per_period()
        n_chunk = max(1, round(IK_SOLVE_INTERVAL_S / self.physics_timestep_s))
        done = 0
        while done < n_total:
            n = min(n_chunk, n_total - done)
            time_to_go = max((n_total - done) * self.physics_timestep_s, 2 * n * self.physics_timestep_s)
            tip, rotation = self._tip_pose()
            jacobian = self._tip_jacobian()
            joint_velocity = resolved_rate.joint_velocity_toward(self._tip_target, tip, rotation, jacobian, time_to_go)
            # No faster than each joint can still brake to rest over the joint motion that is left
            # (joint_velocity * time_to_go), so the command ramp can follow without overshooting.
            speed = np.abs(joint_velocity) + 1e-12
            braking = np.min(np.sqrt(2.0 * IK_BRAKING_ACCELERATION * time_to_go / speed))
            scale = max(np.max(speed / IK_SPEED_LIMIT), 1.0 / braking)
            if scale > 1.0:
                joint_velocity /= scale
            self._run_servo(joint_velocity, n)
            done += n
        self._time_s += n_total * self.physics_timestep_s

    def _require_connected(self) -> None:
        if not self._connected:
            raise DriverFault(FaultReason.not_connected, f"{type(self).__name__} is not connected; call connect()")

    # ---- physics hooks, implemented by each backend -------------------------------------------
    @abc.abstractmethod
    def _build(self) -> None:
        """Build the scene (robot, table, cube, cameras) and set `physics_timestep_s`."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the physics engine and renderers."""

    @abc.abstractmethod
    def _joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Arm joint positions (rad) and velocities (rad/s), copies, shape (7,) each."""

    @abc.abstractmethod
    def _tip_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool-tip position (m) and rotation matrix in the base frame."""

    @abc.abstractmethod
    def _tip_jacobian(self) -> np.ndarray:
        """(6, 7) Jacobian of the tool tip, linear rows then angular rows, base frame."""

    @abc.abstractmethod
    def _gripper_width(self) -> float:
        """Opening between the fingers, m."""

    @abc.abstractmethod
    def _cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Cube centre position (m) and orientation (w, x, y, z), base frame."""

    @abc.abstractmethod
    def _set_cube_pose(self, position: np.ndarray, quat_wxyz: np.ndarray) -> None:
        """Teleport the cube to a pose, at rest."""

    @abc.abstractmethod
    def _set_joint_velocity_target(self, joint_velocity: np.ndarray) -> None:
        """Set the target of the engine's joint velocity servo, rad/s (held over the following
        steps).  Called once per substep while the command ramps: keep it cheap."""

    def _command_servo(self, target: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """Have the servo take the joints from their measured ``velocity`` to ``target`` (rad/s)
        over the next substep, and return the target actually set.

        By default the target is handed to `_set_joint_velocity_target` (PyBullet: a velocity motor
        reaches it within a substep when its torque suffices).  A backend whose servo needs help to
        get there within a substep (MuJoCo's velocity actuators) overrides this, and may set a
        nearer target if its torque limits do not allow the whole change."""
        self._set_joint_velocity_target(target)
        return target

    @abc.abstractmethod
    def _step_physics(self, n: int) -> None:
        """Advance the physics by ``n`` steps of `physics_timestep_s`, gripper held closed."""

    @abc.abstractmethod
    def _external_joint_torques(self) -> np.ndarray | None:
        """The arm joints' torques (7,), N m, from the contact forces the engine applied to the arm
        and hand in the last substep (self contacts included), or None when the arm touched
        nothing: what a real arm's external torque estimate measures.  Called after every substep:
        cheap when nothing touches."""

    @abc.abstractmethod
    def _arm_contacts(self) -> list[tuple[str, str]]:
        """See `arm_contacts`; finger-finger contact of the closed gripper is not reported."""

    @abc.abstractmethod
    def _render(self, camera: CameraConfig) -> np.ndarray:
        """RGB uint8 image (height, width, 3) of a configured camera, right way up."""

    @abc.abstractmethod
    def _reset_scene(self, home: np.ndarray, cube_pos: np.ndarray, cube_quat: np.ndarray) -> None:
        """Arm at ``home`` at rest, gripper closed, cube at the given pose at rest, servo target
        zero; all transient simulator state (contacts, warm starts) cleared, so that the same
        commands after a reset give the same states.  Must not rebuild the renderer."""
