"""Python packaging of wall_oss_core / wall_oss_ros for a venv install (the `wall-oss` command).
Named apart from the `wall_oss` distribution that the interface build installs, so neither uninstalls the other. In a colcon workspace
CMakeLists.txt installs the same packages and the node executables under lib/wall_oss."""
from setuptools import find_packages, setup

setup(
    name="wall_oss_python",
    version="0.1.0",
    description="Wall-OSS VLA policy on bimanual arms over ROS 2, with chunk execution and a safety supervisor",
    packages=find_packages(include=["wall_oss_core", "wall_oss_core.*", "wall_oss_ros", "wall_oss_ros.*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": ["wall-oss = wall_oss_ros.cli:main"]},
)
