#!/usr/bin/env bash
# Install everything ddpcifar needs on a fresh Debian machine, as root: the system packages FFCV
# builds against (plus tmux, shellcheck and PostgreSQL, which the tests use: the sweep tests start
# a throwaway database server), a virtual environment, and the pinned Python dependencies. Idempotent: a second run with unchanged pins only checks the install.
#
#   DDPCIFAR_VENV   where the virtual environment lives (default: .venv in the repository)
#   PYTHON          the interpreter to build it from (default: python3, must be >= 3.11)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${DDPCIFAR_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
SYSTEM_PACKAGES=(pkg-config libopencv-dev libturbojpeg0-dev g++ tmux shellcheck postgresql)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "setup: Python >= 3.11 is required")'
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# Some machines' pip configuration names local index folders that do not exist; pip warns
# once per package about each. Drop only those lines.
pip_install() { "${PIP[@]}" "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2); }

# Skip the pip work when the pins have not changed since the last successful install.
stamp="$VENV/.ddpcifar-install"
want="$(cat pyproject.toml launch/constraints.txt | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup: dependencies up to date ($VENV)"
else
    echo "setup: installing Python dependencies into $VENV"
    # torch first: the largest download, and FFCV's build needs it importable.
    pip_install install -q -c launch/constraints.txt torch torchvision
    pip_install install -q -c launch/constraints.txt -e ".[test]"
    # FFCV depends on opencv-python, albumentations on opencv-python-headless; both ship a `cv2`
    # package in the same folder. Keep exactly one: the headless build.
    "${PIP[@]}" uninstall -y -q opencv-python opencv-python-headless
    pip_install install -q --no-deps -c launch/constraints.txt opencv-python-headless
    echo "$want" > "$stamp"
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import cv2, ffcv, torch, torchvision, albumentations, textual, pydantic  # noqa: F401
cv2_dists = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("opencv")]
assert cv2_dists == ["opencv-python-headless"], f"expected one cv2 (headless), found {cv2_dists}"
print(f"setup: ok: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"ffcv {md.version('ffcv')}, cv2 {cv2.__version__}")
PY
