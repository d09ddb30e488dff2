"""`ros2 launch PACKAGE FILE [name:=value ...]` without ros2cli (no wheel here): what the ros2launch verb
does with the real launch API. Run as a script in the environment of a sourced ROS install."""
import sys

from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource

import launch


def main() -> int:
    package, file_name, *arguments = sys.argv[1:]
    path = f"{get_package_share_directory(package)}/launch/{file_name}"
    assignments = [argument.split(":=", 1) for argument in arguments]
    service = launch.LaunchService(argv=arguments)
    service.include_launch_description(launch.LaunchDescription([
        IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=assignments)]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main())
