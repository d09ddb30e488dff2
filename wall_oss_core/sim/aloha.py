"""The ALOHA bimanual robot (two ViperX-300s) in MuJoCo, from the `gym_aloha` package's assets.

The MJCF files are used where gym-aloha installs them (a dependency, never copied). At load time this
module adds what the project needs on top, with `mujoco.MjSpec`: one camera on each gripper (the
Wall-OSS checkpoints expect a face camera and two wrist cameras), a tool-centre-point site between
the fingertips of each gripper (the URDF's `*_tcp` frame), and, for the language-selected tasks, a
second (green) cube beside the red one.

The robot is driven like ros2_control position controllers: a 14-value command in the robot config's
`command_joints` order (per arm 6 joints, then the gripper opening = the left finger's slide, which
the right finger mirrors) sets the position actuators; physics steps at the MJCF timestep.

Rendering is offscreen (`MUJOCO_GL=egl` unless the caller chose a backend) with shadows, reflections
and multisampling off: MuJoCo's defaults (4096² shadow maps, reflections, 4× multisampling) cost
110–140 ms per frame in software GL, these settings ~16 ms at 224×224 (bench/bench_sim.py).
"""
from __future__ import annotations

import importlib.util
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco creates a GL context; headless machines have EGL
import mujoco  # noqa: E402

from wall_oss_core.robot.config import RobotConfig  # noqa: E402

# MJCF joints of one ViperX-300s in the order of a config arm's `joints`; prefix "vx300s_<arm>/".
MJCF_ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
MJCF_GRIPPER_JOINT = "left_finger"    # the commanded gripper opening
MJCF_MIRROR_FINGER = "right_finger"   # driven to minus the opening
# Tool centre point in the gripper_link frame: between the finger pads (the pads span x 0.064–0.154).
TCP_OFFSET = np.array([0.13, 0.0, 0.0])
# Wrist cameras in the gripper_link frame: above the gripper, looking forward and 40° down at the fingers.
WRIST_CAMERA_POS = np.array([0.04, 0.0, 0.08])
WRIST_CAMERA_PITCH = np.deg2rad(40.0)
WRIST_CAMERA_FOVY = 75.0
# Robot-config camera name → MJCF camera (the scene's top camera is the face view).
CAMERAS = {"face_view": "top", "left_wrist_view": "left_wrist_view", "right_wrist_view": "right_wrist_view"}


@dataclass(frozen=True)
class ObjectRegion:
    """A free body placed uniformly in an axis-aligned box (x, y; z fixed) at reset, upright."""

    body: str
    low: tuple[float, float, float]
    high: tuple[float, float, float]


@dataclass(frozen=True)
class SceneSpec:
    """An ALOHA scene: a gym-aloha MJCF file, objects added to it, and where reset places them.

    With `shuffle_regions`, the regions (disjoint boxes) are dealt to the bodies in a random order, so
    the objects never overlap and either may be on either side."""

    mjcf: str
    regions: tuple[ObjectRegion, ...]
    add_green_cube: bool = False
    shuffle_regions: bool = False


# x, y ranges of gym_aloha.utils.sample_box_pose / sample_insertion_pose (the ACT benchmark's); z is
# where each object rests on the table (gym-aloha drops them from 5 cm), so the first observation
# already shows the objects where they stay.
SCENES: dict[str, SceneSpec] = {
    "transfer_cube": SceneSpec("bimanual_viperx_transfer_cube.xml",
                               (ObjectRegion("box", (0.0, 0.4, 0.02), (0.2, 0.6, 0.02)),)),
    "insertion": SceneSpec("bimanual_viperx_insertion.xml",
                           (ObjectRegion("peg", (0.1, 0.4, 0.01), (0.2, 0.6, 0.01)),
                            ObjectRegion("socket", (-0.2, 0.4, 0.022), (-0.1, 0.6, 0.022)))),
    # the red and the green cube in the right arm's half, one in the near and one in the far strip
    "two_cubes": SceneSpec("bimanual_viperx_transfer_cube.xml",
                           (ObjectRegion("box", (0.0, 0.40, 0.02), (0.2, 0.47, 0.02)),
                            ObjectRegion("green_box", (0.0, 0.53, 0.02), (0.2, 0.60, 0.02))),
                           add_green_cube=True, shuffle_regions=True),
}


@dataclass(frozen=True)
class RenderSettings:
    """Offscreen render settings; the defaults are the fast ones (MuJoCo's own: all True)."""

    width: int = 224
    height: int = 224
    shadows: bool = False
    reflections: bool = False
    multisampling: bool = False


