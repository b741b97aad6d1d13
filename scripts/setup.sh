#!/usr/bin/env bash
# One-time (idempotent) set-up of a machine for threedb: system packages via apt, then a virtual
# environment in .venv with the project and its pinned dependencies. Fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${VENV:-.venv}

# System libraries: libusb for open3d; X11/GL client libraries that the bpy wheel links against;
# chromium for the dashboard's browser tests (driven by Playwright, which downloads no browser here).
APT_PACKAGES="libusb-1.0-0 libx11-6 libxrender1 libxxf86vm1 libxfixes3 libxi6 libxkbcommon0 libsm6 libgl1 libegl1 libglib2.0-0 chromium"
missing=""
for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# Packages are reinstalled only when pyproject.toml or this script changed since the last success.
stamp="$VENV/.threedb-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import threedb.sim" 2>/dev/null; then
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "setup: installing Python packages into $VENV (first time: a few minutes)"
# (this machine's pip config names local indexes that may not exist: drop those warnings only)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,peers,cluster]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# ImageNet-C corruptions: without its declared deps (they name the GUI opencv-python, a second cv2
# needing numpy>=2); its real runtime deps are in pyproject.toml. threedb.controls.image.imagenet_c
# adapts it (it imports pkg_resources, gone from setuptools>=81, and some corruptions need fixes).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "imagecorruptions==1.1.2" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# torchattacks (a peer of the attack benchmarks and agreement tests) pins requests~=2.25: no deps.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "torchattacks==3.5.1" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$VENV/bin/python" -c "import threedb.sim, bpy, torch, open3d" # fail here, not later, if anything is missing
echo "$want" > "$stamp"
