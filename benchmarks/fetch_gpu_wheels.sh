#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks, for its Python 3.12 on x86-64 Linux:
#     bash benchmarks/fetch_gpu_wheels.sh [DIR]      (default DIR: wheels/, git-ignored)
# The GPU machine has no internet and already has torch, numpy, numba, opencv-python-headless,
# rich (with markdown-it-py, mdurl, pygments), tensorboard and matplotlib. Each package is
# listed explicitly with --no-deps, so nothing it already has is sent again; the versions are
# launch/constraints.txt's. FFCV has no wheel (it is built against system OpenCV and
# libjpeg-turbo) and is not sent: benchmarks/gpu_check.sh skips its FFCV checks.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-wheels}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DIR"

PACKAGES=(
    # pydantic (the spec and meta.json)
    pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0
    typing-inspection==0.4.5 typing-extensions==4.16.0
    # textual (the TUI; its tests import it) and the dependencies rich does not bring
    textual==8.2.8 mdit-py-plugins==0.7.0 platformdirs==4.14.5
    linkify-it-py==2.2.0 uc-micro-py==1.0.3        # markdown-it-py[linkify], wanted by textual
    # albumentations 2.0.8 and what it needs beyond numpy/opencv
    albumentations==2.0.8 albucore==0.0.24 stringzilla==5.3.2 simsimd==6.5.16
    PyYAML==6.0.3 scipy==1.17.1
    # rich's own dependencies, in case the machine's are older than textual's floor (small;
    # pip installs them only if needed)
    rich==15.0.0 pygments==2.21.0 markdown-it-py==4.3.0 mdurl==0.1.2
    # the test runner
    pytest==8.4.2 pytest-timeout==2.4.0 iniconfig==2.3.1 pluggy==1.7.0 packaging==26.3
)
for pkg in "${PACKAGES[@]}"; do
    "$PY" -m pip download --quiet --only-binary=:all: --python-version 3.12 \
        --implementation cp --abi cp312 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        --no-deps --dest "$DIR" "$pkg"
done
echo "wheels in $DIR: $(find "$DIR" -maxdepth 1 -name "*.whl" | wc -l) files, $(du -sh --apparent-size "$DIR" | cut -f1) in all"
