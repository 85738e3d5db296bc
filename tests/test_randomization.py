"""Tests for domain randomisation: drivers.sim.randomize, SimRobot.randomize, sim2real presets, RobotEnv wiring."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import inril_robot.drivers.sim  # noqa: F401 - picks the GL backend: must come before mujoco's first import

pytest.importorskip("mujoco")

from inril_robot.config import RandomizationConfig, RunConfig, load_config
from inril_robot.core.errors import ConfigError
from inril_robot.drivers.sim.randomize import apply_randomization
from inril_robot.drivers.sim.world import SimWorld
from inril_robot.hardware.scene import ObjectPose
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.gym_env import InrilGymEnv
from inril_robot.sim2real.randomization import PRESETS, preset
from inril_robot.tasks import make_task
from inril_robot.tasks.base import jitter_objects

OFF = RandomizationConfig()


@pytest.fixture(scope="module")
def world() -> SimWorld:
    # peg: one movable object (peg) and one kinematic (fixture); a world-mounted and a wrist camera
    cfg = load_config(robot="sim", task="peg", cameras="sim_front_wrist")
    return SimWorld(cfg.robot, make_task(cfg.task).scene_objects(), cfg.cameras)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def geoms_of(world: SimWorld, body: str) -> np.ndarray:
    m = world.model
    return np.flatnonzero(m.geom_bodyid == m.body(body).id)


def assert_nominal(world: SimWorld) -> None:
    for name, value in world.nominal.items():
        np.testing.assert_array_equal(getattr(world.model, name), value, err_msg=name)


def test_zero_config_is_the_nominal_model(world: SimWorld) -> None:
    assert apply_randomization(world, OFF, rng()) == {}
    assert_nominal(world)
    everything = RandomizationConfig(
        friction_scale=0.5, mass_scale=0.5, camera_pos=0.05, camera_rot=0.2, lighting=0.5, colors=0.5, gain_scale=0.5
    )
    apply_randomization(world, everything, rng(1))
    assert any(not np.array_equal(getattr(world.model, k), v) for k, v in world.nominal.items())
    apply_randomization(world, OFF, rng(2))
    assert_nominal(world)


def test_friction_scaled_within_range_then_restored(world: SimWorld) -> None:
    m = world.model
    nominal = world.nominal["geom_friction"]
    factors = apply_randomization(world, RandomizationConfig(friction_scale=0.3), rng(3))
    for body in ("peg", "fixture", "table"):
        geoms = geoms_of(world, body)
        ratio = m.geom_friction[geoms] / nominal[geoms]
        assert np.all((ratio >= 0.7) & (ratio <= 1.3)), body
        np.testing.assert_allclose(ratio, factors[f"friction.{body}"])
    assert not np.array_equal(m.geom_friction[geoms_of(world, "peg")], nominal[geoms_of(world, "peg")])
    arm = np.flatnonzero(~np.isin(m.geom_bodyid, [m.body(b).id for b in ("peg", "fixture", "table")]))
    np.testing.assert_array_equal(m.geom_friction[arm], nominal[arm])  # the robot's own geoms are left alone
    apply_randomization(world, OFF, rng())
    np.testing.assert_array_equal(m.geom_friction, nominal)


def test_mass_and_inertia_scaled_together(world: SimWorld) -> None:
    m = world.model
    peg, fixture = m.body("peg").id, m.body("fixture").id
    factors = apply_randomization(world, RandomizationConfig(mass_scale=0.5), rng(4))
    f = factors["mass.peg"]
    assert 0.5 <= f <= 1.5 and f != 1.0
    assert m.body_mass[peg] == pytest.approx(f * world.nominal["body_mass"][peg])
    np.testing.assert_allclose(m.body_inertia[peg], f * world.nominal["body_inertia"][peg])
    assert m.body_mass[fixture] == world.nominal["body_mass"][fixture]  # kinematic (mocap): not randomised
    assert "mass.fixture" not in factors
    assert m.body_subtreemass[peg] == pytest.approx(m.body_mass[peg])  # derived constants follow
    apply_randomization(world, OFF, rng())
    assert_nominal(world)
    assert m.body_subtreemass[peg] == pytest.approx(world.nominal["body_mass"][peg])


def test_camera_jitter_is_bounded_and_world_mounted_only(world: SimWorld) -> None:
    m = world.model
    front, wrist = m.camera("front").id, m.camera("wrist").id
    for seed in range(5):
        apply_randomization(world, RandomizationConfig(camera_pos=0.03, camera_rot=0.1), rng(seed))
        offset = m.cam_pos[front] - world.nominal["cam_pos"][front]
        assert np.all(np.abs(offset) <= 0.03 + 1e-12) and np.any(offset != 0)
        q0, q = world.nominal["cam_quat"][front], m.cam_quat[front]
        assert np.linalg.norm(q) == pytest.approx(1.0)
        angle = 2 * np.arccos(min(1.0, abs(float(q0 @ q))))
        assert 0 < angle <= 0.1 + 1e-9
        np.testing.assert_array_equal(m.cam_pos[wrist], world.nominal["cam_pos"][wrist])
        np.testing.assert_array_equal(m.cam_quat[wrist], world.nominal["cam_quat"][wrist])
        # the camera pose in MjData follows at once (cameras render from data)
        np.testing.assert_allclose(world.data.cam_xpos[front], m.cam_pos[front])


def test_lights_and_colours(world: SimWorld) -> None:
    m = world.model
    factors = apply_randomization(world, RandomizationConfig(lighting=0.5, colors=0.3), rng(5))
    ratio = m.light_diffuse / world.nominal["light_diffuse"]
    assert np.all((ratio >= 0.5 - 1e-9) & (ratio <= 1.5 + 1e-9)) and not np.allclose(ratio, 1.0)
    assert {"light.key", "light.fill"} <= factors.keys()
    for body in ("peg", "fixture", "table"):
        geoms = geoms_of(world, body)
        rgba, nominal = m.geom_rgba[geoms], world.nominal["geom_rgba"][geoms]
        assert np.all((rgba >= 0) & (rgba <= 1))
        np.testing.assert_array_equal(rgba[:, 3], nominal[:, 3])  # alpha kept
        assert np.all(np.abs(rgba[:, :3] - nominal[:, :3]) <= 0.3 + 1e-6)
        assert not np.array_equal(rgba[:, :3], nominal[:, :3])
        assert len({tuple(np.round(c - n, 6)) for c, n in zip(rgba[:, :3], nominal[:, :3], strict=True)}) <= 4


def test_servo_gains_scaled_consistently(world: SimWorld) -> None:
    m = world.model
    arm, hand = world.arm_act, world.hand_act
    factors = apply_randomization(world, RandomizationConfig(gain_scale=0.4), rng(6))
    kp_ratio = m.actuator_gainprm[arm, 0] / world.nominal["actuator_gainprm"][arm, 0]
    assert np.all((kp_ratio >= 0.6) & (kp_ratio <= 1.4))
    np.testing.assert_allclose(kp_ratio, [factors[f"gain.{m.actuator(a).name}"] for a in arm])
    np.testing.assert_allclose(m.actuator_biasprm[arm, 1], -m.actuator_gainprm[arm, 0])  # offset-free servo
    kv_ratio = m.actuator_biasprm[arm, 2] / world.nominal["actuator_biasprm"][arm, 2]
    np.testing.assert_allclose(kv_ratio, np.sqrt(kp_ratio))
    np.testing.assert_array_equal(m.actuator_gainprm[hand], world.nominal["actuator_gainprm"][hand])
    apply_randomization(world, OFF, rng())
    assert_nominal(world)


def test_same_rng_same_factors(world: SimWorld) -> None:
    cfg = PRESETS["strong"]
    assert apply_randomization(world, cfg, rng(9)) == apply_randomization(world, cfg, rng(9))
    apply_randomization(world, OFF, rng())


def test_jitter_objects_moves_movable_xy_only() -> None:
    poses = {"peg": ObjectPose.at(0.5, 0.0, 0.04, yaw=0.3), "fixture": ObjectPose.at(0.55, 0.1, 0.0)}
    out = jitter_objects(poses, RandomizationConfig(object_pos=0.02), rng(7), movable={"peg"})
    delta = out["peg"].pos - poses["peg"].pos
    assert np.all(np.abs(delta[:2]) <= 0.02) and np.any(delta[:2] != 0) and delta[2] == 0
    np.testing.assert_array_equal(out["peg"].quat, poses["peg"].quat)
    np.testing.assert_array_equal(out["fixture"].pos, poses["fixture"].pos)
    np.testing.assert_array_equal(poses["peg"].pos, [0.5, 0.0, 0.04])  # inputs untouched
    same = jitter_objects(poses, OFF, rng(7))
    assert all(np.array_equal(same[k].pos, poses[k].pos) for k in poses)


def test_presets() -> None:
    assert set(PRESETS) == {"none", "light", "medium", "strong"}
    assert preset("none").enabled is False
    for name in ("light", "medium", "strong"):
        cfg = preset(name)
        assert cfg.enabled
        RandomizationConfig.model_validate(cfg.model_dump())  # within every field's allowed range
    light, strong = preset("light"), preset("strong")
    assert all(getattr(light, k) <= getattr(strong, k) for k in RandomizationConfig.model_fields)
    copy = preset("medium")
    copy.lighting = 0.0
    assert PRESETS["medium"].lighting > 0  # preset() hands out copies
    with pytest.raises(ValueError, match="none, light, medium, strong"):
        preset("extreme")


def test_randomization_off_by_default() -> None:
    assert RunConfig().randomization.enabled is False
    assert load_config(robot="sim", task="lift").randomization.enabled is False
    with pytest.raises(ConfigError, match=r"randomization\.friction_scale"):
        load_config(overrides=["randomization.friction_scale=2"])


@pytest.fixture(scope="module")
def reach_images() -> Iterator[tuple[InrilGymEnv, InrilGymEnv]]:
    # object_range 0: the reach target never moves, so only randomisation can change the picture
    fixed = ["task.object_range=0"]
    plain = InrilGymEnv(task="reach", observation="image", image_size=48, overrides=fixed)
    randomized = InrilGymEnv(
        task="reach",
        observation="image",
        image_size=48,
        overrides=[*fixed, "randomization.lighting=0.5", "randomization.colors=0.3"],
    )
    yield plain, randomized
    plain.close()
    randomized.close()


def test_env_renders_randomized_scenes(reach_images: tuple[InrilGymEnv, InrilGymEnv]) -> None:
    plain, randomized = reach_images
    np.testing.assert_array_equal(plain.reset(seed=1)[0]["front_rgb"], plain.reset(seed=2)[0]["front_rgb"])
    first = randomized.reset(seed=1)[0]["front_rgb"]
    second = randomized.reset(seed=2)[0]["front_rgb"]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(randomized.reset(seed=1)[0]["front_rgb"], first)  # reproducible per seed


def test_env_jitters_object_positions() -> None:
    cfg = load_config(robot="sim", task="lift", overrides=["task.object_range=0", "randomization.object_pos=0.03"])
    with RobotEnv(cfg) as env:
        positions = [env.reset(seed=s)[0]["cube_pos"] for s in range(3)]
    for pos in positions:
        assert np.all(np.abs(pos[:2] - [0.5, 0.0]) <= 0.03 + 1e-6)
    assert len({tuple(p[:2]) for p in positions}) == 3