def gym_aloha_assets() -> Path:
    """The installed gym_aloha package's assets/ folder (found without importing gym_aloha and its
    dm_control/gymnasium dependencies)."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the ALOHA scene needs the gym-aloha package (pip install gym-aloha)")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not assets.is_dir():
        raise FileNotFoundError(f"gym_aloha is installed without its assets folder ({assets})")
    return assets


def wrist_camera_axes() -> tuple[np.ndarray, np.ndarray]:
    """x and y axes (MuJoCo camera convention: looks along -z, y up) of a wrist camera in gripper_link."""
    a = WRIST_CAMERA_PITCH
    return np.array([0.0, -1.0, 0.0]), np.array([np.sin(a), 0.0, np.cos(a)])


def build_model(scene: str) -> mujoco.MjModel:
    """Compile an ALOHA scene with the project's wrist cameras, TCP sites and extra objects."""
    if scene not in SCENES:
        raise ValueError(f"unknown ALOHA scene {scene!r}; scenes are {sorted(SCENES)}")
    spec_info = SCENES[scene]
    spec = mujoco.MjSpec.from_file(str(gym_aloha_assets() / spec_info.mjcf))
    # the keyframe's qpos would no longer match once objects are added; reset sets the state itself
    for key in list(spec.keys):
        spec.delete(key)
    # near clipping plane (a fraction of the model extent): scene.xml's 0.1 would clip the fingers
    # 16 cm in front of the wrist cameras
    spec.visual.map.znear = 0.02
    x_axis, y_axis = wrist_camera_axes()
    for arm in ("left", "right"):
        gripper = spec.body(f"vx300s_{arm}/gripper_link")
        gripper.add_site(name=f"{arm}_tcp", pos=TCP_OFFSET, size=[0.005, 0, 0], rgba=[0, 0, 0, 0])
        camera = gripper.add_camera(name=f"{arm}_wrist_view", pos=WRIST_CAMERA_POS, fovy=WRIST_CAMERA_FOVY)
        camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
        camera.alt.xyaxes = np.concatenate([x_axis, y_axis])
    if spec_info.add_green_cube:
        # an exact copy of the red box (inertial, free joint with its friction loss, contact
        # parameters), green; the MJCF takes inertia only from geom groups 4-5, hence the copy
        source = mujoco.MjSpec.from_file(str(gym_aloha_assets() / spec_info.mjcf))
        spec.worldbody.add_frame().attach_body(source.body("box"), "green_", "")
        spec.body("green_box").pos = [0.1, 0.55, 0.02]
        geom = spec.geom("green_red_box")
        geom.name, geom.rgba = "green_box", [0.0, 1.0, 0.0, 1.0]
        spec.joint("green_red_box_joint").name = "green_box_joint"
    return spec.compile()


