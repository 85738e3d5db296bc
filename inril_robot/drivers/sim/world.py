"""The MuJoCo world: FR3 + Franka Hand on a table, the task's objects, cameras, and a differential-IK controller.

The arm model is franky-sim's `assets/fr3.xml` (an installed package's file, never downloaded). Its joints are driven
by position servos; each control step solves a damped-least-squares IK for the commanded TCP pose (a few Newton
iterations on a scratch MjData, kinematics only) with a null-space pull towards the home posture, then runs
`substeps = 1 / (control_hz * timestep)` physics steps in one `mj_step` call. Gravity is compensated on the arm
bodies, as libfranka does on the real robot.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco
import numpy as np

from inril_robot.config import CalibrationBoardConfig, CameraConfig, RobotConfig
from inril_robot.core.errors import InrilError
from inril_robot.core.geometry import matrix_to_quat, quat_to_matrix, rotation_error
from inril_robot.hardware import CameraIntrinsics
from inril_robot.hardware.calibration_file import capture_size
from inril_robot.hardware.scene import TABLE_TOP_Z, Fiducial, ObjectPose, Objects, SceneObject

ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
HAND_BODIES = ("hand", "left_finger", "right_finger")
TCP_OFFSET = 0.1034  # flange -> fingertip centre along the hand's z axis (Franka Hand)
GRIPPER_CTRL_OPEN = 255.0  # the model's hand actuator: 255 = open (0.08 m), 0 = closed
MAX_GRIPPER_WIDTH = 0.08
GRIPPER_STIFFNESS = 1000.0  # [N/m] on the finger tendon: ~25 N on a 5 cm object, inside the Franka Hand's 70 N
GRIPPER_DAMPING = 20.0
TABLE_HALF = (0.65, 0.6, 0.025)
TABLE_CENTER_X = 0.35


class SimModelError(RuntimeError, InrilError):
    """The Franka model package is missing or broken."""


def fr3_model_path() -> Path:
    spec = importlib.util.find_spec("franky_sim")
    if spec is None or not spec.submodule_search_locations:
        raise SimModelError(
            "the simulated Franka needs the FR3 model shipped by franky-sim: pip install 'inril-robot[sim]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "fr3.xml"
    if not path.is_file():
        raise SimModelError(f"franky-sim is installed but {path} is missing; reinstall franky-sim==1.0.4")
    return path


def look_at_xyaxes(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """MuJoCo camera xyaxes for a camera at `pos` looking at `target` (cameras look along their -z axis)."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-6:  # looking straight along `up`: any perpendicular will do
        right = np.cross(forward, [1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    return np.concatenate([right, cam_up])


def quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return np.array([q[1], q[2], q[3], q[0]])


def quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return np.array([q[3], q[0], q[1], q[2]])


BOARD_THICKNESS = 0.002
BOARD_SITE = "calibration_board"  # its frame is the board frame of inril_robot.vision.board (OpenCV's convention)
BOARD_PX_PER_SQUARE = 64


def default_board_pose(board: CalibrationBoardConfig) -> tuple[np.ndarray, np.ndarray]:
    """Board frame (position, rotation matrix) in its parent's frame when the config does not place it.

    world: face up on the table, centred under the home TCP; hand: 10 cm in front of and below the TCP (tool x, z)
    (towards a camera in front of the robot), tilted 50 degrees from the tool axis so that the front camera sees it.
    """
    w, h = board.squares_x * board.square_length, board.squares_y * board.square_length
    if board.mount == "world":
        rot = np.diag([1.0, -1.0, -1.0])  # board z (into the board) points down: the face looks up
        centre = np.array([0.45, 0.0, TABLE_TOP_Z + BOARD_THICKNESS])
    else:
        tilt = np.radians(50.0)
        x = np.array([0.0, -1.0, 0.0])
        z = np.array([-np.sin(tilt), 0.0, np.cos(tilt)])
        rot = np.column_stack([x, np.cross(z, x), z])
        centre = np.array([0.10, 0.0, 0.10])
    return centre - rot @ np.array([w / 2, h / 2, 0.0]), rot


def add_printed_plate(
    spec: mujoco.MjSpec,
    parent: mujoco.MjsBody,
    name: str,
    image: np.ndarray,
    half: tuple[float, float],
    thickness: float,
    pos: np.ndarray,
    rot: np.ndarray,
) -> None:
    """A visual-only (massless, non-colliding) thin box showing the greyscale `image` on its +z face, with image
    row 0 at +y and column 0 at -x; the box's frame is (`pos`, `rot`) in `parent`'s frame."""
    tex = spec.add_texture(
        name=name, type=mujoco.mjtTexture.mjTEXTURE_2D, width=image.shape[1], height=image.shape[0], nchannel=3
    )
    tex.data = np.repeat(image[:, :, None], 3, axis=2).tobytes()
    mat = spec.add_material(name=name, texuniform=False, texrepeat=[1, 1], specular=0.0, shininess=0.0)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = name
    geom = parent.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[*half, thickness / 2],
        pos=list(pos),
        quat=list(quat_xyzw_to_wxyz(matrix_to_quat(rot))),
        material=name,
        rgba=[1, 1, 1, 1],
        contype=0,
        conaffinity=0,
        group=1,
        mass=0.0,
    )
    geom.density = 0.0


MARKER_THICKNESS = 0.0005  # printed label on the face: visual only, just proud of the surface


def add_marker(spec: mujoco.MjSpec, body: mujoco.MjsBody, fiducial: Fiducial) -> None:
    """The fiducial (quiet zone included) printed on `body` in its frame: the plate's +z face shows the texture
    with row 0 at +y, the marker frame's convention (x right, y up as printed, z out of the face)."""
    from inril_robot.vision.markers import marker_image, printed_side

    rot = quat_to_matrix(np.asarray(fiducial.quat, float))
    half = printed_side(fiducial) / 2
    pos = np.asarray(fiducial.pos) + rot @ [0.0, 0.0, MARKER_THICKNESS / 2]
    image = marker_image(fiducial.dictionary, fiducial.marker_id)
    add_printed_plate(spec, body, f"marker_{fiducial.marker_id}", image, (half, half), MARKER_THICKNESS, pos, rot)


def set_intrinsics(camera: mujoco.MjsCamera, k: CameraIntrinsics) -> None:
    """Render with the pinhole `k` (OpenCV convention) instead of a centred fovy. MuJoCo's principal point is the
    offset of the image centre from the optical axis, measured the other way round: (w-1)/2 - cx, (h-1)/2 - cy."""
    camera.resolution = [k.width, k.height]
    camera.sensor_size = [float(k.width), float(k.height)]  # sensor units = pixels
    camera.focal_pixel = [k.fx, k.fy]
    camera.principal_pixel = [(k.width - 1) / 2 - k.cx, (k.height - 1) / 2 - k.cy]


def add_calibration_board(spec: mujoco.MjSpec, board: CalibrationBoardConfig) -> None:
    """A visual-only (massless, non-colliding) ChArUco board and a site at its board frame (the ground truth)."""
    from inril_robot.vision.board import BoardSpec, board_image

    bspec = BoardSpec(board.squares_x, board.squares_y, board.square_length, board.marker_length, board.dictionary)
    if board.pos is not None and board.quat is not None:
        pos, rot = np.asarray(board.pos, float), quat_to_matrix(np.asarray(board.quat, float))
    else:
        pos, rot = default_board_pose(board)
    if board.mount == "hand":
        parent, pos = spec.body("hand"), pos + np.array([0.0, 0.0, TCP_OFFSET])  # TCP frame -> hand body frame
    else:
        parent = spec.worldbody
    half = (board.squares_x * board.square_length / 2, board.squares_y * board.square_length / 2)
    # The box's +z face shows the texture with image row 0 at +y: flip y and z to get the board frame
    # (x right, y down the printed rows, z into the board). The face sits in the board frame's z = 0 plane.
    flip = np.diag([1.0, -1.0, -1.0])
    geom_pos = pos + rot @ np.array([half[0], half[1], BOARD_THICKNESS / 2])
    img = board_image(bspec, BOARD_PX_PER_SQUARE)
    add_printed_plate(spec, parent, BOARD_SITE, img, half, BOARD_THICKNESS, geom_pos, rot @ flip)
    parent.add_site(
        name=BOARD_SITE,
        pos=list(pos),
        quat=list(quat_xyzw_to_wxyz(matrix_to_quat(rot))),
        size=[0.005] * 3,
        rgba=[0, 0, 0, 0],
    )


class SimWorld:
    """Physics, kinematics and rendering state of one simulated episode; owned by `SimRobot`."""

    def __init__(
        self,
        robot_cfg: RobotConfig,
        objects: list[SceneObject] = (),  # type: ignore[assignment]
        cameras: list[CameraConfig] = (),  # type: ignore[assignment]
    ) -> None:
        self.cfg = robot_cfg
        self.objects = list(objects)
        self.camera_cfgs = [c for c in cameras if c.kind == "sim"]
        self.model = self._build(robot_cfg, self.objects, self.camera_cfgs).compile()
        self.data = mujoco.MjData(self.model)
        self._ik = mujoco.MjData(self.model)
        m = self.model
        period = 1.0 / robot_cfg.control_hz
        self.substeps = max(1, round(period / m.opt.timestep))
        self.nominal_substeps = self.substeps  # issue 10: control-rate jitter varies `substeps` per episode
        #: issue 10: one-sigma (position [m], rotation [rad]) of each calibrated camera, for pose jitter
        self.camera_sigmas: dict[str, tuple[float, float]] = {}
        #: issue 19: the render size of each camera, and the pinhole model of those with a calibration file
        self.camera_capture: dict[str, tuple[int, int]] = {}
        self.camera_intrinsics: dict[str, CameraIntrinsics] = {}
        for cam in self.camera_cfgs:
            self.camera_capture[cam.name] = capture_size(cam)
            if cam.calibration is not None:
                from inril_robot.drivers.sim.placement import sim_camera_placement

                placed = sim_camera_placement(cam)
                self.camera_sigmas[cam.name] = (placed.position_sigma, placed.rotation_sigma)
                self.camera_intrinsics[cam.name] = placed.intrinsics
        self.arm_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self.arm_dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in ARM_JOINTS])
        self.finger_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in ("finger_joint1", "finger_joint2")])
        self.joint_range = m.jnt_range[[m.joint(j).id for j in ARM_JOINTS]].copy()
        self.arm_act = np.array([m.actuator(j).id for j in ARM_JOINTS])
        self.hand_act = m.actuator("hand").id
        self.tcp_site = m.site("tcp").id
        self.hand_body_ids = {m.body(b).id for b in HAND_BODIES}
        self._hand_geom = np.isin(m.geom_bodyid, list(self.hand_body_ids))
        self.home_q = np.array(robot_cfg.home_joints, dtype=float)
        self._obj_qpos = {o.name: m.jnt_qposadr[m.body(o.name).jntadr[0]] for o in self.objects if o.movable}
        self._obj_mocap = {o.name: m.body_mocapid[m.body(o.name).id] for o in self.objects if not o.movable}
        self.nominal = {
            "geom_friction": m.geom_friction.copy(),
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
            "geom_rgba": m.geom_rgba.copy(),
            "light_diffuse": m.light_diffuse.copy(),
            "cam_pos": m.cam_pos.copy(),
            "cam_quat": m.cam_quat.copy(),
            "actuator_gainprm": m.actuator_gainprm.copy(),
            "actuator_biasprm": m.actuator_biasprm.copy(),
        }
        #: bumped whenever the scene changes other than by stepping (reset, object placement, randomisation),
        #: so cameras never serve a frame rendered before the change at the same sim time
        self.generation = 0
        self._jac_p = np.zeros((3, m.nv))
        self._jac_r = np.zeros((3, m.nv))
        self.reset_arm()

    # ------------------------------------------------------------------------------------------------ building
    @staticmethod
    def _build(cfg: RobotConfig, objects: list[SceneObject], cameras: list[CameraConfig]) -> mujoco.MjSpec:
        path = fr3_model_path()
        spec = mujoco.MjSpec.from_file(str(path))
        spec.meshdir = str(path.parent / "meshes")
        spec.option.timestep = cfg.sim.timestep
        spec.visual.quality.shadowsize = 4096 if cfg.sim.shadows else 0
        spec.visual.quality.offsamples = 4 if cfg.sim.msaa else 0
        spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
        spec.visual.headlight.diffuse = [0.4, 0.4, 0.4]
        if cameras:
            captures = [capture_size(c) for c in cameras]  # issue 19: render at the capture size
            spec.visual.global_.offwidth = max(640, *(w for w, _ in captures))
            spec.visual.global_.offheight = max(480, *(h for _, h in captures))
        for body in spec.bodies:
            if body.name.startswith("fr3_link") or body.name in HAND_BODIES:
                body.gravcomp = 1.0
        for actuator in spec.actuators:  # joint servos: scale stiffness, keep damping near-critical
            if actuator.name.startswith("fr3_joint"):
                kp = actuator.gainprm[0] * cfg.sim.joint_kp_scale
                kv = 2.0 * np.sqrt(kp * 0.6)
                actuator.gainprm[0] = kp
                actuator.biasprm[1] = -kp
                actuator.biasprm[2] = -kv
        hand = spec.actuator("hand")  # stiffer finger servo: the model's 100 N/m squeezes a 5 cm cube with 2.5 N only
        hand.gainprm[0] = GRIPPER_STIFFNESS * (MAX_GRIPPER_WIDTH / 2) / GRIPPER_CTRL_OPEN
        hand.biasprm[1] = -GRIPPER_STIFFNESS
        hand.biasprm[2] = -GRIPPER_DAMPING
        spec.body("hand").add_site(name="tcp", pos=[0, 0, TCP_OFFSET], size=[0.005] * 3, rgba=[1, 0, 0, 0.0])

        world = spec.worldbody
        table = world.add_body(name="table", pos=[TABLE_CENTER_X, 0, TABLE_TOP_Z - TABLE_HALF[2]])
        table.add_geom(
            name="table_top",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=list(TABLE_HALF),
            rgba=[0.55, 0.45, 0.35, 1.0],
            friction=[1.0, 0.005, 0.0001],
        )
        world.add_geom(
            name="floor",
            type=mujoco.mjtGeom.mjGEOM_PLANE,
            size=[3, 3, 0.1],
            pos=[0, 0, -0.75],
            rgba=[0.3, 0.3, 0.32, 1],
        )
        world.add_light(
            name="key",
            pos=[0.6, -0.6, 1.8],
            dir=[-0.1, 0.35, -1.0],
            diffuse=[0.7, 0.7, 0.7],
            castshadow=cfg.sim.shadows,
        )
        world.add_light(
            name="fill", pos=[0.4, 0.8, 1.5], dir=[0.0, -0.5, -1.0], diffuse=[0.3, 0.3, 0.3], castshadow=False
        )

        shape = {
            "box": mujoco.mjtGeom.mjGEOM_BOX,
            "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
            "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
        }
        for obj in objects:
            body = world.add_body(name=obj.name, mocap=not obj.movable, pos=[0.5, 0, 0.1])
            if obj.movable:
                body.add_freejoint(name=f"{obj.name}_free")
            total_volume = sum(np.prod(g.size) for g in obj.geoms if g.collides) or 1.0
            for i, g in enumerate(obj.geoms):
                size = list(g.size) + [0.0] * (3 - len(g.size))
                geom = body.add_geom(
                    name=f"{obj.name}_{i}",
                    type=shape[g.shape],
                    size=size,
                    pos=list(g.pos),
                    rgba=list(g.rgba),
                    friction=[obj.friction, 0.005, 0.0001],
                )
                if g.collides:
                    geom.mass = obj.mass * float(np.prod(g.size)) / total_volume
                    geom.condim = 4 if obj.movable else 3
                else:
                    geom.contype = geom.conaffinity = 0
                    geom.mass = 0.0
                    geom.group = 1
            for fiducial in obj.markers:  # issue 19: printed markers, for pose estimation from the cameras
                add_marker(spec, body, fiducial)

        for cam in cameras:
            parent = spec.body("hand") if cam.mount == "wrist" else world
            if cam.calibration is not None:  # issue 10: pose and field of view from a calibration file
                from inril_robot.drivers.sim.placement import sim_camera_placement

                placed = sim_camera_placement(cam)
                pos = placed.pos + (np.array([0.0, 0.0, TCP_OFFSET]) if cam.mount == "wrist" else 0.0)  # TCP->hand
                camera = parent.add_camera(name=cam.name, pos=list(pos), quat=list(placed.quat_wxyz))
                set_intrinsics(camera, placed.intrinsics)
                continue
            if cam.mount == "wrist":
                pos = np.array([0.075, 0.0, 0.02])
                xy = look_at_xyaxes(pos, np.array([0.0, 0.0, TCP_OFFSET + 0.08]), np.array([-1.0, 0.0, 0.0]))
            else:
                pos = np.asarray(cam.pos, float)
                xy = look_at_xyaxes(pos, np.asarray(cam.lookat, float), np.array([0.0, 0.0, 1.0]))
            camera = parent.add_camera(name=cam.name, pos=list(pos), fovy=cam.fovy_deg)
            camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
            camera.alt.xyaxes = list(xy)
        if cfg.sim.calibration_board.mount != "none":  # issue 10: a ChArUco board for calibration scenes
            add_calibration_board(spec, cfg.sim.calibration_board)
        return spec

    # ----------------------------------------------------------------------------------------------- episodes
    def reset_arm(self, q: np.ndarray | None = None) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q = self.home_q if q is None else q
        d.qpos[self.arm_qpos] = q
        d.qpos[self.finger_qpos] = MAX_GRIPPER_WIDTH / 2
        d.ctrl[self.arm_act] = q
        d.ctrl[self.hand_act] = GRIPPER_CTRL_OPEN
        mujoco.mj_forward(m, d)
        self.generation += 1

    def set_objects(self, poses: Objects) -> None:
        d = self.data
        for name, pose in poses.items():
            if name in self._obj_qpos:
                adr = self._obj_qpos[name]
                d.qpos[adr : adr + 3] = pose.pos
                d.qpos[adr + 3 : adr + 7] = quat_xyzw_to_wxyz(pose.quat)
                dof = self.model.jnt_dofadr[self.model.body(name).jntadr[0]]
                d.qvel[dof : dof + 6] = 0.0
            elif name in self._obj_mocap:
                d.mocap_pos[self._obj_mocap[name]] = pose.pos
                d.mocap_quat[self._obj_mocap[name]] = quat_xyzw_to_wxyz(pose.quat)
            else:
                raise KeyError(f"no object named {name!r} in the scene; objects: {[o.name for o in self.objects]}")
        mujoco.mj_forward(self.model, d)
        self.generation += 1

    def object_poses(self) -> Objects:
        d = self.data
        out: Objects = {}
        for name, adr in self._obj_qpos.items():
            out[name] = ObjectPose(d.qpos[adr : adr + 3].copy(), quat_wxyz_to_xyzw(d.qpos[adr + 3 : adr + 7]))
        for name, mid in self._obj_mocap.items():
            out[name] = ObjectPose(d.mocap_pos[mid].copy(), quat_wxyz_to_xyzw(d.mocap_quat[mid]))
        return out

    # ---------------------------------------------------------------------------------------------- kinematics
    def tcp_pose(self, data: mujoco.MjData | None = None) -> tuple[np.ndarray, np.ndarray]:
        d = self.data if data is None else data
        return d.site_xpos[self.tcp_site].copy(), d.site_xmat[self.tcp_site].reshape(3, 3).copy()

    def solve_ik(self, target_pos: np.ndarray, target_rot: np.ndarray) -> np.ndarray:
        """Joint positions that put the TCP at (target_pos, target_rot), starting from the current joints."""
        m, ik = self.model, self._ik
        ik.qpos[:] = self.data.qpos
        q = ik.qpos[self.arm_qpos].copy()
        lam2 = self.cfg.sim.ik_damping**2
        err = np.zeros(6)
        for _ in range(self.cfg.sim.ik_iterations):
            ik.qpos[self.arm_qpos] = q
            mujoco.mj_kinematics(m, ik)
            mujoco.mj_comPos(m, ik)
            pos, rot = self.tcp_pose(ik)
            err[:3] = target_pos - pos
            err[3:] = rotation_error(target_rot, rot)
            mujoco.mj_jacSite(m, ik, self._jac_p, self._jac_r, self.tcp_site)
            jac = np.vstack([self._jac_p[:, self.arm_dof], self._jac_r[:, self.arm_dof]])  # (6, 7)
            jjt = jac @ jac.T + lam2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            # null-space pull to the home posture keeps the elbow from drifting over long episodes
            pinv = jac.T @ np.linalg.solve(jjt, np.eye(6))
            dq += (np.eye(7) - pinv @ jac) @ (self.cfg.sim.nullspace_gain * (self.home_q - q))
            q = np.clip(q + dq, self.joint_range[:, 0], self.joint_range[:, 1])
        return q

    # ----------------------------------------------------------------------------------------------- control
    def command(self, joint_targets: np.ndarray, gripper: float) -> None:
        d = self.data
        d.ctrl[self.arm_act] = joint_targets
        d.ctrl[self.hand_act] = GRIPPER_CTRL_OPEN * (1.0 - float(np.clip(gripper, 0.0, 1.0)))

    def step_control_period(self) -> None:
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    def gripper_width(self) -> float:
        return float(self.data.qpos[self.finger_qpos].sum())

    def tcp_velocity(self) -> np.ndarray:
        vel = np.zeros(6)  # mj_objectVelocity gives [angular, linear]; RobotState wants [linear, angular]
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self.tcp_site, vel, 0)
        return np.concatenate([vel[3:], vel[:3]])

    def tcp_external_wrench(self) -> np.ndarray:
        """Sum of contact wrenches on the hand and fingers from everything else, at the TCP, base frame."""
        m, d = self.model, self.data
        wrench = np.zeros(6)
        if d.ncon == 0:
            return wrench
        geoms = d.contact.geom  # (ncon, 2)
        on_hand = self._hand_geom[geoms]
        relevant = np.flatnonzero(on_hand[:, 0] != on_hand[:, 1])
        if relevant.size == 0:
            return wrench
        tcp = d.site_xpos[self.tcp_site]
        local = np.zeros(6)
        frames = d.contact.frame.reshape(-1, 3, 3)
        for i in relevant:
            mujoco.mj_contactForce(m, d, int(i), local)
            force = frames[i].T @ local[:3]  # force of geom1 on geom2, world frame
            if on_hand[i, 0]:
                force = -force
            r = d.contact.pos[i] - tcp
            wrench[:3] += force
            wrench[3:] += (
                r[1] * force[2] - r[2] * force[1],
                r[2] * force[0] - r[0] * force[2],
                r[0] * force[1] - r[1] * force[0],
            )
        return wrench
