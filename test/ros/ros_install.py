"""A ROS 2 install made the way a ROS user makes one, for the tests that run the package as installed.

- `wall_oss_install(symlink)`: `colcon build [--symlink-install]` of this package (colcon-core, colcon-ros,
  colcon-cmake from PyPI) against the venv's ROS 2 wheels, in a workspace whose `src/wall_oss` links to
  this tree's files (the venv must not lie inside the CMake source directory).
- `launch_underlay()`: what a full ROS install has and the wheels lack, for `ros2 launch`: the real
  launch, launch_xml, launch_yaml, launch_ros (../shared/third_party/ros2_launch, pip-installed from a
  copy), composition_interfaces (launch_ros imports it; test/third_party, built by colcon) and a
  stand-in robot_state_publisher (test/ros/stand_ins; the real one is C++ with no wheel).
- `sourced_environment(...)`: the environment after `source <install>/setup.bash`, as a shell has it.

Each is built once per content digest of its inputs under build/ros_install/ (or $WALL_OSS_ROS_INSTALL_CACHE) and reused; a changed
input rebuilds it (a build takes 1–3 minutes on 2 cores).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO_ROOT

VENV = Path(sys.prefix)
VENV_BIN = Path(sys.executable).parent
# WALL_OSS_ROS_INSTALL_CACHE: elsewhere, e.g. where build/ is shared between worktrees.
CACHE = Path(os.environ.get("WALL_OSS_ROS_INSTALL_CACHE", REPO_ROOT / "build" / "ros_install"))
# What `colcon build` of wall_oss reads (test/ is linked too, for `colcon test`, but does not change the build).
PACKAGE_INPUTS = ("CMakeLists.txt", "package.xml", "setup.py", "msg", "scripts", "launch", "config", "urdf", "checkpoints",
                  "wall_oss_core", "wall_oss_ros")
PACKAGE_LINKS = (*PACKAGE_INPUTS, "test", "pytest.ini", "ruff.toml", "README.md")
LAUNCH_PACKAGES = ("launch", "launch_xml", "launch_yaml", "launch_ros")
THIRD_PARTY_TEST = REPO_ROOT / "test" / "third_party"
STAND_INS = REPO_ROOT / "test" / "ros" / "stand_ins"
NODE_EXECUTABLES = ("policy_node", "chunk_executor_node", "safety_supervisor_node", "sim_arm_node",
                    "markers_node", "recorder", "wall-oss")


def _digest(*paths: Path) -> str:
    """Of the files under `paths`, the Python version and the colcon extensions (they write the setup files)."""
    colcon_versions = sorted(f"{dist.metadata['Name']}={dist.version}" for dist in importlib.metadata.distributions()
                             if (dist.metadata["Name"] or "").lower().startswith("colcon"))
    digest = hashlib.sha256(repr((sys.version, colcon_versions)).encode())
    for root in paths:
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cached(name: str, digest: str, build) -> Path:
    """`build(directory)` once per digest into CACHE/<name>-<digest>; older builds of `name` are removed.
    Builds in place (colcon writes absolute paths into its setup scripts); `.complete` marks a finished one."""
    target = CACHE / f"{name}-{digest}"
    if (target / ".complete").exists():
        return target
    for old in CACHE.glob(f"{name}-*"):
        shutil.rmtree(old, ignore_errors=True)
    target.mkdir(parents=True)
    build(target)
    (target / ".complete").touch()
    return target


def build_environment() -> dict[str, str]:
    """The venv as the ROS underlay: its ament index, CMake packages and `python3` first on PATH."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", AMENT_PREFIX_PATH=str(VENV),
               CMAKE_PREFIX_PATH=str(VENV))
    return env


