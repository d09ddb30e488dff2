"""A simulated bimanual arm: position-controlled joint dynamics and a small tabletop camera renderer.

The dynamics stand in for ros2_control position controllers on a real arm: each joint follows its
commanded position with a first-order lag, never faster than its velocity limit, never accelerating
harder than its acceleration limit, and it stops at its hard (URDF) position limits. The renderer
draws the URDF's own visual geometry (through Pinocchio) plus a few colored objects on the table,
flat-shaded with a painter's algorithm, into pinhole cameras at the URDF's camera frames. It is meant
to give a policy plausible, pose-dependent images, not photorealism.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import cv2
import numpy as np
import pinocchio as pin

from wall_oss_core.robot.kinematics import BimanualKinematics

# --------------------------------------------------------------------------------------------------
# Joint dynamics


@dataclass(frozen=True)
class ArmDynamicsConfig:
    """How the simulated servos respond to position commands.

    lag_time_constant: first-order tracking lag [s] (a servo's position loop, roughly).
    acceleration_headroom: the motors can accelerate this many times harder than the configured
        command acceleration limit, so commands that respect the limit are tracked with lag only.
    max_substep: longest integration step [s]; a late timer tick is integrated in several substeps.
    """

    lag_time_constant: float = 0.03
    acceleration_headroom: float = 3.0
    max_substep: float = 0.002

    def __post_init__(self):
        if not (self.lag_time_constant > 0 and self.acceleration_headroom >= 1 and self.max_substep > 0):
            raise ValueError("lag_time_constant and max_substep must be positive, acceleration_headroom >= 1")
        if self.max_substep >= 2 * self.lag_time_constant:
            raise ValueError("max_substep must be below twice the lag time constant for a stable integration")


class ArmDynamics:
    """Position-controlled joints (command-joint order) integrated with lag, velocity and acceleration limits."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, velocity_limit: np.ndarray,
                 acceleration_limit: np.ndarray, initial: np.ndarray, config: ArmDynamicsConfig = ArmDynamicsConfig()):
        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)
        self.velocity_limit = np.asarray(velocity_limit, dtype=float)
        self.acceleration_limit = np.asarray(acceleration_limit, dtype=float) * config.acceleration_headroom
        self.config = config
        self.positions = np.clip(np.asarray(initial, dtype=float), self.lower, self.upper)
        self.velocities = np.zeros_like(self.positions)
        self.targets = self.positions.copy()

    @classmethod
    def for_robot(cls, kinematics: BimanualKinematics, initial: np.ndarray,
                  config: ArmDynamicsConfig = ArmDynamicsConfig()) -> ArmDynamics:
        """Hard stops are the URDF limits (the supervisor's margin is a software limit, not a wall)."""
        robot, limits = kinematics.config, kinematics.limits
        grippers = set(robot.gripper_joints)
        margin = np.array([robot.position_margin_gripper if n in grippers else robot.position_margin_revolute
                           for n in limits.names])
        return cls(limits.lower - margin, limits.upper + margin, limits.velocity, limits.acceleration, initial, config)

    def set_targets(self, indices, values: np.ndarray) -> None:
        """New position targets for some joints; beyond the hard stops they are clipped (the arm cannot go there)."""
        values = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(values)):
            raise ValueError("position targets must be finite")
        self.targets[indices] = np.clip(values, self.lower[indices], self.upper[indices])

    def step(self, dt: float) -> None:
        """Advance the joints by dt seconds (split into substeps of at most max_substep)."""
        if not dt > 0:
            return
        substeps = max(1, math.ceil(dt / self.config.max_substep))
        h = dt / substeps
        tau = self.config.lag_time_constant
        for _ in range(substeps):
            error = self.targets - self.positions
            distance = np.abs(error)
            # Speed wanted by the lag, capped by the velocity limit and by the fastest speed from which
            # the joint still stops at the target with its acceleration limit in steps of h (the
            # stopping distance of this integrator is v²/2a + v·h/2), so it never overshoots.
            half_step = 0.5 * self.acceleration_limit * h
            stoppable = np.sqrt(half_step ** 2 + 2.0 * self.acceleration_limit * distance) - half_step
            speed = np.minimum(distance / tau, np.minimum(self.velocity_limit, stoppable))
            wanted = np.sign(error) * speed
            max_change = self.acceleration_limit * h
            self.velocities += np.clip(wanted - self.velocities, -max_change, max_change)
            self.positions += self.velocities * h
            stopped = (self.positions <= self.lower) | (self.positions >= self.upper)
            self.positions = np.clip(self.positions, self.lower, self.upper)
            self.velocities[stopped] = 0.0

    def render_state(self) -> np.ndarray:
        """What the camera process draws the arm from: the joint positions."""
        return self.positions.copy()


