"""The tree shows the architecture: wall_oss_core's subpackages import only from lower layers, and nothing in the
core imports ROS. Each subpackage states its allowed imports in its `__init__` docstring; this test holds it to it."""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "wall_oss_core"
# lowest first; a module may import its own layer and any layer before it
LAYERS = [{"paths", "topics"}, {"robot"}, {"policy"}, {"control"}, {"model"}, {"data"}, {"backends"},
          {"evaluation"}, {"training"}, {"sim", "visualization"}, {"cli"}]
ROS_MODULES = {"rclpy", "rosidl_runtime_py", "wall_oss", "sensor_msgs", "std_msgs", "builtin_interfaces"}


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _unit(path: Path) -> str:
    relative = path.relative_to(CORE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _modules():
    return [p for p in sorted(CORE.rglob("*.py")) if p.name != "__init__.py" or p.parent != CORE]


def test_every_module_belongs_to_a_layer():
    for path in _modules():
        _layer(_unit(path))  # StopIteration names an unplaced subpackage


def test_core_imports_only_lower_layers_and_never_ros():
    violations = []
    for path in _modules():
        own = _layer(_unit(path))
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in ROS_MODULES:
                violations.append(f"{path.relative_to(CORE)}:{line} imports ROS module {name}")
            elif top == "wall_oss_core":
                target = name.split(".")[1]
                if _layer(target) > own:
                    violations.append(f"{path.relative_to(CORE)}:{line} imports {name} from a higher layer")
    assert not violations, "\n".join(violations)


def test_every_subpackage_says_what_it_may_import():
    for package in sorted(p for p in CORE.iterdir() if (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"{package.name}/__init__.py does not state its allowed imports"