def colcon(workspace: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run `colcon ARGS` in `workspace`; fail with colcon's output when it fails."""
    result = subprocess.run([str(VENV_BIN / "colcon"), *args], cwd=workspace, env=env or build_environment(),
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"colcon {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def colcon_build_args(symlink: bool, *cmake_args: str) -> list[str]:
    return ["build", "--base-paths", "src", *(["--symlink-install"] if symlink else []),
            "--cmake-args", f"-DPython3_EXECUTABLE={VENV_BIN / 'python'}", *cmake_args]


def link_package_source(workspace: Path) -> Path:
    """src/wall_oss: links to this tree's package files."""
    source = workspace / "src" / "wall_oss"
    source.mkdir(parents=True)
    for name in PACKAGE_LINKS:
        (source / name).symlink_to(REPO_ROOT / name)
    return source


def wall_oss_install(symlink: bool, *cmake_args: str) -> Path:
    """The workspace of a `colcon build [--symlink-install] --cmake-args ...` of wall_oss (install/ is the
    install space)."""
    def build(workspace: Path):
        link_package_source(workspace)
        colcon(workspace, *colcon_build_args(symlink, *cmake_args))

    name = "wall_oss-symlink" if symlink else "wall_oss"
    digest = hashlib.sha256((_digest(*(REPO_ROOT / p for p in PACKAGE_INPUTS)) + repr(cmake_args)).encode())
    return _cached(name, digest.hexdigest()[:16], build)


def launch_sources() -> Path:
    """../shared/third_party/ros2_launch beside this repository (or its worktree's main checkout)."""
    for parent in REPO_ROOT.parents:
        candidate = parent / "shared" / "third_party" / "ros2_launch"
        if candidate.is_dir():
            return candidate
    pytest.skip("the real launch sources (shared/third_party/ros2_launch) are not beside this checkout")


def launch_underlay() -> Path:
    """Prefix with launch/launch_ros (pip, under launch/), composition_interfaces (colcon, under install/)
    and the robot_state_publisher stand-in (under stand_ins/)."""
    sources = launch_sources()

    def build(root: Path):
        copies = root / "sources"  # pip builds in the source tree; shared/ stays untouched
        for package in LAUNCH_PACKAGES:
            shutil.copytree(sources / package, copies / package)
        result = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps",
             "--no-build-isolation", "--no-index", "--prefix", str(root / "launch"),
             *(str(copies / package) for package in LAUNCH_PACKAGES)],
            capture_output=True, text=True, env=build_environment(), timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        (root / "src").mkdir()
        shutil.copytree(THIRD_PARTY_TEST / "composition_interfaces", root / "src" / "composition_interfaces")
        colcon(root, *colcon_build_args(symlink=False))
        stand_in = root / "stand_ins"
        (stand_in / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
        (stand_in / "share" / "ament_index" / "resource_index" / "packages" / "robot_state_publisher").touch()
        (stand_in / "lib" / "robot_state_publisher").mkdir(parents=True)
        (stand_in / "lib" / "robot_state_publisher" / "robot_state_publisher").symlink_to(
            STAND_INS / "robot_state_publisher.py")

    return _cached("launch_underlay", _digest(*(sources / p for p in LAUNCH_PACKAGES),
                                             THIRD_PARTY_TEST / "composition_interfaces"), build)


def sourced_environment(*setup_scripts: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a bash that sourced `setup_scripts` in order (colcon's setup.bash files)."""
    script = "".join(f"source '{path}' && " for path in setup_scripts) + "env -0"
    output = subprocess.run(["bash", "-c", script], env=base or build_environment(), capture_output=True,
                            check=True, timeout=60).stdout.decode()
    return dict(entry.split("=", 1) for entry in output.split("\0") if "=" in entry)


def ros2_launch_environment(install: Path) -> dict[str, str]:
    """`source <underlay>/install/setup.bash; source <workspace>/install/setup.bash` with the launch
    packages and the stand-in on the paths: the shell `ros2 launch` runs in on a full ROS install."""
    underlay = launch_underlay()
    env = sourced_environment(underlay / "install" / "setup.bash", install / "install" / "setup.bash")
    launch_site = Path(sysconfig.get_path("purelib", vars={"base": str(underlay / "launch")}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(launch_site), env.get("PYTHONPATH", "")]))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        [env["AMENT_PREFIX_PATH"], str(underlay / "launch"), str(underlay / "stand_ins")])
    return env