class TrajectoryTarget:
    """Position targets of a joint-trajectory controller: linear in time through the points, holding the last.

    Like ros2_control's joint_trajectory_controller, the trajectory starts from where the joints are
    when it arrives (`start_time`, `start_positions`) and reaches point k at start_time + times[k].
    """

    def __init__(self, start_time: float, start_positions: np.ndarray, times: np.ndarray, positions: np.ndarray):
        times = np.asarray(times, dtype=float)
        positions = np.asarray(positions, dtype=float).reshape(len(times), -1)
        if len(times) == 0:
            raise ValueError("a joint trajectory needs at least one point")
        if not (np.all(np.isfinite(times)) and np.all(np.isfinite(positions))):
            raise ValueError("joint trajectory points must be finite")
        if np.any(times < 0) or np.any(np.diff(times) <= 0):
            raise ValueError("joint trajectory time_from_start must be non-negative and strictly increasing")
        if positions.shape[1] != len(start_positions):
            raise ValueError(f"trajectory points have {positions.shape[1]} positions for {len(start_positions)} joints")
        if times[0] > 0:
            times = np.concatenate([[0.0], times])
            positions = np.vstack([start_positions, positions])
        self.times = start_time + times
        self.positions = positions

    def sample(self, t: float) -> np.ndarray:
        return np.array([np.interp(t, self.times, column) for column in self.positions.T])


# --------------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole camera (no distortion) in the REP 103 optical convention: z forward, x right, y down."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float) -> CameraIntrinsics:
        if width < 16 or height < 16:
            raise ValueError(f"image size {width}x{height} is too small (16x16 at least)")
        if not 10.0 <= horizontal_fov_deg <= 170.0:
            raise ValueError(f"horizontal field of view {horizontal_fov_deg} deg must be within [10, 170]")
        f = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2)
        return cls(width, height, f, f, (width - 1) / 2, (height - 1) / 2)

    def project(self, points_camera: np.ndarray) -> np.ndarray:
        """Pixel coordinates (…, 2) of camera-frame points (…, 3) in front of the camera."""
        z = points_camera[..., 2]
        return np.stack([self.fx * points_camera[..., 0] / z + self.cx,
                         self.fy * points_camera[..., 1] / z + self.cy], axis=-1)


@dataclass(frozen=True)
class SceneObject:
    """A colored object resting on the table: a box (size = x, y, z extents) or an upright cylinder
    (size = diameter, diameter, height). position is the center of its footprint on the table [m]."""

    name: str
    shape: str
    size: tuple[float, float, float]
    position: tuple[float, float]
    color: tuple[int, int, int]
    yaw: float = 0.0


DEFAULT_OBJECTS = (
    SceneObject("red_cube", "box", (0.05, 0.05, 0.05), (0.42, 0.22), (210, 40, 40), 0.3),
    SceneObject("green_can", "cylinder", (0.06, 0.06, 0.11), (0.40, -0.22), (40, 170, 60)),
    SceneObject("blue_block", "box", (0.14, 0.06, 0.04), (0.58, 0.02), (40, 80, 210), -0.4),
    SceneObject("yellow_cube", "box", (0.04, 0.04, 0.04), (0.62, -0.12), (230, 200, 40), 0.8),
)

TABLE_TOP_Z = 0.0  # the URDF's table box ends at z = 0 (its top); objects rest there
_CYLINDER_SIDES = 12
_NEAR_PLANE = 0.02  # [m] faces closer to the camera than this are clipped
_LIGHT_DIRECTION = np.array([0.3, 0.2, -1.0]) / np.linalg.norm([0.3, 0.2, -1.0])


