"""ALOHA sim cost: physics real-time factor, and render time per camera with the chosen settings vs
MuJoCo's defaults, side by side in one run.

Physics: the scripted expert's transfer-cube episode (contacts, grasps) stepped at the MJCF timestep,
its chunks through the chunk executor and the safety supervisor at 100 Hz, no rendering; the real-time
factor is sim seconds per wall second (the graph's own work included, DDS excluded).
Rendering: each robot-config camera at each size, with wall_oss_core.sim.aloha.RenderSettings
(shadows, reflections, multisampling off) and with all three on (MuJoCo's defaults and the scene's
4096² shadow map). With cameras at `--camera-hz`, the last column is the share of one core that
three cameras need. Last line: sim_realtime_factor=<physics-only real-time factor>.
"""
from __future__ import annotations

import argparse
import statistics
import time

from wall_oss_core.paths import share_file
from wall_oss_core.robot.config import load_robot_config
from wall_oss_core.robot.kinematics import BimanualKinematics
from wall_oss_core.sim.aloha import CAMERAS, AlohaSim, RenderSettings
from wall_oss_core.sim.episode import EpisodeRunner
from wall_oss_core.sim.expert import ScriptedExpert
from wall_oss_core.sim.tasks import ProgressTracker, load_tasks


def physics_realtime_factor(robot, kinematics, tasks, seconds: float) -> tuple[float, float]:
    task = tasks["transfer_cube"]
    sim = AlohaSim(robot, task.scene, seed=0)
    expert = ScriptedExpert(kinematics, tasks, sim.object_poses)
    tracker = ProgressTracker(task, tasks.groups, sim)
    start = time.perf_counter()
    result = EpisodeRunner(sim, expert, kinematics).run(tracker, task.instructions[0], seconds)
    return seconds / (time.perf_counter() - start), result.progress


def render_ms(robot, settings: RenderSettings, camera: str, repeats: int) -> float:
    sim = AlohaSim(robot, "transfer_cube", seed=0, render=settings)
    sim.render(camera)  # context and buffers
    samples = []
    for _ in range(repeats):
        sim.step(0.02)
        start = time.perf_counter()
        sim.render(camera)
        samples.append((time.perf_counter() - start) * 1000)
    sim.close()
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=9.5, help="sim time of the physics episode")
    parser.add_argument("--repeats", type=int, default=20, help="frames per camera and setting")
    parser.add_argument("--camera-hz", type=float, default=15.0)
    parser.add_argument("--sizes", default="224x224,480x640", help="HxW,...")
    args = parser.parse_args()
    robot = load_robot_config(share_file("config/aloha.yaml"))
    kinematics = BimanualKinematics(robot)
    tasks = load_tasks()

    factor, progress = physics_realtime_factor(robot, kinematics, tasks, args.seconds)
    print(f"physics: transfer-cube episode of {args.seconds:.1f} s sim time (expert progress {progress:.0f}), "
          f"real-time factor {factor:.1f}x")
    print(f"{'camera':<17} {'size':>8} {'chosen ms':>10} {'default ms':>11} {'speed-up':>9} "
          f"{'3 cams @' + format(args.camera_hz, 'g') + ' Hz':>14}")
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        chosen = RenderSettings(width=width, height=height)
        defaults = RenderSettings(width=width, height=height, shadows=True, reflections=True, multisampling=True)
        for camera in CAMERAS:
            fast = render_ms(robot, chosen, camera, args.repeats)
            slow = render_ms(robot, defaults, camera, max(3, args.repeats // 4))
            load = 3 * fast * args.camera_hz / 1000
            print(f"{camera:<17} {size:>8} {fast:>10.1f} {slow:>11.1f} {slow / fast:>8.1f}x {load:>13.0%}")
    print(f"sim_realtime_factor={factor:.2f}")


if __name__ == "__main__":
    main()
