"""Every setting of inril-robot, as pydantic models, and the loader that builds them.

A run's configuration is one `RunConfig`, built by deep-merging, in order:
defaults <- robot preset <- camera preset <- task preset <- ``--config FILE`` <- ``--set a.b=value`` overrides.
Presets are partial RunConfig YAML files under ``configs/{robots,cameras,tasks,algos}``. Validation happens once,
on the merged result, before anything starts; an invalid value raises `ConfigError` naming the field and the
allowed range.
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from inril_robot.core.errors import ConfigError
from inril_robot.core.models import StrictModel, Vec3, format_validation_error
from inril_robot.core.safety import SafetyLimits

PRESET_KINDS = ("robots", "cameras", "tasks", "algos")


# ------------------------------------------------------------------------------------------------------------ robot
class CalibrationBoardConfig(StrictModel):
    """A ChArUco board rendered in the simulated scene, for calibration (issue 10). Off (``mount: none``) by default.

    ``world``: fixed in the world (eye-in-hand calibration of a wrist camera); ``hand``: carried by the hand
    (eye-to-hand calibration of a static camera). ``pos``/``quat`` place the board frame (vision.board: origin
    at the top-left outer corner, z into the board) in the world or TCP frame; None: the default placement.
    Visual only: the board has no mass and never collides.
    """

    mount: Literal["none", "world", "hand"] = "none"
    squares_x: Annotated[int, Field(ge=3, le=20)] = 5
    squares_y: Annotated[int, Field(ge=3, le=20)] = 4
    square_length: Annotated[float, Field(gt=0.0, le=0.2, description="chessboard square side [m]")] = 0.04
    marker_length: Annotated[float, Field(gt=0.0, le=0.2, description="ArUco marker side [m]")] = 0.03
    dictionary: str = "DICT_4X4_50"
    pos: Vec3 | None = None
    quat: tuple[float, float, float, float] | None = None  # xyzw


class SimConfig(StrictModel):
    timestep: Annotated[float, Field(gt=0.0, le=0.01, description="physics step [s]")] = 0.002
    ik_iterations: Annotated[int, Field(ge=1, le=50)] = 3
    ik_damping: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    nullspace_gain: Annotated[float, Field(ge=0.0, le=10.0)] = 0.5
    joint_kp_scale: Annotated[float, Field(gt=0.0, le=10.0, description="scales the model's joint servo gains")] = 1.0
    shadows: bool = False
    msaa: bool = False
    calibration_board: CalibrationBoardConfig = CalibrationBoardConfig()  # issue 10: calibration scenes


#: the Franka's Cartesian velocity limits (FR3 and Panda datasheets; what franky reports for a connected FR3)
FRANKA_MAX_SPEED = 1.7  # [m/s] translation
FRANKA_MAX_ROT_SPEED = 2.5  # [rad/s] rotation


class FrankaConfig(StrictModel):
    """A real Franka through franky (`drivers.franka`). Dynamics factors are fractions of the arm's own limits.

    ``control``: ``impedance`` streams the bounded reference into franky's real-time Cartesian impedance tracker
    (one motion for the whole episode: compliant, with the spring force clipped by the error clips); ``motion`` sends
    one position-controlled `CartesianMotion` per step (the older behaviour, kept for comparison).
    """

    host: Annotated[str, Field(min_length=1, description="robot (FCI) IP address or hostname")] = "172.16.0.2"
    realtime: Literal["enforce", "ignore"] = "enforce"
    relative_dynamics_factor: Annotated[
        float, Field(gt=0.0, le=1.0, description="velocity/acceleration/jerk scale of the per-step Cartesian motions")
    ] = 0.1
    home_dynamics_factor: Annotated[
        float, Field(gt=0.0, le=1.0, description="velocity/acceleration/jerk scale of the joint motion home()")
    ] = 0.05
    gripper: bool = True  # a Franka Hand is attached
    gripper_speed: Annotated[float, Field(gt=0.0, le=0.2, description="Franka Hand finger speed [m/s]")] = 0.1
    gripper_force: Annotated[float, Field(gt=0.0, le=70.0, description="Franka Hand grasp force [N]")] = 20.0
    connect_timeout_s: Annotated[
        float, Field(gt=0.0, le=30.0, description="TCP probe of the FCI port before connecting [s]")
    ] = 2.0
    control: Literal["impedance", "motion"] = "impedance"
    translational_stiffness: Annotated[
        float, Field(gt=0.0, le=3000.0, description="impedance tracker spring, translation [N/m]")
    ] = 1000.0
    rotational_stiffness: Annotated[
        float, Field(gt=0.0, le=300.0, description="impedance tracker spring, rotation [Nm/rad]")
    ] = 100.0
    translational_error_clip: Annotated[
        float, Field(gt=0.0, le=0.05, description="impedance tracker: spring stretch clipped to this, per axis [m]")
    ] = 0.01
    rotational_error_clip: Annotated[
        float, Field(gt=0.0, le=0.5, description="impedance tracker: spring twist clipped to this, per axis [rad]")
    ] = 0.05
    stream_hz: Annotated[
        float,
        Field(
            gt=0.0,
            le=1000.0,
            description=("impedance: rate at which the tracker's target moves between control steps [Hz]"),
        ),
    ] = 100.0
    gripper_timeout_s: Annotated[
        float, Field(gt=0.0, le=30.0, description="a Franka Hand command or width read past this is a fault [s]")
    ] = 5.0
    gripper_read_hz: Annotated[float, Field(gt=0.0, le=100.0, description="rate of the width reader thread [Hz]")] = (
        20.0
    )


class RobotConfig(StrictModel):
    kind: Literal["sim", "franka"] = "sim"
    control_hz: Annotated[float, Field(gt=0.0, le=100.0, description="policy/action rate [Hz]")] = 10.0
    home_joints: tuple[float, float, float, float, float, float, float] = (
        0.0,
        -0.3,
        0.0,
        -2.4,
        0.0,
        2.1,
        0.785,
    )
    sim: SimConfig = SimConfig()
    franka: FrankaConfig = FrankaConfig()


# ---------------------------------------------------------------------------------------------------------- cameras
class CameraConfig(StrictModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    kind: Literal["sim", "realsense"] = "sim"
    width: Annotated[int, Field(ge=16, le=1920)] = 128
    height: Annotated[int, Field(ge=16, le=1080)] = 128
    fps: Annotated[int, Field(ge=1, le=90)] = 30
    serial: str | None = None  # RealSense serial number; None: the only connected device
    depth: bool = False  # RealSense: also stream depth, aligned to colour
    warmup_frames: Annotated[int, Field(ge=0, le=300, description="frames dropped after (re)start")] = 15
    mount: Literal["world", "wrist"] = "world"
    fovy_deg: Annotated[float, Field(gt=1.0, lt=179.0)] = 58.0
    pos: Vec3 = (1.3, 0.0, 0.7)
    lookat: Vec3 = (0.5, 0.0, 0.1)
    # issue 10: a calibration file (hardware.calibration_file); a sim camera takes its pose and field of view from it
    # instead of pos/lookat/fovy_deg (drivers.sim.placement), and datasets/checkpoints record it through this config
    calibration: str | None = None
    # issue 19: the camera pipeline (inril_robot.vision.pipeline). width x height above is what the policy sees;
    # `capture` is the stream mode / render size, `crop` a rectangle in capture pixels, resized to width x height
    capture: tuple[Annotated[int, Field(ge=16, le=4096)], Annotated[int, Field(ge=16, le=4096)]] | None = Field(
        None,
        description="(width, height) the camera captures [px]; None: the calibration file's size for a calibrated "
        "sim camera, else width x height (no resize)",
    )
    crop: tuple[int, int, int, int] | None = Field(
        None, description="(x, y, width, height) in capture pixels [px]; None: centred to the policy's aspect"
    )

    @model_validator(mode="after")
    def _crop_fits(self) -> CameraConfig:
        if self.crop is not None:
            x, y, w, h = self.crop
            if x < 0 or y < 0 or w < 1 or h < 1:
                raise ValueError(f"crop {self.crop}: x, y must be >= 0 and width, height >= 1")
            if self.capture is not None and (x + w > self.capture[0] or y + h > self.capture[1]):
                raise ValueError(f"crop {self.crop} reaches outside the {self.capture[0]}x{self.capture[1]} capture")
        return self


# ------------------------------------------------------------------------------------------------------------- task
class ResetConfig(StrictModel):
    """The reset phase between episodes (`runtime.resets`): open, retreat, operator, scripted reset, start pose."""

    retreat_height: Annotated[
        float, Field(ge=0.0, le=0.3, description="the arm rises to the home height plus this before homing [m]")
    ] = 0.0
    start_xyz: Annotated[
        tuple[
            Annotated[float, Field(ge=0.0, le=0.1)],
            Annotated[float, Field(ge=0.0, le=0.1)],
            Annotated[float, Field(ge=0.0, le=0.1)],
        ],
        Field(description="random start pose: TCP offset from home, uniform in +-these per axis [m]"),
    ] = (0.0, 0.0, 0.0)
    start_yaw: Annotated[
        float, Field(ge=0.0, le=0.5, description="random start pose: yaw offset from home, uniform in +-this [rad]")
    ] = 0.0


class TaskConfig(StrictModel):
    name: Literal["reach", "lift", "push", "peg"] = "lift"
    max_steps: Annotated[int, Field(ge=1, le=10_000, description="episode length limit [control steps]")] = 100
    reward: Literal["sparse", "dense"] = "sparse"
    observation: Literal["state", "image"] = "state"
    expert_noise: Annotated[
        float, Field(ge=0.0, le=1.0, description="scripted-expert translation noise, as a fraction of max_step")
    ] = 0.0
    object_range: Annotated[
        float, Field(ge=0.0, le=0.2, description="half-width of the object placement region [m]")
    ] = 0.08
    reset: ResetConfig = ResetConfig()


class MarkersConfig(StrictModel):
    """Issue 19: object poses from fiducial markers (inril_robot.vision.markers) instead of the simulator's truth.

    Enabled: the sim renders the markers on the task's movable objects (faces +x, -x, +y, -y, +z of each box, ids
    counting up from `first_id` in the task's object order: print the same with `inril-robot markers`), the cameras
    below detect them, and a state policy observes the estimated poses (a real cell has nothing else). The cameras
    are not policy inputs; a real camera needs a calibration file with extrinsics."""

    enabled: bool = False
    dictionary: str = "DICT_APRILTAG_36h11"
    size: Annotated[float, Field(gt=0.0, le=0.3, description="side of a marker's black square [m]")] = 0.04
    first_id: Annotated[int, Field(ge=0, le=500)] = 0
    max_age_s: Annotated[float, Field(gt=0.0, le=10.0, description="a pose older than this is flagged lost [s]")] = 0.5
    cameras: list[CameraConfig] = Field(
        default_factory=lambda: [
            CameraConfig(
                name="marker_front",
                width=640,
                height=480,
                fovy_deg=42.0,
                pos=(1.0, 0.25, 0.55),
                lookat=(0.5, 0.0, 0.03),
            ),
            CameraConfig(
                name="marker_side",
                width=640,
                height=480,
                fovy_deg=42.0,
                pos=(0.55, -0.65, 0.5),
                lookat=(0.5, 0.0, 0.03),
            ),
            # on the hand (a D405-like 58 degree view): it sees the object's markers while the fingers hide them from
            # the fixed cameras (near the grasp: pose error p95 18.6 mm with the two fixed cameras, 0.8 mm with it)
            CameraConfig(name="marker_wrist", width=640, height=480, fovy_deg=58.0, mount="wrist"),
        ]
    )


class RewardConfig(StrictModel):
    """Issue 19: where success, and with it the reward, comes from — the one setting for simulation, the real-like
    cell and a real robot.

    ``sim``: the task's success check and reward (sparse or dense) on the simulator's state; a sim cell only.
    ``operator``: the operator's verdict — the keep / discard keys on a robot; in simulation a scripted operator who
    judges as a person watching would (the simulator's success check, sparse). ``detector``: a success detector on
    the observation (what the policy sees), P(success) >= threshold, sparse. Unset: ``sim`` in a sim cell,
    ``operator`` in a real-like one. Whatever decides, in simulation `info["sim_success"]` still carries the
    simulator's verdict, so fine-tuning's evaluations measure the truth."""

    source: Literal["sim", "operator", "detector"] | None = None
    detector: str | None = Field(
        None,
        description="a trained detector's file (`detector train`), or 'package.module:factory' where "
        "factory(RunConfig) returns a callable obs -> success probability",
    )
    # None: the detector's own `threshold` (a trained detector stores the one chosen for precision), else 0.5
    threshold: Annotated[float | None, Field(gt=0.0, lt=1.0, description="detector probability counted as success")] = (
        None
    )

    @model_validator(mode="after")
    def _detector_named(self) -> RewardConfig:
        if self.source == "detector" and not self.detector:
            raise ValueError(
                "reward.source=detector needs reward.detector: a detector file (`inril-robot detector train`) or "
                "'package.module:factory'"
            )
        return self


#: issue 19's settings that moved to `reward` (one place for where success and reward come from)
_MOVED_CELL_KEYS = {"success": "reward.source", "detector": "reward.detector", "threshold": "reward.threshold"}
_MOVED_CELL_DEFAULTS = {"success": "operator", "detector": None, "threshold": None}


# -------------------------------------------------------------------------------------------- domain randomisation
class RandomizationConfig(StrictModel):
    """Domain-randomisation ranges, applied by the simulator at each reset. All zero (off) by default."""

    object_pos: Annotated[float, Field(ge=0.0, le=0.1, description="extra object xy jitter [m]")] = 0.0
    friction_scale: Annotated[float, Field(ge=0.0, le=0.9, description="friction *= U(1-s, 1+s)")] = 0.0
    mass_scale: Annotated[float, Field(ge=0.0, le=0.9, description="object mass *= U(1-s, 1+s)")] = 0.0
    camera_pos: Annotated[float, Field(ge=0.0, le=0.1, description="camera position jitter [m]")] = 0.0
    camera_rot: Annotated[float, Field(ge=0.0, le=0.3, description="camera orientation jitter [rad]")] = 0.0
    lighting: Annotated[float, Field(ge=0.0, le=1.0, description="light intensity jitter (fraction)")] = 0.0
    colors: Annotated[float, Field(ge=0.0, le=1.0, description="object/table colour jitter (fraction)")] = 0.0
    obs_noise: Annotated[float, Field(ge=0.0, le=0.05, description="proprio/state noise std [m, rad]")] = 0.0
    action_latency_steps: Annotated[int, Field(ge=0, le=5, description="actions delayed by this many steps")] = 0
    gain_scale: Annotated[float, Field(ge=0.0, le=0.9, description="joint servo gains *= U(1-s, 1+s)")] = 0.0
    # issue 10 (sim2real): control-period jitter and camera jitter scaled by each calibration's uncertainty
    control_rate_jitter: Annotated[
        float, Field(ge=0.0, le=0.5, description="control period *= U(1-s, 1+s), per episode")
    ] = 0.0
    camera_calibration_sigmas: Annotated[
        float, Field(ge=0.0, le=10.0, description="calibrated cameras: pose jitter of k x the file's uncertainty")
    ] = 0.0

    @property
    def enabled(self) -> bool:
        return any(v != 0 for v in self.model_dump().values())


# ------------------------------------------------------------------------------------------------------------- cell
class CellConfig(StrictModel):
    """Issue 19: what the cell provides to policy, dataset and bridge (`inril_robot.runtime.cell`).

    ``sim``: the simulator's object state may be observed (task.observation=state) and its success check is the
    reward. ``real-like``: only what a real cell has — cameras (+ marker poses), proprioception, and success from
    the operator's verdict or a success detector on the observation (`reward.source`); the task's privileged keys
    never reach the policy, the dataset or the bridge. ``--set cell=real-like`` is short for
    ``--set cell.mode=real-like``.
    """

    mode: Literal["sim", "real-like"] = "sim"

    @model_validator(mode="before")
    @classmethod
    def _mode_shorthand(cls, data: Any) -> Any:
        return {"mode": data} if isinstance(data, str) else data


# ----------------------------------------------------------------------------------------------------------- teleop
class TeleopConfig(StrictModel):
    """The operator input device of `collect` (and interventions): its kind and how far one input moves the arm."""

    kind: Literal["scripted", "keyboard", "spacemouse"] = "scripted"
    translation_step: Annotated[
        float, Field(gt=0.0, le=0.05, description="EE translation per key press / per step at full deflection [m]")
    ] = 0.01
    rotation_step: Annotated[
        float, Field(gt=0.0, le=0.3, description="EE rotation per key press / per step at full deflection [rad]")
    ] = 0.05
    deadzone: Annotated[
        float, Field(ge=0.0, le=0.5, description="SpaceMouse axis deflection ignored around rest (fraction)")
    ] = 0.1
    spacemouse_device: str | None = None  # pyspacemouse device name ("SpaceMouse Compact"); None: the first found


# --------------------------------------------------------------------------------------------------------- policy
class ImageEncoderConfig(StrictModel):
    channels: tuple[int, ...] = (32, 64, 64)
    feature_dim: Annotated[int, Field(ge=8, le=1024)] = 64
    # 0 by measurement: on lift (64 px, fixed sim cameras) BC without the shift beat DrQ's 4 px by a wide margin on the
    # same 100 held-out seeds (docs/image_policies.md); the position the keypoints carry is what lift needs
    random_shift: Annotated[int, Field(ge=0, le=16, description="random-shift augmentation padding [px]")] = 0
    # per camera (its name, e.g. {wrist: 0}): the padding for that camera's images instead of random_shift
    camera_shift: dict[str, Annotated[int, Field(ge=0, le=16)]] = Field(default_factory=dict)
    # issue 19: how each camera's feature maps become a vector (docs/image_policies.md has the measured comparison)
    pool: Literal["spatial_softmax", "avg"] = "spatial_softmax"


class DiffusionConfig(StrictModel):
    denoiser: Literal["mlp", "unet"] = "mlp"
    train_steps: Annotated[int, Field(ge=2, le=1000, description="DDPM diffusion steps K")] = 20
    ddim_steps: Annotated[int, Field(ge=1, le=100, description="DDIM sampling steps at inference")] = 5
    unet_channels: tuple[int, ...] = (64, 128)
    time_embed_dim: Annotated[int, Field(ge=8, le=512)] = 32
    finetuned_steps: Annotated[
        int | None,
        Field(
            ge=1,
            le=100,
            description="DPPO: the last k DDIM steps use the fine-tuned network, earlier ones a frozen "
            "copy of the pre-trained one; None = one network for all",
        ),
    ] = None
    # How the policy acts (eval, deployment, in-run evaluation: `predict(deterministic=True)`); exploring samples use
    # eta 1. On lift a diffusion BC succeeded 26/100 with eta 0 and 89/100 with eta 1 (docs/inril.md).
    eta: Annotated[
        float, Field(ge=0.0, le=1.0, description="DDIM eta when acting: 0 = deterministic DDIM, 1 = DDPM's variance")
    ] = 0.0


class GaussianConfig(StrictModel):
    log_std: Literal["learned", "state"] = "learned"
    init_log_std: Annotated[float, Field(ge=-5.0, le=1.0)] = -1.0
    min_log_std: Annotated[float, Field(ge=-10.0, le=0.0)] = -5.0
    max_log_std: Annotated[float, Field(ge=-5.0, le=2.0)] = 0.5


class ResidualRLConfig(StrictModel):
    """A Gaussian residual head over the policy (ResiP): what residual PPO trains."""

    hidden: tuple[int, ...] = (256, 256)
    scale: Annotated[float, Field(gt=0.0, le=1.0, description="residual scale in normalised action units")] = 0.1
    init_log_std: Annotated[float, Field(ge=-5.0, le=1.0)] = -1.5
    actor_lr: Annotated[float, Field(gt=0.0, le=1.0, description="initial lr of the head (ResiP: 3e-4)")] = 3e-4
    # how a checkpoint's residual is combined: a_base + scale * tanh(r) (never beyond +-scale) or a_base + scale * r.
    # The algorithm sets it (residual-sac: squashed, residual-ppo: not); a checkpoint's policy config records it
    squash: bool = False


IDQLRule = Literal["argmax", "expectile"]


class IDQLActConfig(StrictModel):
    """How an IDQL checkpoint acts (eval, deployment, in-run evaluation): `candidates` chunks from its diffusion actor
    sampled with DDIM `eta`, one chosen by its critics: `argmax` = the highest min-Q; `expectile` = drawn with
    probability proportional to the expectile weight |expectile - 1(Q < V)| (IDQL's implicit policy). Exploring
    always draws eta-1 candidates by expectile weight. The network sizes rebuild the critics the checkpoint holds."""

    candidates: Annotated[int, Field(ge=1, le=256)] = 16
    eta: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    rule: IDQLRule = "expectile"
    expectile: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.7
    critic_hidden: tuple[int, ...] = (128, 128)
    critic_ensemble: Annotated[int, Field(ge=1, le=64)] = 4


class PolicyConfig(StrictModel):
    kind: Literal["gaussian", "diffusion"] = "gaussian"
    horizon: Annotated[int, Field(ge=1, le=64, description="action chunk length predicted")] = 1
    act_steps: Annotated[int, Field(ge=1, le=64, description="steps of each chunk executed")] = 1
    n_obs_steps: Annotated[int, Field(ge=1, le=8, description="observation history length")] = 1
    hidden: tuple[int, ...] = (256, 256)
    obs_norm: Literal["mean_std", "min_max"] = "mean_std"
    image: ImageEncoderConfig = ImageEncoderConfig()
    gaussian: GaussianConfig = GaussianConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    residual: ResidualRLConfig | None = None  # set: the policy is this residual head over the `kind` base
    idql: IDQLActConfig | None = None  # set: IDQL's implicit policy (critics choosing among diffusion candidates)

    @model_validator(mode="after")
    def _chunk_fits(self) -> PolicyConfig:
        if self.act_steps > self.horizon:
            raise ValueError(f"act_steps={self.act_steps} must be <= horizon={self.horizon}")
        if self.idql is not None and (self.kind != "diffusion" or self.residual is not None):
            raise ValueError("policy.idql goes with policy.kind=diffusion and no policy.residual")
        return self


class TrainConfig(StrictModel):
    steps: Annotated[int, Field(ge=1, le=10_000_000, description="gradient steps")] = 5000
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 256
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3
    lr_min: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-5
    warmup_steps: Annotated[int, Field(ge=0)] = 200
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-4
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0, description="EMA of weights; 0 disables")] = 0.995
    grad_clip: Annotated[float, Field(gt=0.0)] = 1.0
    eval_every: Annotated[int, Field(ge=0, description="steps between sim evaluations; 0 disables")] = 1000
    eval_episodes: Annotated[int, Field(ge=1, le=1000)] = 20
    checkpoint_every: Annotated[int, Field(ge=1)] = 1000
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Annotated[int, Field(ge=0, le=256, description="torch CPU threads; 0 = torch default")] = 0


# ----------------------------------------------------------------------------------------------------- fine-tuning
class PPOConfig(StrictModel):
    """The RL side: clipped-ratio PPO (CleanRL) over action chunks; one PPO "step" of the env = one executed chunk."""

    gamma: Annotated[float, Field(ge=0.0, le=1.0, description="discount per executed chunk")] = 0.99
    gae_lambda: Annotated[float, Field(ge=0.0, le=1.0)] = 0.95
    clip: Annotated[float, Field(gt=0.0, le=1.0, description="ratio clipping epsilon")] = 0.2
    clip_value: Annotated[float | None, Field(gt=0.0, description="value clipping around the old value")] = None
    ent_coef: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    vf_coef: Annotated[float, Field(gt=0.0, le=10.0)] = 0.5
    epochs: Annotated[int, Field(ge=1, le=100, description="passes over each batch of episodes")] = 5
    minibatch_size: Annotated[int, Field(ge=1, le=65536)] = 128
    # target_kl: the KL (approx k3, RL steps only) one whole update should move the policy by. The "kl" schedule
    # adapts the actor lr on the KL measured over the whole batch *after* the update (never on minibatch means, which
    # the zero-KL first step and early-stopped updates bias low): /1.5 above 1.5 target, *1.5 below target / 1.5.
    # An update stops early (before stepping) once a minibatch's RL KL exceeds kl_stop_factor * target_kl.
    # null: no early stop and no adaptation (a fixed lr).
    target_kl: Annotated[float | None, Field(gt=0.0, description="per-update approx KL of the RL steps")] = 0.05
    kl_stop_factor: Annotated[float, Field(gt=1.0, le=100.0, description="early stop at this x target_kl")] = 2.0
    max_grad_norm: Annotated[float, Field(gt=0.0, description="gradient-norm clip, actor and critic")] = 1.0
    normalize_advantages: bool = True
    actor_lr: Annotated[float, Field(gt=0.0, le=1.0, description="initial actor learning rate")] = 1e-5
    # "kl": see target_kl (within [actor_lr_min, actor_lr_max]); with the small exploration std of a fine-tuned BC
    # policy a fixed lr either crawls or jumps (one Adam step at 1e-4 measured KL 36 on lift)
    lr_schedule: Literal["fixed", "kl"] = "kl"
    actor_lr_min: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-7
    actor_lr_max: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3
    critic_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3
    critic_hidden: tuple[int, ...] = (256, 256)
    critic_warmup_iterations: Annotated[int, Field(ge=0, description="first iterations train only the critic")] = 1
    # Episode ends. A success is terminal (its reward is the return). A safety stop is terminal as a failure: the
    # return is what was earned so far minus stop_penalty. Only the task's time limit is a truncation; time is not
    # observed and evaluation uses the same limit, so by default ("never") it is terminal too. "trusted" bootstraps
    # it from V(final observation), clamped to the feasible return range, and only while the critic is trusted:
    # explained variance of its collection-time values >= trusted_critic_ev on the previous batch.
    stop_penalty: Annotated[float, Field(ge=0.0, le=100.0, description="subtracted from a stopped episode")] = 0.0
    time_limit_bootstrap: Literal["never", "trusted"] = "never"
    trusted_critic_ev: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.5


class DPPOConfig(StrictModel):
    """DPPO: PPO over the last `ft_steps` DDIM steps of a diffusion policy, each denoising step one Gaussian."""

    ft_steps: Annotated[int | None, Field(ge=1, le=100, description="fine-tuned denoising steps; None = all")] = None
    eta: Annotated[float, Field(ge=0.0, le=1.0, description="DDIM eta of the fine-tuned steps while exploring")] = 1.0
    min_sampling_std: Annotated[float, Field(ge=0.0, le=1.0, description="exploration noise floor")] = 0.1
    min_logprob_std: Annotated[float, Field(gt=0.0, le=1.0, description="std floor in log-probabilities")] = 0.1
    denoising_gamma: Annotated[float, Field(gt=0.0, le=1.0, description="advantage discount per denoise step")] = 1.0


class AdaptiveMConfig(StrictModel):
    m_min: Annotated[int, Field(ge=1, le=1000)] = 2
    m_max: Annotated[int, Field(ge=1, le=1000)] = 30
    m_ref: Annotated[float, Field(gt=0.0, le=1000.0, description="m for orthogonal gradients of equal norm")] = 10.0
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    every_k: Annotated[int, Field(ge=1, le=10_000, description="actor steps between gradient measurements")] = 10

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveMConfig:
        if self.m_min > self.m_max:
            raise ValueError(f"m_min={self.m_min} must be <= m_max={self.m_max}")
        return self


class InrilConfig(StrictModel):
    """The IN-RIL side: how often IL steps in, on what, and how the two objectives are kept apart."""

    il_every: Annotated[int | Literal["auto"], Field(description="m: RL steps per IL step; 0 = RL only")] = 5
    il_steps: Annotated[int, Field(ge=1, le=100, description="IL steps each time IL steps in")] = 1
    separation: Literal["none", "pcgrad", "orthogonal", "residual"] = "pcgrad"
    # IL's step size follows RL's: il_lr = il_lr_ratio * the current actor lr (the paper's alpha_IL / alpha_RL);
    # null: a fixed il_lr
    il_lr: Annotated[float, Field(gt=0.0, le=1.0, description="IL lr when il_lr_ratio is null")] = 1e-5
    il_lr_ratio: Annotated[float | None, Field(gt=0.0, le=100.0, description="IL lr / RL lr")] = 1.0
    # "fresh": project against the other objective's gradient at the current weights (one extra backward per
    # step: an IL batch for an RL step, the last RL minibatch for an IL step); "ema": its bias-corrected EMA
    reference: Literal["fresh", "ema"] = "fresh"
    # baselines: bc_coef > 0 adds bc_coef * IL loss to every RL step (BC-regularised RL, with il_every 0);
    # apply_rl false computes the RL steps but never applies them (the IL-only control)
    bc_coef: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    apply_rl: bool = True
    il_batch_size: Annotated[int, Field(ge=1, le=65536)] = 256
    reference_ema_decay: Annotated[float, Field(ge=0.0, lt=1.0, description="EMA of the other gradient")] = 0.9
    adaptive: AdaptiveMConfig = AdaptiveMConfig()

    @field_validator("il_every")
    @classmethod
    def _m_nonnegative(cls, m: int | str) -> int | str:
        if isinstance(m, int) and m < 0:
            raise ValueError(f"il_every must be >= 0 or 'auto', got {m}")
        return m


class GuardConfig(StrictModel):
    """Bounds on how much one policy update may change the commanded actions (raw units, per step of a chunk)."""

    enabled: bool = True
    # lift's success changes under 0.5-1 mm changes of the mean action (review D2); 1 cm never bound
    max_translation: Annotated[float, Field(gt=0, description="largest change of per-step EE translation [m]")] = 0.002
    max_rotation: Annotated[float, Field(gt=0, description="largest change of per-step rotation vector [rad]")] = 0.02
    max_gripper: Annotated[float, Field(gt=0, description="largest change of the gripper command [0, 1]")] = 0.5
    statistic: Literal["max", "p95"] = "max"
    mode: Literal["scale", "reject"] = "scale"
    min_alpha: Annotated[float, Field(ge=0, le=1, description="a smaller step size than this rejects")] = 0.05
    bisection_steps: Annotated[int, Field(ge=1, le=30)] = 8
    observations: Annotated[int, Field(ge=1, le=100_000, description="recent observations compared")] = 256
    seed: int = 0  # of the generator both policies sample with


class AsyncLearnerConfig(StrictModel):
    """The server's asynchronous off-policy learner (actor-learner split; docs/protocol.md)."""

    publish_every: Annotated[int, Field(ge=1, description="updates between published weight versions")] = 20
    checkpoint_every: Annotated[int, Field(ge=1, description="published versions between checkpoints")] = 10
    # SERL's learner trains as fast as it can; a cap keeps it from over-fitting a small buffer while robots reset
    max_utd: Annotated[float, Field(ge=0, description="most updates per env step received; 0: no cap")] = 0.0
    flush_every: Annotated[int, Field(ge=1, le=100_000, description="transitions per replay record, at most")] = 256


class OffPolicyConfig(StrictModel):
    """The off-policy base (`algo: sac | residual-sac | idql`, docs/inril.md "Off-policy"): replay, critics, ratio.

    A transition is one executed chunk (reward summed over its steps, discount `gamma` per chunk). Episode ends: a
    success or a safety stop is terminal (no bootstrap); the time limit is a truncation and IS bootstrapped: Q(s, a)
    does not depend on how many steps are left in this episode, the state after the limit still has its value."""

    gamma: Annotated[float, Field(ge=0.0, le=1.0, description="discount per transition (executed chunk)")] = 0.99
    batch_size: Annotated[int, Field(ge=2, le=65536, description="transitions per critic/actor update")] = 256
    utd: Annotated[float, Field(gt=0.0, le=100.0, description="critic updates per env transition (UTD)")] = 1.0
    actor_every: Annotated[int, Field(ge=1, le=100, description="critic updates per actor optimiser step")] = 4
    # RLPD's symmetric sampling: this fraction of every RL batch comes from the demonstrations (their recorded
    # rewards); 0 keeps demonstrations on the IL side only (IN-RIL: demos need no reward labels)
    demo_fraction: Annotated[float, Field(ge=0.0, lt=1.0, description="demo share of each RL batch")] = 0.5
    learning_starts: Annotated[int, Field(ge=0, description="online transitions before the first update")] = 500
    critic_warmup_updates: Annotated[int, Field(ge=0, description="critic-only updates before the actor's")] = 1000
    episodes_per_iteration: Annotated[int, Field(ge=1, le=1000, description="episodes between update rounds")] = 2
    eval_every_env_steps: Annotated[int, Field(ge=0, description="env steps between evaluations; 0: end")] = 2000
    capacity: Annotated[int, Field(ge=1000, le=10_000_000, description="online replay capacity")] = 200_000
    critic_hidden: tuple[int, ...] = (128, 128)  # 256 wide: ~3x the CPU per update (measured)
    critic_ensemble: Annotated[int, Field(ge=1, le=64, description="Q networks (RLPD: 10; 4 fits 2 CPU cores)")] = 4
    critic_subsample: Annotated[int, Field(ge=1, le=64, description="random members for the target min (2)")] = 2
    critic_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 3e-4
    # Adam moves every weight by ~lr per step, and lift's success flips under sub-mm action changes: 1e-4, 3e-5 and
    # 5e-6 took the BC lift policy's training success from ~50% to 0% within a few hundred actor steps (at 5e-6, 100
    # actor steps moved lift's mean action by 0.5 mm, max 3 mm; 400 steps: 1.9 mm, max 14 mm; measured, docs/inril.md)
    actor_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-6
    # SAC: every actor step's loss adds sac_bc_coef x the IL loss (NLL of demonstrated chunks, std held fixed) on a
    # demonstration batch. Without it lift collapsed in every configuration, at any actor lr: the critic, fitted to
    # a few thousand transitions, learnt dQ/da_z > 0 wherever the gripper closes or holds (lifting sooner pays),
    # grasping included, and the actor followed it up off the cube (measured, docs/inril.md). 0: plain RLPD
    sac_bc_coef: Annotated[float, Field(ge=0.0, le=100.0, description="BC anchor in SAC's actor loss")] = 0.1
    # residual-sac: lr of the residual head (the base keeps the BC network's weights; IN-RIL's IL steps train it at
    # il_lr_ratio x this). On lift at 10k env steps 3e-5 gave >= 90% held-out in 9 of 10 seeds, 3e-4 (ResiP's) in 4
    # of 5; a lower lr does not remove the early dip (docs/inril.md "Residual RLPD")
    residual_actor_lr: Annotated[float, Field(gt=0.0, le=1.0, description="residual-sac: lr of the residual")] = 3e-5
    # residual-sac: the entropy of the squashed residual (tanh log-determinant in log pi: the bonus keeps the residual
    # off its bound and exploring) instead of the pre-squash Gaussian's, blind to a residual pinned at its bound. On
    # lift 88-95% held-out in 10 of 10 seeds, against 0-100% (one seed stuck at 0%) without it
    residual_squashed_entropy: bool = True
    tau: Annotated[float, Field(gt=0.0, le=1.0, description="Polyak rate of the target critic")] = 0.005
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 1.0
    # SAC: the entropy temperature is tuned so the policy's entropy stays at target_entropy (per action dimension of
    # the executed chunk; None: that of a Gaussian at finetune.exploration_log_std, ~ -2.1 per dimension at -3.5: a
    # BC policy explores at that std, the SAC default -1 per dimension is noise lift's success cannot survive)
    init_temperature: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-2
    temperature_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 3e-4
    target_entropy: Annotated[float | None, Field(ge=-20.0, le=5.0, description="per dimension")] = None
    backup_entropy: bool = False  # SERL's default: the target carries no entropy term (sparse 0/1 rewards)
    # A time-limit end is bootstrapped (Q does not see the steps left). False treats it as terminal, as the PPO path
    # does by default: time is not observed and evaluation uses the same limit, and without it a failed episode that
    # times out is never grounded at 0 (review D1); on lift the bootstrapped critic's mean Q rose from 0.06 to 0.4
    # while training success fell to 0 (docs/inril.md)
    time_limit_bootstrap: bool = True
    # IDQL: N candidates from the diffusion actor, chosen by the critics (explore: eta-1 candidates drawn by their
    # expectile weights; acting = eval and the deployed checkpoint: idql_act_eta candidates chosen by idql_act_rule,
    # see IDQLActConfig); the value net is fitted by expectile regression on the replay's actions
    idql_candidates: Annotated[int, Field(ge=1, le=256)] = 16
    idql_expectile: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.7
    idql_act_eta: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    idql_act_rule: IDQLRule = "expectile"

    @model_validator(mode="after")
    def _subset_fits(self) -> OffPolicyConfig:
        if self.critic_subsample > self.critic_ensemble:
            raise ValueError(
                f"finetune.offpolicy.critic_subsample={self.critic_subsample} must be <= "
                f"critic_ensemble={self.critic_ensemble}"
            )
        return self


OFF_POLICY_ALGOS = ("sac", "residual-sac", "idql")
RESIDUAL_ALGOS = ("residual-ppo", "residual-sac")


class FinetuneConfig(StrictModel):
    algo: Literal["ppo", "dppo", "residual-ppo", "sac", "residual-sac", "idql"] = "ppo"
    env_steps: Annotated[int, Field(ge=1, le=100_000_000, description="budget of executed control steps")] = 60_000
    # lift: 24 episodes ~ 1,500 transitions ~ 10 successes -> 12 minibatches of 128 x 5 epochs = 60 actor steps
    episodes_per_iteration: Annotated[int, Field(ge=1, le=10_000, description="episodes per RL batch")] = 24
    num_envs: Annotated[int, Field(ge=1, le=256, description="parallel simulated envs")] = 2
    subprocess_envs: bool = True
    # BC fits the std to the demonstrations' spread (log-std ~ -1 for noisy lift demos); sampling with it, the
    # pre-trained lift policy succeeds 0/32 times (deterministic: 50%), so RL sees no reward. Measured success of the
    # exploring policy at log-std -1.5 / -2.5 / -4: 0% / 6% / 38% (docs/inril.md).
    exploration_log_std: Annotated[
        float | None, Field(ge=-6.0, le=1.0, description="reset a Gaussian policy's log-std at the start")
    ] = -3.5
    # the log-std then trains (PPO's gradient) in its own Adam group, projected into [min, max] after every step
    min_log_std: Annotated[float, Field(ge=-10.0, le=2.0, description="exploration floor (log-std)")] = -5.0
    max_log_std: Annotated[float, Field(ge=-10.0, le=2.0, description="exploration ceiling (log-std)")] = -2.5
    log_std_lr: Annotated[float, Field(ge=0.0, le=1.0, description="lr of the log-std; 0 freezes it")] = 3e-3
    eval_every: Annotated[int, Field(ge=0, description="iterations between evaluations; 0: start and end only")] = 2
    eval_episodes: Annotated[int, Field(ge=1, le=10_000)] = 32
    checkpoint_every: Annotated[int, Field(ge=1, description="iterations between checkpoints")] = 5
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    num_threads: Annotated[int, Field(ge=0, le=256)] = 1
    ppo: PPOConfig = PPOConfig()
    dppo: DPPOConfig = DPPOConfig()
    residual: ResidualRLConfig = ResidualRLConfig()
    inril: InrilConfig = InrilConfig()
    guard: GuardConfig = GuardConfig()
    async_learner: AsyncLearnerConfig = AsyncLearnerConfig()
    offpolicy: OffPolicyConfig = OffPolicyConfig()

    @model_validator(mode="after")
    def _std_bounds_ordered(self) -> FinetuneConfig:
        if self.min_log_std > self.max_log_std:
            raise ValueError(f"finetune.min_log_std={self.min_log_std} must be <= max_log_std={self.max_log_std}")
        e = self.exploration_log_std
        if e is not None and not self.min_log_std <= e <= self.max_log_std:
            raise ValueError(
                f"finetune.exploration_log_std={e} must lie in [min_log_std, max_log_std] = "
                f"[{self.min_log_std}, {self.max_log_std}]"
            )
        return self

    @model_validator(mode="after")
    def _separation_fits_algo(self) -> FinetuneConfig:
        if (self.inril.separation == "residual") != (self.algo in RESIDUAL_ALGOS) and self.inril.il_every != 0:
            raise ValueError(
                "inril.separation=residual (network separation) goes with algo=residual-ppo or residual-sac and only "
                f"with it (got algo={self.algo!r}, separation={self.inril.separation!r})"
            )
        return self


# -------------------------------------------------------------------------------------------------------- top level
class RunConfig(StrictModel):
    seed: Annotated[int, Field(ge=0)] = 0
    robot: RobotConfig = RobotConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)
    task: TaskConfig = TaskConfig()
    markers: MarkersConfig = MarkersConfig()
    reward: RewardConfig = RewardConfig()
    cell: CellConfig = CellConfig()
    safety: SafetyLimits = SafetyLimits()
    randomization: RandomizationConfig = RandomizationConfig()
    teleop: TeleopConfig = TeleopConfig()
    policy: PolicyConfig = PolicyConfig()
    train: TrainConfig = TrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()

    @model_validator(mode="before")
    @classmethod
    def _reward_source(cls, data: Any) -> Any:
        """Fill in reward.source from the cell; read a configuration written before `cell.success / detector /
        threshold` moved to `reward` (its default values are dropped; any other is refused, naming the new key)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        cell = data.get("cell")
        reward = dict(data.get("reward") or {})
        mode = cell if isinstance(cell, str) else (cell or {}).get("mode", "sim")
        if isinstance(cell, dict) and set(cell) & set(_MOVED_CELL_KEYS):
            moved = {k: cell[k] for k in _MOVED_CELL_KEYS if k in cell}
            changed = [k for k, v in moved.items() if v != _MOVED_CELL_DEFAULTS[k]]
            if changed:
                raise ValueError(
                    "; ".join(f"cell.{k} moved to {_MOVED_CELL_KEYS[k]}" for k in changed)
                    + " (one place for where success and reward come from: docs/real_like.md)"
                )
            data["cell"] = {k: v for k, v in cell.items() if k not in _MOVED_CELL_KEYS}
            if mode == "real-like" and reward.get("source") == "sim":  # then the cell's operator decided
                reward["source"] = "operator"
        if reward.get("source") is None:
            reward["source"] = "operator" if mode == "real-like" else "sim"
        data["reward"] = reward
        return data

    @model_validator(mode="after")
    def _reward_fits_the_cell(self) -> RunConfig:
        if self.cell.mode == "real-like" and self.reward.source == "sim":
            raise ValueError(
                "cell=real-like: reward.source=sim reads the simulator's success, which a real cell does not have; "
                "use reward.source=operator (scripted in simulation, the keys on a robot) or reward.source=detector"
            )
        return self

    @model_validator(mode="after")
    def _steps_fit_the_arm(self) -> RunConfig:
        """On a Franka, the per-step caps must be reachable at the configured dynamics factor: a reference that
        moves faster than the arm may winds up ahead of it (issue 14). Refused, naming the fields."""
        if self.robot.kind != "franka":
            return self
        factor, hz, s = self.robot.franka.relative_dynamics_factor, self.robot.control_hz, self.safety
        speed, rot_speed = factor * FRANKA_MAX_SPEED, factor * FRANKA_MAX_ROT_SPEED
        problems = []
        if min(s.max_step * hz, s.max_ee_speed) > speed + 1e-9:
            problems.append(
                f"safety.max_step x robot.control_hz = {s.max_step * hz:.3g} m/s (safety.max_ee_speed "
                f"{s.max_ee_speed}) exceeds the arm's {speed:.3g} m/s at "
                f"robot.franka.relative_dynamics_factor {factor}"
            )
        if s.max_rot_step * hz > rot_speed + 1e-9:
            problems.append(
                f"safety.max_rot_step x robot.control_hz = {s.max_rot_step * hz:.3g} rad/s exceeds the "
                f"arm's {rot_speed:.3g} rad/s at robot.franka.relative_dynamics_factor {factor} (lower "
                f"safety.max_rot_step to {rot_speed / hz:.4g})"
            )
        f = self.robot.franka
        force = f.translational_stiffness * f.translational_error_clip
        if f.control == "impedance" and force * math.sqrt(3) > s.max_contact_force:
            problems.append(
                f"robot.franka.translational_stiffness x translational_error_clip = {force:.3g} N per "
                f"axis ({force * math.sqrt(3):.3g} N over three axes) exceeds safety.max_contact_force "
                f"{s.max_contact_force} N"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _camera_names_unique(self) -> RunConfig:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera names must be unique, repeated: {dupes}")
        return self


# ------------------------------------------------------------------------------------------------------- loading
def presets_dir() -> Path:
    return Path(str(resources.files("inril_robot.config") / "presets"))


def list_presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (presets_dir() / kind).glob("*.yaml"))


def preset_path(kind: str, name: str) -> Path:
    if kind not in PRESET_KINDS:
        raise ConfigError(f"unknown preset kind {kind!r}; expected one of {PRESET_KINDS}")
    path = presets_dir() / kind / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no {kind[:-1]} preset named {name!r}; available: {', '.join(list_presets(kind)) or 'none'}")
    return path


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases: a configuration never needs `*ref`, and aliases are how a kilobyte of YAML
    ("billion laughs") expands into minutes of CPU and gigabytes of memory."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed in configuration files", event.start_mark
            )
        return super().compose_node(parent, index)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def safe_yaml(text: str) -> Any:
    """`yaml.safe_load` that refuses aliases (see `_NoAliasLoader`)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass: no arbitrary objects


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = safe_yaml(Path(path).read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"safety.max_step=0.01"`` -> (["safety", "max_step"], 0.01). Values are parsed as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like dotted.key=value (e.g. safety.max_step=0.01)")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {e}") from e
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, path[: i + 1])]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[: i + 1])} is a value, not a section")
    if isinstance(node, list):
        node[_list_index(node, path[-1], path)] = value
    else:
        node[path[-1]] = value


def _list_index(node: list[Any], part: str, path: list[str]) -> int:
    # Lists of named items (cameras) are addressed by name: cameras.front.width=224
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    if part.isdigit() and int(part) < len(node):
        return int(part)
    raise ConfigError(f"override {'.'.join(path)}: no item {part!r} in {'.'.join(path[:-1]) or 'list'}")


def load_config(
    robot: str | None = None,
    cameras: str | None = None,
    task: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    algo: str | None = None,
) -> RunConfig:
    data: dict[str, Any] = {}
    for kind, name in (("robots", robot), ("cameras", cameras), ("tasks", task), ("algos", algo)):
        if name:
            data = deep_merge(data, read_yaml(preset_path(kind, name)))
    if config_file is not None:
        data = deep_merge(data, read_yaml(config_file))
    for text in overrides:
        path, value = parse_override(text)
        apply_override(data, path, value)
    return validate_config(data)


def validate_config(data: dict[str, Any], model: type[BaseModel] = RunConfig) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model)) from None


def to_yaml(cfg: BaseModel) -> str:
    return yaml.dump(cfg.model_dump(mode="json"), Dumper=_NoAliasDumper, sort_keys=False)