def _box_mesh(half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (8, 3) and outward quad faces (6, 4) of a box centered at the origin."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    faces = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])
    return signs * half, faces


def _cylinder_mesh(radius: float, half_length: float, sides: int = _CYLINDER_SIDES) -> tuple[np.ndarray, np.ndarray]:
    """A prism approximating a cylinder along z: side quads and triangle-fan caps (triangles padded to quads)."""
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring = np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)
    vertices = np.vstack([np.column_stack([ring, np.full(sides, -half_length)]),
                          np.column_stack([ring, np.full(sides, half_length)]),
                          [[0, 0, -half_length], [0, 0, half_length]]])
    bottom_center, top_center = 2 * sides, 2 * sides + 1
    faces = []
    for i in range(sides):
        j = (i + 1) % sides
        faces.append([i, j, sides + j, sides + i])
        faces.append([top_center, sides + i, sides + j, sides + j])
        faces.append([bottom_center, j, i, i])
    return vertices, np.array(faces)


class _Mesh:
    """Faces of one rigid part in its own frame, with a color, attached to a URDF frame or fixed in the world."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, color: np.ndarray, local_pose: np.ndarray):
        self.vertices = vertices @ local_pose[:3, :3].T + local_pose[:3, 3]
        self.faces = faces
        self.color = np.asarray(color, dtype=float)


class SceneRenderer:
    """Renders the table, the objects and both arms (URDF visuals) from each configured camera frame.

    `render(command_positions)` returns camera name → H×W×3 uint8 RGB. All cameras share one size
    and field of view; frames come from `RobotConfig.cameras[*].frame`.
    """

    def __init__(self, kinematics: BimanualKinematics, width: int = 640, height: int = 480,
                 horizontal_fov_deg: float = 75.0, objects: tuple[SceneObject, ...] = DEFAULT_OBJECTS):
        self.kinematics = kinematics
        self.intrinsics = CameraIntrinsics.from_fov(width, height, horizontal_fov_deg)
        self.cameras = {camera.name: camera.frame for camera in kinematics.config.cameras}
        model = kinematics.model
        for name, frame in self.cameras.items():
            if not model.existFrame(frame):
                raise ValueError(f"camera {name!r}: frame {frame!r} is not in {kinematics.config.urdf_path}")
        self._camera_frame_ids = {name: model.getFrameId(frame) for name, frame in self.cameras.items()}
        self._data = model.createData()
        self._geometry = pin.buildGeomFromUrdf(model, str(kinematics.config.urdf_path), pin.GeometryType.VISUAL)
        self._geometry_data = pin.GeometryData(self._geometry)
        self._robot_meshes = [self._mesh_from_geometry(g) for g in self._geometry.geometryObjects]
        self._object_meshes = [self._mesh_from_object(o) for o in objects]
        self._background = self._make_background(width, height)

    @staticmethod
    def _mesh_from_geometry(geometry_object) -> _Mesh:
        shape = geometry_object.geometry
        kind = type(shape).__name__
        if kind == "Box":
            vertices, faces = _box_mesh(np.asarray(shape.halfSide))
        elif kind == "Cylinder":
            vertices, faces = _cylinder_mesh(shape.radius, shape.halfLength, sides=8)
        else:
            raise ValueError(f"visual {geometry_object.name!r}: only box and cylinder visuals are rendered, got {kind}")
        return _Mesh(vertices, faces, np.asarray(geometry_object.meshColor[:3]) * 255, np.eye(4))

    @staticmethod
    def _mesh_from_object(obj: SceneObject) -> _Mesh:
        sx, sy, sz = obj.size
        if obj.shape == "box":
            vertices, faces = _box_mesh(np.array([sx, sy, sz]) / 2)
        elif obj.shape == "cylinder":
            vertices, faces = _cylinder_mesh(sx / 2, sz / 2)
        else:
            raise ValueError(f"object {obj.name!r}: shape must be 'box' or 'cylinder', got {obj.shape!r}")
        pose = np.eye(4)
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        pose[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
        pose[:3, 3] = [obj.position[0], obj.position[1], TABLE_TOP_Z + sz / 2]
        return _Mesh(vertices, faces, obj.color, pose)

    @staticmethod
    def _make_background(width: int, height: int) -> np.ndarray:
        """A plain two-tone room: lighter wall above, darker floor below the middle."""
        rows = np.linspace(0.0, 1.0, height)[:, None]
        wall = np.array([200, 205, 215], dtype=float)
        floor = np.array([110, 100, 95], dtype=float)
        shade = np.where(rows < 0.5, wall * (0.9 + 0.1 * rows), floor * (1.1 - 0.2 * rows))
        return np.ascontiguousarray(np.broadcast_to(shade[:, None, :], (height, width, 3)).astype(np.uint8))

    def _world_faces(self, command_positions: np.ndarray):
        """All faces in world coordinates: vertices (F, 4, 3), normals (F, 3), shaded colors (F, 3)."""
        model = self.kinematics.model
        q = self.kinematics.configuration(np.asarray(command_positions, dtype=float))
        pin.framesForwardKinematics(model, self._data, q)
        pin.updateGeometryPlacements(model, self._data, self._geometry, self._geometry_data)
        vertex_sets, colors = [], []
        for mesh, placement in zip(self._robot_meshes, self._geometry_data.oMg):
            world = mesh.vertices @ placement.rotation.T + placement.translation
            vertex_sets.append(world[mesh.faces])
            colors.append(np.broadcast_to(mesh.color, (len(mesh.faces), 3)))
        for mesh in self._object_meshes:
            vertex_sets.append(mesh.vertices[mesh.faces])
            colors.append(np.broadcast_to(mesh.color, (len(mesh.faces), 3)))
        faces = np.concatenate(vertex_sets)
        normals = np.cross(faces[:, 1] - faces[:, 0], faces[:, 2] - faces[:, 0])
        # triangles padded to quads have a repeated vertex; their first three vertices still span them
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        brightness = 0.45 + 0.55 * np.clip(-normals @ _LIGHT_DIRECTION, 0.0, 1.0)
        return faces, normals, np.concatenate(colors) * brightness[:, None]

    def camera_poses(self, command_positions: np.ndarray) -> dict[str, np.ndarray]:
        """4×4 pose of each camera's optical frame in the world for a command vector."""
        q = self.kinematics.configuration(np.asarray(command_positions, dtype=float))
        pin.framesForwardKinematics(self.kinematics.model, self._data, q)
        return {name: self._data.oMf[fid].homogeneous.copy() for name, fid in self._camera_frame_ids.items()}

    def render(self, command_positions: np.ndarray) -> dict[str, np.ndarray]:
        faces, normals, colors = self._world_faces(command_positions)
        poses = {name: self._data.oMf[fid].homogeneous.copy() for name, fid in self._camera_frame_ids.items()}
        return {name: self._render_view(pose, faces, normals, colors) for name, pose in poses.items()}

    def _render_view(self, camera_pose: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                     colors: np.ndarray) -> np.ndarray:
        """Painter's algorithm: back faces culled, faces clipped at the near plane, far to near. Faces
        at or below the table top go first: the table's large faces have centroids nearer than objects
        standing on its far side, and nothing rests under it."""
        image = self._background.copy()
        rotation, origin = camera_pose[:3, :3], camera_pose[:3, 3]
        facing = np.einsum("ij,ij->i", normals, origin - faces.mean(axis=1)) > 0  # back faces are hidden
        under_table = np.all(faces[facing][..., 2] <= TABLE_TOP_Z + 1e-6, axis=1)
        camera_faces = (faces[facing] - origin) @ rotation  # world → camera: Rᵀ (p - o)
        face_colors = colors[facing]
        depth = camera_faces[..., 2]
        in_front = np.all(depth > _NEAR_PLANE, axis=1)
        partly = ~in_front & np.any(depth > _NEAR_PLANE, axis=1)
        polygons: list[tuple[bool, float, np.ndarray, np.ndarray]] = []
        projected = self.intrinsics.project(camera_faces[in_front])
        for low, mean_depth, pixels, color in zip(under_table[in_front], depth[in_front].mean(axis=1), projected,
                                                  face_colors[in_front]):
            polygons.append((not low, -mean_depth, pixels, color))
        for low, face, color in zip(under_table[partly], camera_faces[partly], face_colors[partly]):
            clipped = _clip_near(face)
            polygons.append((not low, -clipped[:, 2].mean(), self.intrinsics.project(clipped), color))
        polygons.sort(key=lambda item: (item[0], item[1]))
        limit = 8.0 * max(self.intrinsics.width, self.intrinsics.height)  # keeps fixed-point coordinates in range
        for _, _, pixels, color in polygons:
            points = np.round(np.clip(pixels, -limit, limit) * 16).astype(np.int32)
            cv2.fillConvexPoly(image, points, tuple(float(c) for c in color), lineType=cv2.LINE_AA, shift=4)
        return image


