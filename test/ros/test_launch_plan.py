"""The launch planner: the YAML launch format subset resolved to command lines, parameter files and
skipped nodes, with no process started."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from wall_oss_ros.launch_plan import LaunchError, parse_assignments, plan_launch, resolve_launch_file


def _write(tmp_path: Path, text: str, name: str = "test.launch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _ros_args(command: list[str]) -> list[str]:
    return command[command.index("--ros-args") + 1:]


def _params_files(command: list[str]) -> list[Path]:
    args = _ros_args(command)
    return [Path(args[i + 1]) for i, word in enumerate(args) if word == "--params-file"]


def test_node_command_line_parameters_and_remaps(tmp_path, monkeypatch):
    monkeypatch.setenv("WALL_OSS_TEST_RATE", "333.0")
    params = tmp_path / "extra.params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    physics_rate_hz: 300.0\n")
    path = _write(tmp_path, f"""
        launch:
        - arg: {{name: ns, default: robot_a}}
        - arg: {{name: width, default: "320"}}
        - let: {{name: topic, value: "/$(var ns)/joints"}}
        - node:
            pkg: wall_oss
            exec: sim_arm_node
            name: arm
            namespace: "$(var ns)"
            param:
            - from: "{params}"
            - {{name: image_width, value: "$(var width)"}}
            - {{name: camera_fov_deg, value: "$(env WALL_OSS_TEST_RATE)"}}
            - {{name: publish_compressed_images, value: "true"}}
            - {{name: robot_config, value: "$(find-pkg-share wall_oss)/config/bimanual.yaml"}}
            - {{name: joint_states_topic, value: "$(var topic)"}}
            - {{name: initial_positions, value: [0.0, 1.5]}}
            - from: "$(dirname)/extra.params.yaml"
            - {{name: jpeg_quality, value: 70}}
            remap:
            - {{from: /joint_states, to: "/$(var ns)/joint_states"}}
        """)
    plan = plan_launch(path, {"width": "800"})
    try:
        node = plan.node("arm")
        assert node.namespace == "/robot_a" and node.fully_qualified_name == "/robot_a/arm"
        assert node.command[:3] == [sys.executable, "-m", "wall_oss_ros.sim_arm_node"]
        args = _ros_args(node.command)
        assert args[:4] == ["-r", "__node:=arm", "-r", "__ns:=/robot_a"]
        assert args[-2:] == ["-r", "/joint_states:=/robot_a/joint_states"]
        files = _params_files(node.command)
        # file, inline block, the same file again, inline block: order preserved so later ones win
        assert files[0] == params and files[2] == params and len(files) == 4
        first_inline = yaml.safe_load(files[1].read_text())["/**"]["ros__parameters"]
        assert first_inline == {"image_width": 800, "camera_fov_deg": 333.0, "publish_compressed_images": True,
                                "robot_config": str(REPO_ROOT / "config" / "bimanual.yaml"),
                                "joint_states_topic": "/robot_a/joints", "initial_positions": [0.0, 1.5]}
        assert yaml.safe_load(files[3].read_text())["/**"]["ros__parameters"] == {"jpeg_quality": 70}
        assert plan.arguments == {"ns": "robot_a", "width": "800"}
    finally:
        plan.cleanup()
    assert not plan.params_dir.exists()


def test_empty_and_text_values_stay_strings(tmp_path):
    path = _write(tmp_path, """
        launch:
        - arg: {name: checkpoint, default: ""}
        - node:
            pkg: wall_oss
            exec: sim_arm_node
            param:
            - {name: robot_config, value: "$(var checkpoint)"}
            - {name: joint_states_topic, value: "a: b"}
        """)
    plan = plan_launch(path)
    try:
        node = plan.node("sim_arm_node")  # name defaults to the executable
        values = yaml.safe_load(_params_files(node.command)[0].read_text())["/**"]["ros__parameters"]
        assert values == {"robot_config": "", "joint_states_topic": "a: b"}
        assert "__ns:=" not in " ".join(node.command)  # root namespace: no remap
    finally:
        plan.cleanup()


def test_declared_parameter_types_convert_the_substituted_text(tmp_path):
    (tmp_path / "doc.txt").write_text("robot: {name: a}\n")
    path = _write(tmp_path, """
        launch:
        - node:
            pkg: wall_oss
            exec: sim_arm_node
            param:
            - {name: description, value: "$(command 'cat $(dirname)/doc.txt')", type: str}
            - {name: number_text, value: "15", type: str}
            - {name: rate, value: "15", type: float}
            - {name: flag, value: "True", type: bool}
        """)
    plan = plan_launch(path)
    try:
        values = yaml.safe_load(_params_files(plan.node("sim_arm_node").command)[0].read_text())
        assert values["/**"]["ros__parameters"] == {"description": "robot: {name: a}\n", "number_text": "15",
                                                    "rate": 15.0, "flag": True}
    finally:
        plan.cleanup()
    bad = _write(tmp_path, "launch:\n- node: {pkg: wall_oss, exec: sim_arm_node, param: [{name: a, value: x, type: int}]}\n")
    with pytest.raises(LaunchError, match="'x' is not a int"):
        plan_launch(bad)


def _param_entries(entities):
    for entity in entities:
        body = next(iter(entity.values()))
        if "node" in entity:
            yield from body.get("param", [])
        elif "group" in entity:
            yield from _param_entries(body)


def test_shipped_command_substituted_parameters_are_declared_strings():
    """launch_ros YAML-parses untyped substituted values, which fails on a URDF's text."""
    entries = [entry for path in sorted((REPO_ROOT / "launch").glob("*.launch.yaml"))
               for entry in _param_entries(yaml.safe_load(path.read_text())["launch"])
               if "$(command" in str(entry.get("value", ""))]
    assert entries and all(entry.get("type") == "str" for entry in entries)


