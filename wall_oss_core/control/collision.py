"""Whole-arm collision distances for the safety supervisor: every link's collision geometry from the
URDF (Pinocchio GeometryModel, coal distances) against the other arm, its own arm and the table.

Checked pairs: all pairs of geometries except those on the same rigid body or on adjacent ones, where
a "body" is everything that moves with one revolute joint (a hand with its gripper fingers is one body,
so closing the gripper is not a collision), and except pairs between two fixed geometries. The table is
a half-space below `table_height` fixed to the world.

Distances are expensive (about 200 pairs), so they are bounded instead of recomputed whenever that is
enough: a point of a geometry moves at most `reach @ |Δq|` when the command joints move by Δq (reach:
per geometry and command joint, the distance from the joint's axis to the farthest point of the
geometry along the chain; 1 for a prismatic joint), and joints that move both geometries of a pair do
not change its distance, so a pair's distance at q is at least its distance at the last computed
configuration minus both geometries' bound over the joints that move only one of them. Only when that lower bound is not
enough are the distances computed again.
"""
from __future__ import annotations

import coal
import numpy as np
import pinocchio as pin

from wall_oss_core.robot.kinematics import BimanualKinematics


class CollisionChecker:
    """Lower bounds of the clearance of every checked pair (distance − margin − how far the pair could
    still close while the joints move by given amounts)."""

    def __init__(self, kinematics: BimanualKinematics, margin: float, table_height: float):
        self.kinematics = kinematics
        self.margin = margin
        model = kinematics.model
        geometry = pin.buildGeomFromUrdf(model, str(kinematics.config.urdf_path), pin.GeometryType.COLLISION)
        geometry.addGeometryObject(pin.GeometryObject(
            "table", 0, 0, pin.SE3.Identity(), coal.Halfspace(np.array([0.0, 0.0, 1.0]), float(table_height))))
        self.names = [obj.name for obj in geometry.geometryObjects]
        body = [self._body(model, obj.parentJoint) for obj in geometry.geometryObjects]
        # which arm each geometry moves with (None: fixed to the world)
        arm_of_joint = {model.getJointId(name): arm.name for arm in kinematics.config.arms
                        for name in (*arm.joints, arm.gripper_joint, *arm.gripper_mimic_joints)}
        self.arm = [self._arm(model, obj.parentJoint, arm_of_joint) for obj in geometry.geometryObjects]
        pairs = [(a, b) for a in range(len(body)) for b in range(a + 1, len(body))
                 if not (body[a] == body[b] or model.parents[body[a]] == body[b] or model.parents[body[b]] == body[a])]
        self._geometry = geometry
        self._data = model.createData()
        self.reach = self._reach(kinematics, geometry)
        self._set_pairs(pairs)

    def _set_pairs(self, pairs: list[tuple[int, int]]) -> None:
        self._geometry.removeAllCollisionPairs()
        for a, b in pairs:
            self._geometry.addCollisionPair(pin.CollisionPair(a, b))
        self._geometry_data = pin.GeometryData(self._geometry)
        self.pairs = np.array(pairs, dtype=int).reshape(-1, 2)  # (0, 2) for a URDF without collision shapes
        self.pair_names = [f"{self.names[a]}|{self.names[b]}" for a, b in pairs]
        # Joints that move both geometries of a pair move them rigidly together and cannot change their
        # distance: per pair, only the joints that move exactly one of them count.
        first, second = self.reach[self.pairs[:, 0]], self.reach[self.pairs[:, 1]]
        self.pair_reach = np.where((first > 0) & (second > 0), 0.0, first + second)
        self._reference: np.ndarray | None = None
        self._reference_distances: np.ndarray | None = None

    @staticmethod
    def _body(model, joint: int) -> int:
        """The revolute joint (or the world, 0) that a geometry on `joint` moves rigidly with, but for
        prismatic joints below it (gripper fingers)."""
        while joint > 0 and not model.joints[joint].shortname().startswith("JointModelR"):
            joint = model.parents[joint]
        return joint

    @staticmethod
    def _arm(model, joint: int, arm_of_joint: dict[int, str]) -> str | None:
        while joint > 0:
            if joint in arm_of_joint:
                return arm_of_joint[joint]
            joint = model.parents[joint]
        return None

    @staticmethod
    def _reach(kinematics: BimanualKinematics, geometry) -> np.ndarray:
        """(geometries × command joints) bound of a geometry point's speed per joint speed."""
        model, config = kinematics.model, kinematics.config
        command_index = {name: i for i, name in enumerate(config.command_joints)}
        for arm in config.arms:  # a mimic finger moves with its gripper joint
            for mimic in arm.gripper_mimic_joints:
                command_index[mimic] = command_index[arm.gripper_joint]
        reach = np.zeros((len(geometry.geometryObjects), len(config.command_joints)))
        for g, obj in enumerate(geometry.geometryObjects):
            if obj.parentJoint == 0:
                continue  # fixed to the world (and the table's half-space has no finite bounding box)
            shape = obj.geometry
            shape.computeLocalAABB()
            distance = (float(np.linalg.norm(obj.placement.translation)) + float(np.linalg.norm(shape.aabb_center))
                        + shape.aabb_radius)
            joint = obj.parentJoint
            while joint > 0:
                index = command_index.get(model.names[joint])
                if index is not None:
                    prismatic = model.joints[joint].shortname().startswith("JointModelP")
                    reach[g, index] = max(reach[g, index], 1.0 if prismatic else distance)
                distance += float(np.linalg.norm(model.jointPlacements[joint].translation))
                joint = model.parents[joint]
        return reach

    def distances(self, command: np.ndarray) -> np.ndarray:
        """Exact distance of every checked pair (negative: penetration) in this command configuration."""
        pin.computeDistances(self.kinematics.model, self._data, self._geometry, self._geometry_data,
                             self.kinematics.configuration(command))
        distances = np.array([result.min_distance for result in self._geometry_data.distanceResults])
        self._reference, self._reference_distances = command.copy(), distances
        return distances

    def closing(self, delta: np.ndarray) -> np.ndarray:
        """Per pair, how much closer its two geometries can get while the joints move by `delta`."""
        return self.pair_reach @ np.abs(delta)

    def clearance(self, command: np.ndarray, travel: np.ndarray, needed: np.ndarray, stop_samples,
                  segment: np.ndarray) -> np.ndarray:
        """Lower bound of distance − margin − closing during the stop, per pair, at `command` whose
        stop moves each joint at most `travel` away from it. Cheap first: the last computed distances
        minus the closing since then and over the whole stop. Pairs where that does not reach
        `needed` are computed exactly: all pairs at `command` (refreshing the reference) if even the
        distance part falls short, then the short pairs at `stop_samples()` — configurations along the
        stop, consecutive ones at most `segment` apart per joint — minus the closing over one segment."""
        margin = self.margin
        if self._reference is None or np.any(self._reference_distances - self.closing(command - self._reference)
                                             - margin < needed):
            self.distances(command)
        bound = self._reference_distances - self.closing(command - self._reference) - self.closing(travel) - margin
        short = np.flatnonzero(bound < needed)
        if short.size:
            model, geometry, data = self.kinematics.model, self._geometry, self._geometry_data
            nearest = np.full(short.size, np.inf)
            for sample in stop_samples():
                pin.updateGeometryPlacements(model, self._data, geometry, data, self.kinematics.configuration(sample))
                for k, pair in enumerate(short):
                    nearest[k] = min(nearest[k], pin.computeDistance(geometry, data, int(pair)).min_distance)
            bound[short] = nearest - self.closing(segment)[short] - margin
        return bound

    def arms_of(self, pair: int) -> set[str]:
        """The arms that move a pair's geometries."""
        a, b = self.pairs[pair]
        return {arm for arm in (self.arm[a], self.arm[b]) if arm is not None}
