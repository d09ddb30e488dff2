"""The launch planner: the ROS 2 YAML launch files in launch/ resolved to command lines, with no process started.

`ros2 launch` (launch, launch_ros) is not installable from PyPI, but the graph must have one source of
truth that both a full ROS 2 install and this machine run. This module understands the subset of the
YAML launch format the project's files use, with the same meaning:

  launch:
  - arg: {name, default, description}          declared arguments; `name:=value` overrides
  - let: {name, value}                         a derived variable
  - set_env / set-env: {name, value}           environment for the nodes that follow
  - node: {pkg, exec, name, namespace, output, args, ros_args, env: [{name, value}],
           param: [{from: FILE} | {name, value}], remap: [{from, to}], if, unless}
  - include: {file, arg: [{name, value}], if, unless}
  - group: {scoped, if, unless, children: [...]} with push_ros_namespace / push-ros-namespace: {namespace}
  substitutions: $(var x) $(env X [default]) $(optenv X [default]) $(find-pkg-share pkg)
                 $(find-pkg-prefix pkg) $(dirname) $(command cmd ...)

wall_oss nodes run as `python -m wall_oss_ros.<exec> --ros-args -r __node:=<name> -r __ns:=<ns>
--params-file ... -r from:=to`. Nodes of other packages run from `<prefix>/lib/<pkg>/<exec>` on the
AMENT_PREFIX_PATH when installed, and are skipped with a note otherwise (rviz2 and
robot_state_publisher sit behind `if` arguments that default to false). Inline parameters are written
to a params file per node with the types YAML gives them, exactly as launch_ros infers them.
`wall_oss_ros.launch_runner` starts and supervises the resulting plan.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wall_oss_core.paths import share_file

PACKAGE = "wall_oss"
NODE_MODULE_PACKAGE = "wall_oss_ros"
NODE_KEYS = {"pkg", "exec", "name", "namespace", "output", "args", "ros_args", "env", "param", "remap", "if", "unless"}
OUTPUT_MODES = ("screen", "log", "both")


class LaunchError(ValueError):
    """A launch file that cannot be run as written (bad syntax, unknown argument, missing file…)."""


@dataclass
class NodeAction:
    """One process to start, fully resolved."""

    name: str
    package: str
    executable: str
    namespace: str
    command: list[str]
    env: dict[str, str]
    output: str = "screen"

    @property
    def fully_qualified_name(self) -> str:
        return self.namespace.rstrip("/") + "/" + self.name


@dataclass
class LaunchPlan:
    """What a launch file resolves to for a set of argument values."""

    nodes: list[NodeAction]
    arguments: dict[str, str]
    argument_descriptions: dict[str, str]
    skipped: list[str]
    params_dir: Path

    def node(self, name: str) -> NodeAction:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in the plan; nodes are {[n.name for n in self.nodes]}")

    def cleanup(self) -> None:
        shutil.rmtree(self.params_dir, ignore_errors=True)


@dataclass
class _Scope:
    variables: dict[str, str]
    namespace: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    launch_file: Path = Path()

    def child(self, **changes) -> _Scope:
        values = {"variables": dict(self.variables), "namespace": self.namespace, "env": dict(self.env),
                  "launch_file": self.launch_file}
        values.update(changes)
        return _Scope(**values)


def package_share(package: str) -> Path:
    """share/<package> of wall_oss (source tree or install) or of any package on AMENT_PREFIX_PATH."""
    if package == PACKAGE:
        return share_file("launch").parent
    for prefix in _ament_prefixes():
        candidate = prefix / "share" / package
        if candidate.is_dir():
            return candidate
    raise LaunchError(f"package {package!r} not found (AMENT_PREFIX_PATH: {os.environ.get('AMENT_PREFIX_PATH', '')!r})")


def _ament_prefixes() -> list[Path]:
    return [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]


def _find_executable(package: str, executable: str) -> str | None:
    for prefix in _ament_prefixes():
        candidate = prefix / "lib" / package / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _normalize_namespace(namespace: str) -> str:
    parts = [p for p in namespace.split("/") if p]
    return "/" + "/".join(parts)


def _join_namespace(base: str, namespace: str) -> str:
    if namespace.startswith("/"):
        return _normalize_namespace(namespace)
    return _normalize_namespace(base + "/" + namespace)


def _truthy(value, where: str) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise LaunchError(f"{where}: condition must be true/false/1/0, got {value!r}")


class _Planner:
    """Walks a launch file tree and collects NodeActions."""

    def __init__(self, overrides: dict[str, str], params_dir: Path):
        self.overrides = dict(overrides)
        self.params_dir = params_dir
        self.nodes: list[NodeAction] = []
        self.skipped: list[str] = []
        self.top_arguments: dict[str, str] = {}
        self.descriptions: dict[str, str] = {}
        self.used_overrides: set[str] = set()
        self.root_file: Path | None = None

    # -- substitutions -----------------------------------------------------------------------------

    def substitute(self, value, scope: _Scope, where: str) -> str:
        text = str(value)
        out, index = [], 0
        while True:
            start = text.find("$(", index)
            if start < 0:
                out.append(text[index:])
                return "".join(out)
            out.append(text[index:start])
            depth, position = 1, start + 2
            while position < len(text) and depth:
                if text.startswith("$(", position):
                    depth, position = depth + 1, position + 2
                    continue
                if text[position] == ")":
                    depth -= 1
                position += 1
            if depth:
                raise LaunchError(f"{where}: unclosed substitution in {text!r}")
            out.append(self._evaluate(self.substitute(text[start + 2:position - 1], scope, where), scope, where))
            index = position

    def _evaluate(self, expression: str, scope: _Scope, where: str) -> str:
        try:
            words = shlex.split(expression)
        except ValueError as error:
            raise LaunchError(f"{where}: cannot parse $({expression}): {error}") from error
        if not words:
            raise LaunchError(f"{where}: empty substitution $()")
        kind, args = words[0], words[1:]
        if kind == "var":
            if len(args) != 1:
                raise LaunchError(f"{where}: $(var NAME) takes one name, got $({expression})")
            if args[0] not in scope.variables:
                raise LaunchError(f"{where}: launch argument {args[0]!r} is not declared "
                                  f"(declared: {', '.join(sorted(scope.variables)) or 'none'})")
            return scope.variables[args[0]]
        if kind in ("env", "optenv"):
            if len(args) not in (1, 2):
                raise LaunchError(f"{where}: $({kind} NAME [DEFAULT]) takes one or two words, got $({expression})")
            environment = {**os.environ, **scope.env}
            if args[0] in environment:
                return environment[args[0]]
            if len(args) == 2:
                return args[1]
            if kind == "optenv":
                return ""
            raise LaunchError(f"{where}: environment variable {args[0]!r} is not set and $(env) has no default")
        if kind in ("find-pkg-share", "find-pkg-prefix"):
            if len(args) != 1:
                raise LaunchError(f"{where}: $({kind} PACKAGE) takes one package name")
            share = package_share(args[0])
            return str(share if kind == "find-pkg-share" else share.parent.parent)
        if kind == "dirname":
            return str(scope.launch_file.parent)
        if kind == "command":
            # As in launch's CommandSubstitution: one (usually quoted) command line, split like a shell.
            result = subprocess.run(shlex.split(" ".join(args)), capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise LaunchError(f"{where}: $(command {expression[len('command'):].strip()}) failed with exit code "
                                  f"{result.returncode}: {result.stderr.strip()}")
            return result.stdout
        raise LaunchError(f"{where}: unsupported substitution $({kind} ...); supported: var, env, optenv, "
                          "find-pkg-share, find-pkg-prefix, dirname, command")

    def _condition(self, entry: dict, scope: _Scope, where: str) -> bool:
        if "if" in entry and not _truthy(self.substitute(entry["if"], scope, where), where):
            return False
        return not ("unless" in entry and _truthy(self.substitute(entry["unless"], scope, where), where))

    # -- entities ----------------------------------------------------------------------------------

    def load_file(self, path: Path, scope: _Scope) -> None:
        if not path.is_file():
            raise LaunchError(f"launch file {path} does not exist")
        try:
            document = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise LaunchError(f"launch file {path} is not valid YAML: {error}") from error
        if not isinstance(document, dict) or not isinstance(document.get("launch"), list):
            raise LaunchError(f"launch file {path}: the top level must be `launch:` with a list of entities")
        if self.root_file is None:
            self.root_file = path
        self.entities(document["launch"], scope.child(launch_file=path), str(path))

    def entities(self, entries: list, scope: _Scope, where: str) -> None:
        handlers = {
            "arg": self._arg, "let": self._let, "set_env": self._set_env, "set-env": self._set_env,
            "node": self._node, "include": self._include, "group": self._group,
            "push_ros_namespace": self._push_namespace, "push-ros-namespace": self._push_namespace,
        }
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict) or len(entry) != 1:
                raise LaunchError(f"{where}: entity #{position + 1} must be a mapping with a single key, got {entry!r}")
            (kind, body), = entry.items()
            here = f"{where}: {kind} #{position + 1}"
            if kind not in handlers:
                raise LaunchError(f"{here}: unsupported launch entity {kind!r}; supported: {', '.join(handlers)}")
            if not isinstance(body, dict):
                raise LaunchError(f"{here}: expected a mapping, got {body!r}")
            handlers[kind](body, scope, here)

    def _arg(self, body: dict, scope: _Scope, where: str) -> None:
        """Value precedence as in ros2 launch: set by an including file > command line > default."""
        name = body.get("name")
        if not name:
            raise LaunchError(f"{where}: arg needs a name")
        if name in scope.variables:
            value = scope.variables[name]
        elif name in self.overrides:
            value = self.overrides[name]
            self.used_overrides.add(name)
        elif "default" in body:
            value = self.substitute(body["default"], scope, where)
        else:
            raise LaunchError(f"{where}: launch argument {name!r} has no default; pass {name}:=VALUE")
        scope.variables[name] = value
        if scope.launch_file == self.root_file:
            self.top_arguments[name] = value
            self.descriptions[name] = str(body.get("description", ""))

    def _let(self, body: dict, scope: _Scope, where: str) -> None:
        if "name" not in body or "value" not in body:
            raise LaunchError(f"{where}: let needs name and value")
        scope.variables[body["name"]] = self.substitute(body["value"], scope, where)

    def _set_env(self, body: dict, scope: _Scope, where: str) -> None:
        if "name" not in body or "value" not in body:
            raise LaunchError(f"{where}: set_env needs name and value")
        scope.env[body["name"]] = self.substitute(body["value"], scope, where)

    def _push_namespace(self, body: dict, scope: _Scope, where: str) -> None:
        if "namespace" not in body:
            raise LaunchError(f"{where}: push_ros_namespace needs a namespace")
        scope.namespace = _join_namespace(scope.namespace, self.substitute(body["namespace"], scope, where))

    def _group(self, body: dict, scope: _Scope, where: str) -> None:
        if not self._condition(body, scope, where):
            return
        scoped = _truthy(self.substitute(body.get("scoped", True), scope, where), where)
        children = body.get("children", [])
        if not isinstance(children, list):
            raise LaunchError(f"{where}: group children must be a list")
        self.entities(children, scope.child() if scoped else scope, where)

    def _include(self, body: dict, scope: _Scope, where: str) -> None:
        if not self._condition(body, scope, where):
            return
        if "file" not in body:
            raise LaunchError(f"{where}: include needs a file")
        path = Path(self.substitute(body["file"], scope, where))
        if not path.is_absolute():
            path = scope.launch_file.parent / path
        child = scope.child()
        for item in body.get("arg", []) or []:
            if not isinstance(item, dict) or "name" not in item or "value" not in item:
                raise LaunchError(f"{where}: include arguments are {{name, value}} mappings, got {item!r}")
            child.variables[item["name"]] = self.substitute(item["value"], scope, where)
        self.load_file(path, child)

    def _node(self, body: dict, scope: _Scope, where: str) -> None:
        unknown = set(body) - NODE_KEYS
        if unknown:
            raise LaunchError(f"{where}: unsupported node attributes {sorted(unknown)}; supported: {sorted(NODE_KEYS)}")
        if not self._condition(body, scope, where):
            return
        for required in ("pkg", "exec"):
            if required not in body:
                raise LaunchError(f"{where}: node needs {required!r}")
        package = self.substitute(body["pkg"], scope, where)
        executable = self.substitute(body["exec"], scope, where)
        name = self.substitute(body.get("name", executable), scope, where)
        where = f"{where} ({name})"
        namespace = _join_namespace(scope.namespace, self.substitute(body.get("namespace", ""), scope, where))
        output = self.substitute(body.get("output", "screen"), scope, where)
        if output not in OUTPUT_MODES:
            raise LaunchError(f"{where}: output must be one of {OUTPUT_MODES}, got {output!r}")

        if package == PACKAGE:
            module = f"{NODE_MODULE_PACKAGE}.{executable}"
            if importlib.util.find_spec(module) is None:
                raise LaunchError(f"{where}: package {PACKAGE} has no executable {executable!r} (no module {module})")
            program = [sys.executable, "-m", module]
        else:
            found = _find_executable(package, executable)
            if found is None:
                self.skipped.append(f"{name}: {package}/{executable} is not installed here; node skipped")
                return
            program = [found]

        command = program + shlex.split(self.substitute(body.get("args", ""), scope, where))
        command += ["--ros-args", "-r", f"__node:={name}"]
        if namespace != "/":
            command += ["-r", f"__ns:={namespace}"]
        for params_file in self._params(body.get("param", []) or [], scope, where, f"{len(self.nodes)}_{name}"):
            command += ["--params-file", str(params_file)]
        for remap in body.get("remap", []) or []:
            if not isinstance(remap, dict) or "from" not in remap or "to" not in remap:
                raise LaunchError(f"{where}: remaps are {{from, to}} mappings, got {remap!r}")
            command += ["-r", f"{self.substitute(remap['from'], scope, where)}:={self.substitute(remap['to'], scope, where)}"]
        command += shlex.split(self.substitute(body.get("ros_args", ""), scope, where))

        env = dict(scope.env)
        for item in body.get("env", []) or []:
            if not isinstance(item, dict) or "name" not in item or "value" not in item:
                raise LaunchError(f"{where}: node env entries are {{name, value}} mappings, got {item!r}")
            env[item["name"]] = self.substitute(item["value"], scope, where)
        if any(node.fully_qualified_name == _join_namespace(namespace, name) for node in self.nodes):
            raise LaunchError(f"{where}: two nodes named {_join_namespace(namespace, name)}")
        self.nodes.append(NodeAction(name, package, executable, namespace, command, env, output))

    def _params(self, entries: list, scope: _Scope, where: str, stem: str) -> list[Path]:
        """Params files in order: each `from` file as is, each run of {name, value} pairs as a new file."""
        files: list[Path] = []
        inline: dict = {}

        def flush():
            if inline:
                path = self.params_dir / f"{stem}_{len(files)}.yaml"
                path.write_text(yaml.safe_dump({"/**": {"ros__parameters": dict(inline)}}, sort_keys=False))
                files.append(path)
                inline.clear()

        for entry in entries:
            if not isinstance(entry, dict):
                raise LaunchError(f"{where}: param entries are {{from: FILE}} or {{name, value}}, got {entry!r}")
            if "from" in entry:
                flush()
                path = Path(self.substitute(entry["from"], scope, where))
                if not path.is_file():
                    raise LaunchError(f"{where}: parameter file {path} does not exist")
                files.append(path)
            elif "name" in entry and "value" in entry:
                name = self.substitute(entry["name"], scope, where)
                if "type" in entry:
                    inline[name] = self._declared_type_value(entry["value"], entry["type"], scope, f"{where}: {name}")
                else:
                    inline[name] = self._typed_value(entry["value"], scope, where)
            else:
                raise LaunchError(f"{where}: param entries are {{from: FILE}} or {{name, value}}, got {entry!r}")
        flush()
        return files

    def _declared_type_value(self, value, type_name, scope: _Scope, where: str):
        """`type: str | int | float | bool` as launch_ros reads it: the substituted text converted to
        that type instead of YAML-parsed (a URDF from $(command 'cat ...') needs `type: str`)."""
        converters = {"str": str, "int": int, "float": float,
                      "bool": lambda text: {"true": True, "false": False}[text.strip().lower()]}
        if type_name not in converters:
            raise LaunchError(f"{where}: parameter type {type_name!r} is not one of {sorted(converters)}")
        text = self.substitute(value, scope, where) if isinstance(value, str) else str(value)
        try:
            return converters[type_name](text)
        except (KeyError, ValueError) as error:
            raise LaunchError(f"{where}: {text!r} is not a {type_name}") from error

    def _typed_value(self, value, scope: _Scope, where: str):
        """Literal YAML values keep their type; substituted text is typed as YAML would read it."""
        if isinstance(value, list):
            return [self._typed_value(item, scope, where) for item in value]
        if not isinstance(value, str):
            return value
        text = self.substitute(value, scope, where)
        try:
            typed = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        if typed is None or isinstance(typed, dict):
            return text
        if isinstance(typed, list) and len({type(item) for item in typed}) > 1:
            return text
        return typed


def plan_launch(path: str | Path, arguments: dict[str, str] | None = None) -> LaunchPlan:
    """Resolve a launch file for the given `name:=value` arguments (no process is started)."""
    params_dir = Path(tempfile.mkdtemp(prefix="wall_oss_launch_"))
    planner = _Planner(arguments or {}, params_dir)
    try:
        planner.load_file(Path(path).resolve(), _Scope(variables={}))
        unknown = set(planner.overrides) - planner.used_overrides
        if unknown:
            raise LaunchError(f"unknown launch arguments {sorted(unknown)} for {path}; "
                              f"declared: {', '.join(planner.top_arguments) or 'none'}")
    except BaseException:
        shutil.rmtree(params_dir, ignore_errors=True)
        raise
    return LaunchPlan(planner.nodes, planner.top_arguments, planner.descriptions, planner.skipped, params_dir)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`name:=value` words → dict; LaunchError on anything else."""
    result = {}
    for item in items:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            raise LaunchError(f"launch arguments are name:=value, got {item!r}")
        result[name] = value
    return result


def resolve_launch_file(name: str) -> Path:
    """A path, or the name of a file in the package's launch/ directory."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = package_share(PACKAGE) / "launch" / name
    if candidate.is_file():
        return candidate
    raise LaunchError(f"launch file {name!r} not found (not a file, and not in {candidate.parent})")
