#!/usr/bin/env bash
# Builds .venv-lerobot beside .venv: LeRobot 0.4.4's dataset classes on the CPU torch, used only by
# test/dataio/test_lerobot_compat.py (which runs this) to check that LeRobot loads, extends and reloads an
# export. A stamp over this script makes a second run a no-op. The smallest set that works, and why:
#   torch==2.13.0              the local CPU build (LeRobot pins torch<2.11, which would pull a CUDA build)
#   lerobot==0.4.4 --no-deps   its other requirements are for robots, policies and training
#   torchvision==0.25.0 --no-deps
#                              imported by LeRobot's dataset modules (transforms.ToTensor, io.VideoReader for
#                              pyav decoding); within LeRobot's pin; its C ops cannot load with the CPU torch
#                              and none is needed (lerobot_roundtrip.py explains the one workaround)
#   datasets<5, huggingface-hub<0.36, av<16, packaging<26
#                              LeRobot's pins for what its dataset code imports; av (bundled FFmpeg with
#                              SVT-AV1) decodes through torchvision's pyav reader and encodes appended episodes
#   accelerate, pillow         imported at module level by lerobot.utils.utils / lerobot.datasets
# torchcodec (LeRobot's default decoder) is left out: it needs a system FFmpeg; LeRobot falls back to pyav.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WALL_OSS_LEROBOT_VENV:-$ROOT/.venv-lerobot}"
STAMP="$VENV/.wall_oss_lerobot_env"
HASH="$(sha256sum "$ROOT/scripts/lerobot_env.sh" | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  exit 0
fi
PYTHON="${WALL_OSS_PYTHON:-python3.11}"
echo "[lerobot-env] building $VENV" >&2
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --progress-bar off 'torch==2.13.0' 'datasets>=4,<5' 'huggingface-hub>=0.34.2,<0.36' \
  'av>=15,<16' 'packaging>=24.2,<26' accelerate pillow
"${PIP[@]}" install --progress-bar off --no-deps 'lerobot==0.4.4' 'torchvision==0.25.0'
echo "$HASH" > "$STAMP"
echo "[lerobot-env] ready" >&2