def _clip_near(polygon: np.ndarray) -> np.ndarray:
    """Part of a convex polygon (camera frame) in front of the near plane (Sutherland–Hodgman, one plane)."""
    out = []
    count = len(polygon)
    for i in range(count):
        current, following = polygon[i], polygon[(i + 1) % count]
        current_in, following_in = current[2] > _NEAR_PLANE, following[2] > _NEAR_PLANE
        if current_in:
            out.append(current)
        if current_in != following_in:
            t = (_NEAR_PLANE - current[2]) / (following[2] - current[2])
            out.append(current + t * (following - current))
    return np.array(out)


# --------------------------------------------------------------------------------------------------
# Rendering in a separate process


@dataclass(frozen=True)
class CameraSettings:
    """What the camera process renders and encodes."""

    width: int = 640
    height: int = 480
    horizontal_fov_deg: float = 75.0
    raw: bool = True           # return RGB bytes
    jpeg: bool = False         # return JPEG bytes
    jpeg_quality: int = 85
    scene: str = ""            # aloha_mujoco robots: the scene (empty = the robot config's)


def render_worker(robot_config_path: str, settings: CameraSettings, connection) -> None:
    """Loop of the camera process: the simulator's render state in (joint positions, or the full MuJoCo
    configuration for aloha_mujoco robots), {camera: (rgb bytes | None, jpeg bytes | None)} out, until
    it receives None. Ctrl-C is left to the parent, which stops the worker."""
    import signal

    from wall_oss_core.robot.config import load_robot_config

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    robot = load_robot_config(robot_config_path)
    if robot.simulator == "aloha_mujoco":
        from wall_oss_core.sim.aloha import AlohaCameras

        renderer = AlohaCameras(robot, settings.scene or robot.sim_scene, settings.width, settings.height)
    else:
        renderer = SceneRenderer(BimanualKinematics(robot), settings.width, settings.height,
                                 settings.horizontal_fov_deg)
    connection.send("ready")
    while True:
        state = connection.recv()
        if state is None:
            return
        frames = {}
        for name, rgb in renderer.render(state).items():
            jpeg = None
            if settings.jpeg:
                ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                           [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
                jpeg = encoded.tobytes() if ok else None
            frames[name] = (rgb.tobytes() if settings.raw else None, jpeg)
        connection.send(frames)


class CameraProcess:
    """Renders the cameras in a child process, so that the simulated arm's timers never wait for the
    renderer's Python loops (they would share one interpreter lock with it in a thread)."""

    def __init__(self, robot_config_path: str, settings: CameraSettings, startup_timeout: float = 60.0):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # forking a process with DDS threads is unsafe
        self._connection, child = context.Pipe()
        self._process = context.Process(target=render_worker, args=(str(robot_config_path), settings, child),
                                        name="sim_cameras", daemon=True)
        self._process.start()
        child.close()
        if not self._connection.poll(startup_timeout) or self._connection.recv() != "ready":
            self.close()
            raise RuntimeError(f"the camera process did not start within {startup_timeout:g} s")

    def render(self, state: np.ndarray, timeout: float = 10.0) -> dict[str, tuple[bytes | None, bytes | None]]:
        """Frames of every camera for this render state (`render_state()` of the dynamics); RuntimeError
        if the process is gone or stuck."""
        try:
            self._connection.send(np.asarray(state, dtype=float))
            if not self._connection.poll(timeout):
                raise RuntimeError(f"the camera process did not answer within {timeout:g} s")
            return self._connection.recv()
        except (EOFError, OSError) as error:  # broken pipe, or a connection already closed
            raise RuntimeError(f"the camera process is gone (exit code {self._process.exitcode})") from error

    def close(self) -> None:
        if self._connection.closed:
            return
        with contextlib.suppress(OSError):  # the process is gone already
            self._connection.send(None)
        self._process.join(2.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(2.0)
        self._connection.close()