class AlohaSim:
    """One ALOHA scene: position-controlled arms, seeded object placement, contacts and cameras."""

    def __init__(self, robot: RobotConfig, scene: str = "transfer_cube", *, seed: int = 0,
                 render: RenderSettings = RenderSettings()):
        self.robot = robot
        self.scene = scene
        self.model = build_model(scene)
        self.data = mujoco.MjData(self.model)
        self.timestep = float(self.model.opt.timestep)
        self._map_joints(robot)
        self._regions = SCENES[scene].regions
        self._object_qpos = {r.body: self.model.jnt_qposadr[self.model.body(r.body).jntadr[0]]
                             for r in self._regions}
        self._render_settings = render
        self._renderer: mujoco.Renderer | None = None
        self.geom_names = tuple(self.model.geom(i).name for i in range(self.model.ngeom))
        self.reset(seed)

    def _map_joints(self, robot: RobotConfig) -> None:
        """Command index → MJCF qpos address and actuator, checked against the config's names."""
        qpos, dof, ctrl, mirror_qpos, mirror_ctrl, mirror_source = [], [], [], [], [], []
        actuator_of = {self.model.actuator(i).trnid[0]: i for i in range(self.model.nu)}
        for arm in robot.arms:
            if len(arm.joints) != len(MJCF_ARM_JOINTS):
                raise ValueError(f"{robot.source}: ALOHA arm {arm.name!r} needs {len(MJCF_ARM_JOINTS)} joints "
                                 f"({', '.join(MJCF_ARM_JOINTS)}), the config lists {len(arm.joints)}")
            for config_name, mjcf_name in zip(arm.joints, MJCF_ARM_JOINTS, strict=True):
                if not config_name.endswith(mjcf_name):
                    raise ValueError(f"{robot.source}: joint {config_name!r} of arm {arm.name!r} is not the "
                                     f"ViperX-300s {mjcf_name!r} joint expected at its position")
            for mjcf_name in MJCF_ARM_JOINTS + (MJCF_GRIPPER_JOINT,):
                joint = self.model.joint(f"vx300s_{arm.name}/{mjcf_name}")
                qpos.append(joint.qposadr[0])
                dof.append(joint.dofadr[0])
                ctrl.append(actuator_of[joint.id])
            mirror = self.model.joint(f"vx300s_{arm.name}/{MJCF_MIRROR_FINGER}")
            mirror_qpos.append(mirror.qposadr[0])
            mirror_ctrl.append(actuator_of[mirror.id])
            mirror_source.append(len(ctrl) - 1)
        self._qpos_index = np.array(qpos)
        self._dof_index = np.array(dof)
        self._ctrl_index = np.array(ctrl)
        self._mirror_qpos = np.array(mirror_qpos)
        self._mirror_ctrl = np.array(mirror_ctrl)
        self._mirror_source = np.array(mirror_source)
        ranges = self.model.actuator_ctrlrange
        self.command_lower = ranges[self._ctrl_index, 0].copy()
        self.command_upper = ranges[self._ctrl_index, 1].copy()

    # --- state -------------------------------------------------------------------------------------

    def reset(self, seed: int) -> None:
        """Arms at the robot's home, objects placed from `seed` (same seed → same scene), at rest."""
        mujoco.mj_resetData(self.model, self.data)
        home = np.clip(self.robot.home_positions(), self.command_lower, self.command_upper)
        self.set_state(home, self.sample_object_poses(seed))
        self.set_command(home)
        self.seed = seed

    def set_state(self, joint_positions: np.ndarray, object_poses: dict[str, np.ndarray] | None = None) -> None:
        """Place the joints (command order) and optionally objects (free-joint poses) at rest, and
        recompute positions and contacts. For resets and for constructed test states."""
        joint_positions = np.asarray(joint_positions, dtype=float)
        self.data.qpos[self._qpos_index] = joint_positions
        self.data.qpos[self._mirror_qpos] = -joint_positions[self._mirror_source]
        for body, pose in (object_poses or {}).items():
            if body not in self._object_qpos:
                raise KeyError(f"no movable object {body!r} in scene {self.scene!r}")
            self.data.qpos[self._object_qpos[body]:self._object_qpos[body] + 7] = pose
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def sample_object_poses(self, seed: int) -> dict[str, np.ndarray]:
        """Object body → free-joint pose (x, y, z, qw, qx, qy, qz), drawn from `seed` alone."""
        rng = np.random.default_rng(seed)
        regions = list(self._regions)
        bodies = [r.body for r in regions]
        if SCENES[self.scene].shuffle_regions:
            regions = [regions[i] for i in rng.permutation(len(regions))]
        return {body: np.concatenate([rng.uniform(region.low, region.high), [1.0, 0.0, 0.0, 0.0]])
                for body, region in zip(bodies, regions, strict=True)}

    @property
    def time(self) -> float:
        return float(self.data.time)

    def joint_positions(self) -> np.ndarray:
        """Positions of the robot config's command joints (gripper = opening of the left finger)."""
        return self.data.qpos[self._qpos_index].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._dof_index].copy()

    def object_poses(self) -> dict[str, np.ndarray]:
        """Object body → 4×4 pose in the world (privileged state for the expert and the scoring)."""
        poses = {}
        for body in self._object_qpos:
            b = self.model.body(body).id
            pose = np.eye(4)
            pose[:3, :3] = self.data.xmat[b].reshape(3, 3)
            pose[:3, 3] = self.data.xpos[b]
            poses[body] = pose
        return poses

    def object_sizes(self) -> dict[str, np.ndarray]:
        """Object body → full extent (x, y, z) of its first geom's box, for drawing it (rviz markers)."""
        return {body: 2.0 * self.model.geom_size[self.model.body_geomadr[self.model.body(body).id]]
                for body in self._object_qpos}

    def site_pose(self, site: str) -> np.ndarray:
        s = self.model.site(site).id
        pose = np.eye(4)
        pose[:3, :3] = self.data.site_xmat[s].reshape(3, 3)
        pose[:3, 3] = self.data.site_xpos[s]
        return pose

    def body_position(self, body: str) -> np.ndarray:
        return self.data.xpos[self.model.body(body).id].copy()

    def contacts(self) -> set[frozenset[str]]:
        """Unordered pairs of geom names in contact now."""
        names = self.geom_names
        return {frozenset((names[c.geom1], names[c.geom2])) for c in self.data.contact[:self.data.ncon]}

    # --- control -----------------------------------------------------------------------------------

    def set_command(self, command: np.ndarray) -> None:
        """Position targets in command-joint order; clipped to the actuators' ranges."""
        command = np.asarray(command, dtype=float)
        if command.shape != self._ctrl_index.shape or not np.all(np.isfinite(command)):
            raise ValueError(f"ALOHA command must be {len(self._ctrl_index)} finite values, got {command!r}")
        command = np.clip(command, self.command_lower, self.command_upper)
        self.data.ctrl[self._ctrl_index] = command
        self.data.ctrl[self._mirror_ctrl] = -command[self._mirror_source]

    def step(self, duration: float) -> None:
        """Advance physics by `duration` seconds, rounded to whole MJCF timesteps (at least one)."""
        steps = max(1, round(duration / self.timestep))
        mujoco.mj_step(self.model, self.data, nstep=steps)

    # --- cameras -----------------------------------------------------------------------------------

    def render(self, camera: str) -> np.ndarray:
        """H×W×3 uint8 RGB from a robot-config camera (face_view, left_wrist_view, right_wrist_view)."""
        if camera not in CAMERAS:
            raise KeyError(f"no ALOHA camera {camera!r}; cameras are {sorted(CAMERAS)}")
        if self._renderer is None:
            self._renderer = make_renderer(self.model, self._render_settings)
            # freed with the sim or at interpreter exit, while EGL is still there (a renderer left to
            # the garbage collector at shutdown raises EGL errors)
            self._release = weakref.finalize(self, self._renderer.close)
        self._renderer.update_scene(self.data, camera=CAMERAS[camera])
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._release()
            self._renderer = None