def test_conditions_groups_namespaces_and_includes(tmp_path):
    _write(tmp_path, """
        launch:
        - arg: {name: who, default: inner_default}
        - arg: {name: extra, default: "false"}
        - node: {pkg: wall_oss, exec: sim_arm_node, name: "$(var who)", namespace: child}
        - node: {pkg: wall_oss, exec: sim_arm_node, name: extra_node, if: "$(var extra)"}
        """, "inner.launch.yaml")
    path = _write(tmp_path, """
        launch:
        - arg: {name: use_b, default: "false"}
        - arg: {name: skip_a, default: "0"}
        - node: {pkg: wall_oss, exec: sim_arm_node, name: a, unless: "$(var skip_a)"}
        - node: {pkg: wall_oss, exec: sim_arm_node, name: b, if: "$(var use_b)"}
        - group:
            children:
            - push_ros_namespace: {namespace: outer}
            - let: {name: who, value: from_group}
            - include:
                file: "$(dirname)/inner.launch.yaml"
                arg:
                - {name: extra, value: "true"}
            - node: {pkg: wall_oss, exec: sim_arm_node, name: absolute, namespace: /elsewhere}
        - group:
            if: "false"
            children:
            - node: {pkg: wall_oss, exec: sim_arm_node, name: never}
        - node: {pkg: wall_oss, exec: sim_arm_node, name: after_group}
        """)
    plan = plan_launch(path, {"use_b": "true"})
    try:
        names = {node.name: node.namespace for node in plan.nodes}
        # the group's `let` reaches the include; push_ros_namespace stays inside the scoped group
        assert names == {"a": "/", "b": "/", "from_group": "/outer/child", "extra_node": "/outer",
                         "absolute": "/elsewhere", "after_group": "/"}
        assert set(plan.arguments) == {"use_b", "skip_a"}  # only the top-level file's arguments
    finally:
        plan.cleanup()
    plan = plan_launch(path, {"skip_a": "true"})
    try:
        assert [n.name for n in plan.nodes][:1] == ["from_group"]
    finally:
        plan.cleanup()


def test_nodes_of_missing_packages_are_skipped_and_installed_ones_found(tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    executable = prefix / "lib" / "tool_pkg" / "tool"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    (prefix / "share" / "tool_pkg").mkdir(parents=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    path = _write(tmp_path, """
        launch:
        - node: {pkg: rviz2, exec: rviz2, name: rviz, args: "-d $(find-pkg-share rviz2)/never_evaluated.rviz"}
        - node: {pkg: tool_pkg, exec: tool, name: tool, args: "--config $(find-pkg-share tool_pkg)/x.yaml"}
        """)
    plan = plan_launch(path)
    try:
        assert [n.name for n in plan.nodes] == ["tool"]
        assert plan.node("tool").command[:3] == [str(executable), "--config", str(prefix / "share/tool_pkg/x.yaml")]
        assert plan.skipped == ["rviz: rviz2/rviz2 is not installed here; node skipped"]
    finally:
        plan.cleanup()


@pytest.mark.parametrize("body, arguments, message", [
    ("- arg: {name: a}", {}, "has no default; pass a:=VALUE"),
    ("- arg: {name: a, default: x}", {"b": "1"}, r"unknown launch arguments \['b'\]"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node, name: $(var nope)}", {}, "'nope' is not declared"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node, name: $(eval 1)}", {}, "unsupported substitution"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node, name: \"$(var a\"}", {}, "unclosed substitution"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node, if: maybe}", {}, "must be true/false/1/0"),
    ("- node: {pkg: wall_oss, exec: no_such_node}", {}, "has no executable 'no_such_node'"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node, respawn: true}", {}, r"unsupported node attributes \['respawn'\]"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node, param: [{from: /no/such.yaml}]}", {}, "does not exist"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node}\n- node: {pkg: wall_oss, exec: sim_arm_node}", {}, "two nodes named"),
    ("- timer: {period: 1}", {}, "unsupported launch entity 'timer'"),
    ("- node: {pkg: wall_oss, exec: sim_arm_node, name: $(env WALL_OSS_SURELY_UNSET)}", {}, "is not set"),
    ("- include: {file: missing.launch.yaml}", {}, "does not exist"),
    (("- node: {pkg: nowhere, exec: x, args: $(find-pkg-share nowhere)}\n"
      "- node: {pkg: wall_oss, exec: sim_arm_node, args: $(find-pkg-share nowhere)}"), {}, "package 'nowhere' not found"),
])
def test_launch_file_errors_are_clear(tmp_path, body, arguments, message):
    path = _write(tmp_path, "launch:\n" + body + "\n")
    with pytest.raises(LaunchError, match=message):
        plan_launch(path, arguments)


