"""Domain randomisation of the simulated world, applied at each reset when `RunConfig.randomization` is enabled.

`apply_randomization` first restores every model array captured at build (`SimWorld.nominal`), then perturbs the
ones named by the nonzero fields of `RandomizationConfig`, so ranges never compound across episodes and an all-zero
config gives back the nominal model exactly. Every sampled factor is returned, flat, for logging.

`object_pos` is not a model property: it jitters the task's sampled initial poses
(`inril_robot.tasks.base.jitter_objects`).
`obs_noise` and `action_latency_steps` are applied by `RobotEnv` itself. `control_rate_jitter` scales the physics
time each action lasts; `camera_calibration_sigmas` jitters calibrated cameras (static and wrist) by k times the
one-sigma uncertainty in their calibration files.
"""

from __future__ import annotations

import mujoco
import numpy as np

from inril_robot.config import RandomizationConfig
from inril_robot.drivers.sim.world import SimWorld

TABLE_BODY = "table"
RGB = "rgb"


def _factor(rng: np.random.Generator, spread: float) -> float:
    """A multiplicative factor U(1 - spread, 1 + spread)."""
    return float(rng.uniform(1.0 - spread, 1.0 + spread))


def _quat_mul_wxyz(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_mulQuat(out, np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return out


def _small_rotation_wxyz(rng: np.random.Generator, max_angle: float) -> tuple[np.ndarray, float]:
    """A rotation about a uniformly random axis by an angle U(-max_angle, max_angle); (quat wxyz, angle)."""
    axis = rng.normal(size=3)
    axis /= max(float(np.linalg.norm(axis)), 1e-12)
    angle = float(rng.uniform(-max_angle, max_angle))
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis]), angle


def restore_nominal(world: SimWorld) -> None:
    """Write every array captured at build back into the model."""
    for name, value in world.nominal.items():
        getattr(world.model, name)[...] = value


def apply_randomization(world: SimWorld, cfg: RandomizationConfig, rng: np.random.Generator) -> dict[str, float]:
    """Restore the nominal model, then randomise it as `cfg` says; returns the sampled factors, by name."""
    m = world.model
    masses_were_changed = not np.array_equal(m.body_mass, world.nominal["body_mass"])
    restore_nominal(world)
    sampled: dict[str, float] = {}

    scene = [(o.name, m.body(o.name).id) for o in world.objects] + [(TABLE_BODY, m.body(TABLE_BODY).id)]
    geoms_of = {name: np.flatnonzero(m.geom_bodyid == body) for name, body in scene}

    if cfg.friction_scale > 0:
        for name, _ in scene:
            f = _factor(rng, cfg.friction_scale)
            m.geom_friction[geoms_of[name]] *= f
            sampled[f"friction.{name}"] = f

    if cfg.mass_scale > 0:
        for obj in world.objects:
            if not obj.movable:  # mocap bodies are placed kinematically: their mass plays no part
                continue
            body = m.body(obj.name).id
            f = _factor(rng, cfg.mass_scale)
            m.body_mass[body] *= f
            m.body_inertia[body] *= f  # same mass distribution, scaled: inertia scales with mass
            sampled[f"mass.{obj.name}"] = f

    if cfg.camera_pos > 0 or cfg.camera_rot > 0:
        for cam in range(m.ncam):
            if m.cam_bodyid[cam] != 0:  # wrist cameras move with the hand; only world-mounted ones are jittered
                continue
            name = m.camera(cam).name
            if cfg.camera_pos > 0:
                offset = rng.uniform(-cfg.camera_pos, cfg.camera_pos, 3)
                m.cam_pos[cam] += offset
                sampled.update({f"camera_pos.{name}.{axis}": float(v) for axis, v in zip("xyz", offset, strict=True)})
            if cfg.camera_rot > 0:
                dq, angle = _small_rotation_wxyz(rng, cfg.camera_rot)
                q = _quat_mul_wxyz(m.cam_quat[cam], dq)  # perturbation in the camera's own frame
                m.cam_quat[cam] = q / np.linalg.norm(q)
                sampled[f"camera_rot.{name}"] = angle

    if cfg.camera_calibration_sigmas > 0:  # issue 10: calibrated cameras, jitter = k x the file's uncertainty
        k = cfg.camera_calibration_sigmas
        for name, (pos_sigma, rot_sigma) in world.camera_sigmas.items():
            cam = m.camera(name).id
            offset = rng.normal(0.0, k * pos_sigma / np.sqrt(3.0), 3)  # per axis: the norm's sigma is pos_sigma
            m.cam_pos[cam] += offset
            axis = rng.normal(size=3)
            angle = float(rng.normal(0.0, k * rot_sigma))
            dq = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis / max(np.linalg.norm(axis), 1e-12)])
            q = _quat_mul_wxyz(m.cam_quat[cam], dq)
            m.cam_quat[cam] = q / np.linalg.norm(q)
            sampled[f"calibrated_camera_pos.{name}"] = float(np.linalg.norm(offset))
            sampled[f"calibrated_camera_rot.{name}"] = angle

    # issue 10: control-rate jitter, the physics time one action lasts (a real loop's period is never exact)
    world.substeps = world.nominal_substeps
    if cfg.control_rate_jitter > 0:
        f = _factor(rng, cfg.control_rate_jitter)
        world.substeps = max(1, round(world.nominal_substeps * f))
        sampled["control_period_scale"] = world.substeps / world.nominal_substeps

    if cfg.lighting > 0:
        for light in range(m.nlight):
            f = _factor(rng, cfg.lighting)
            m.light_diffuse[light] = np.clip(m.light_diffuse[light] * f, 0.0, 1.0)
            sampled[f"light.{m.light(light).name}"] = f

    if cfg.colors > 0:
        for name, _ in scene:  # one shift per body, so multi-geom objects (the peg's fixture) stay one colour
            shift = rng.uniform(-cfg.colors, cfg.colors, 3)
            geoms = geoms_of[name]
            m.geom_rgba[geoms, :3] = np.clip(m.geom_rgba[geoms, :3] + shift, 0.0, 1.0)
            sampled.update({f"color.{name}.{c}": float(v) for c, v in zip(RGB, shift, strict=True)})

    if cfg.gain_scale > 0:
        for act in world.arm_act:
            f = _factor(rng, cfg.gain_scale)
            m.actuator_gainprm[act, 0] *= f  # kp
            m.actuator_biasprm[act, 1] *= f  # -kp: the servo stays offset-free
            m.actuator_biasprm[act, 2] *= np.sqrt(f)  # -kv: keeps the build's near-critical damping (kv ∝ √kp)
            sampled[f"gain.{m.actuator(act).name}"] = f

    if masses_were_changed or cfg.mass_scale > 0:
        # derived constants (subtree masses, inverse weights used by the constraint solver) follow body masses;
        # mj_setConst overwrites the MjData it is given, so it works on a scratch one
        mujoco.mj_setConst(m, mujoco.MjData(m))
    mujoco.mj_forward(m, world.data)  # camera and light poses in `data` follow the model at once
    return sampled