def make_renderer(model: mujoco.MjModel, settings: RenderSettings) -> mujoco.Renderer:
    """An offscreen renderer with the given shadow / reflection / multisampling choices."""
    if not settings.multisampling:
        model.vis.quality.offsamples = 0  # read when the offscreen buffer is created
    renderer = mujoco.Renderer(model, height=settings.height, width=settings.width)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = settings.shadows
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = settings.reflections
    return renderer


class AlohaArmDynamics:
    """sim_arm_node's joint-dynamics interface (targets in; positions, velocities out; step(dt)) over
    the MuJoCo scene, so the node stays robot-agnostic. `render_state()` is what the camera process
    needs to draw the scene: the full MuJoCo configuration (objects included)."""

    def __init__(self, sim: AlohaSim, initial: np.ndarray | None = None):
        self.sim = sim
        if initial is not None:
            sim.set_state(initial)
        self.targets = np.clip(sim.joint_positions(), sim.command_lower, sim.command_upper)
        sim.set_command(self.targets)
        self._pending = 0.0  # wall time not yet simulated (physics advances in whole MJCF timesteps)

    @property
    def positions(self) -> np.ndarray:
        return self.sim.joint_positions()

    @property
    def velocities(self) -> np.ndarray:
        return self.sim.joint_velocities()

    def set_targets(self, indices, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(values)):
            raise ValueError("position targets must be finite")
        self.targets[indices] = np.clip(values, self.sim.command_lower[indices], self.sim.command_upper[indices])
        self.sim.set_command(self.targets)

    def step(self, dt: float) -> None:
        self._pending += dt
        steps = int(self._pending / self.sim.timestep + 1e-9)
        if steps:
            mujoco.mj_step(self.sim.model, self.sim.data, nstep=steps)
            self._pending -= steps * self.sim.timestep

    def render_state(self) -> np.ndarray:
        return self.sim.data.qpos.copy()


class AlohaCameras:
    """The robot config's cameras of an ALOHA scene, drawn from a full MuJoCo configuration (for the
    sim node's camera process, which holds its own copy of the model)."""

    def __init__(self, robot: RobotConfig, scene: str, width: int, height: int):
        self.sim = AlohaSim(robot, scene, render=RenderSettings(width=width, height=height))
        self.cameras = tuple(camera.name for camera in robot.cameras)

    def render(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        self.sim.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.sim.model, self.sim.data)
        mujoco.mj_camlight(self.sim.model, self.sim.data)
        return {name: self.sim.render(name) for name in self.cameras}