def test_argument_words_and_file_lookup(tmp_path):
    assert parse_assignments(["a:=1", "b:=", "c:=x:=y"]) == {"a": "1", "b": "", "c": "x:=y"}
    with pytest.raises(LaunchError, match="name:=value"):
        parse_assignments(["a=1"])
    assert resolve_launch_file("sim.launch.yaml") == REPO_ROOT / "launch" / "sim.launch.yaml"
    with pytest.raises(LaunchError, match="not found"):
        resolve_launch_file("nothing.launch.yaml")
    bad = tmp_path / "bad.launch.yaml"
    bad.write_text("launch: {node: 1}\n")
    with pytest.raises(LaunchError, match="list of entities"):
        plan_launch(bad)


def test_shipped_launch_files_resolve(tmp_path):
    """Every shipped launch file resolves with its defaults: wall_oss nodes exist, params files exist,
    rviz2 / robot_state_publisher are skipped here when asked for."""
    for name, arguments in (("sim.launch.yaml", {"use_rviz": "true"}),
                            ("robot.launch.yaml", {"use_rviz": "true", "publish_robot_description": "true"})):
        plan = plan_launch(REPO_ROOT / "launch" / name, arguments)
        try:
            wall_oss = {n.name: n.namespace for n in plan.nodes if n.package == "wall_oss"}
            assert {"policy", "chunk_executor", "safety_supervisor", "markers"} <= set(wall_oss)
            assert all(wall_oss[n] == "/wall_oss" for n in ("policy", "chunk_executor", "safety_supervisor"))
            assert ("sim_arm" in wall_oss) == (name == "sim.launch.yaml")
            assert len(plan.skipped) == 2 and {s.split(":")[0] for s in plan.skipped} == {"robot_state_publisher",
                                                                                          "rviz2"}
        finally:
            plan.cleanup()


def test_launch_files_give_nodes_the_shipped_fastdds_profile_unless_one_is_set(monkeypatch, tmp_path):
    """conftest sets FASTDDS_DEFAULT_PROFILES_FILE for the whole suite, so unset it here: the launch files
    must then point every node at the shipped profile (its large shared-memory segment keeps 640x480 images
    from being dropped); a profile the user set is kept."""
    own = tmp_path / "my_profile.xml"
    for name, arguments in (("sim.launch.yaml", {}), ("robot.launch.yaml", {"publish_robot_description": "true"})):
        for user_profile in (None, own):
            if user_profile is None:
                monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
            else:
                monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(user_profile))
            plan = plan_launch(REPO_ROOT / "launch" / name, arguments)
            try:
                [profile] = {n.env["FASTDDS_DEFAULT_PROFILES_FILE"] for n in plan.nodes}
            finally:
                plan.cleanup()
            if user_profile is None:
                assert Path(profile).resolve() == (REPO_ROOT / "config" / "fastdds.xml").resolve(), (name, profile)
                assert "segment_size" in Path(profile).read_text()
            else:
                assert profile == str(own), name


@pytest.mark.parametrize("launch_file", ["sim.launch.yaml", "robot.launch.yaml"])
def test_use_sim_time_reaches_every_node(launch_file):
    plan = plan_launch(resolve_launch_file(launch_file), {"use_sim_time": "true", "use_rviz": "true"})
    try:
        assert len(plan.nodes) >= 4
        for node in plan.nodes:
            values = {}
            for params_file in _params_files(node.command):
                for entry in yaml.safe_load(params_file.read_text()).values():
                    values.update(entry["ros__parameters"])
            if node.name == "sim_arm":  # the simulator is the clock: it publishes /clock in simulated time
                assert values.get("publish_clock") is True and not values.get("use_sim_time"), values
            else:
                assert values.get("use_sim_time") is True, (node.name, values)
    finally:
        plan.cleanup()
