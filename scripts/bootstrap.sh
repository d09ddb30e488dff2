#!/usr/bin/env bash
# Creates .venv with ROS 2 (PyPI wheels), torch and the Python dependencies, builds the wall_oss
# interfaces into it with cmake, and installs wall_oss_core / wall_oss_ros in editable mode.
# Idempotent: a stamp over the inputs makes a second run a fast no-op.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WALL_OSS_VENV:-$ROOT/.venv}"
STAMP="$VENV/.wall_oss_bootstrap"
INPUTS_HASH="$(cd "$ROOT" && cat requirements.txt setup.py CMakeLists.txt package.xml msg/*.msg scripts/bootstrap.sh | sha256sum | cut -c1-16)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$INPUTS_HASH" ]]; then
  exit 0
fi

step() { echo "[bootstrap] $*" >&2; }

PYTHON="${WALL_OSS_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
[[ -n "$PYTHON" ]] || { echo "[bootstrap] Python 3.11 is required (the ROS 2 Kilted PyPI wheels are built for it)" >&2; exit 1; }

if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  step "installing torch (CPU build when available locally)"
  "${PIP[@]}" install --progress-bar off 'torch==2.13.0' || "${PIP[@]}" install --progress-bar off 'torch>=2.5'
fi
step "installing Python dependencies and ROS 2 wheels"
"${PIP[@]}" install --progress-bar off -q -r "$ROOT/requirements.txt"

step "patching rosidl_generator_py cmake exports to this interpreter's include dirs"
PY_INCLUDE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INCLUDE="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
while IFS= read -r -d '' export_file; do
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PY_INCLUDE}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${NP_INCLUDE}#g" \
    "$export_file"
done < <(find "$VENV" -path '*/share/*/cmake/*rosidl_generator_pyExport*.cmake' -print0)

step "building wall_oss interfaces (cmake, about a minute on 2 cores)"
BUILD="$ROOT/build/interfaces"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DWALL_OSS_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
cmake --install "$BUILD" >/dev/null

step "installing wall_oss_core / wall_oss_ros (editable)"
"${PIP[@]}" install --progress-bar off -q --no-deps --no-build-isolation -e "$ROOT"

"$VENV/bin/python" -c 'from wall_oss.msg import ActionChunk, SafetyStatus; import rclpy, pinocchio, torch, transformers' \
  || { echo "[bootstrap] the environment does not import; see the messages above" >&2; exit 1; }
echo "$INPUTS_HASH" > "$STAMP"
step "ready"
