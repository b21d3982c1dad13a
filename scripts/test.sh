#!/usr/bin/env bash
# The whole test suite on a fresh Debian/Ubuntu machine without a GPU: installs what the tests
# need when it is missing, then runs `cargo test --profile suite --locked` (release code without
# LTO: see Cargo.toml and docs/testing.md), builds the Python package and runs its tests.
#   scripts/test.sh                 everything (CI)
#   scripts/test.sh --test parity   arguments go to cargo test; the Python part is skipped
#   scripts/test.sh --python [ARGS] only the Python part; ARGS go to pytest
#  - Mesa's software Vulkan driver (lavapipe, `mesa-vulkan-drivers`): the wgpu tests run on it.
#  - NVRTC from PyPI (`nvidia-cuda-nvrtc-cu12`): tests/cuda_kernels.rs compiles every
#    kernels/*.cu with it. The cu12 wheel ships libnvrtc.so.12, a name cudarc (built with CUDA
#    12.8 bindings) loads; the CUDA 13 wheel ships only libnvrtc.so.13, which it does not look for.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_ONLY=0
if [ "${1:-}" = "--python" ]; then
    PYTHON_ONLY=1
    shift
fi
# curl: test_serve.py uses it as a client of `gradcam serve`.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || ! command -v curl >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update
    $SUDO apt-get install -y mesa-vulkan-drivers curl
fi
PY=$(command -v python3 || command -v python)
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
if ! "$PY" -c 'import nvidia.cuda_nvrtc' 2>/dev/null; then
    "${PIP[@]}" nvidia-cuda-nvrtc-cu12
fi
# The Python tests' packages: maturin builds the wheel; torch, torchvision, grad-cam
# (pytorch-grad-cam 1.5.7) and safetensors for the drop-in's comparisons; Ray for gradcam.ray;
# tritonclient, the standard Open Inference Protocol client, for `gradcam serve`.
# PyPI's torch wheel brings CUDA's libraries (~3 GB; 2 min 41 s measured). The download runs in
# the background while cargo compiles, and is waited for before the Python tests.
PY_PACKAGES=(maturin pytest ruff numpy "torch>=2.0" torchvision "grad-cam==1.5.7" "safetensors>=0.4" "ray[data]>=2.9" "tritonclient[http]")
if [ $# -eq 0 ] || [ $PYTHON_ONLY = 1 ]; then
    mkdir -p target
    if ! "$PY" -c 'import maturin, pytest, ruff, torch, torchvision, pytorch_grad_cam, safetensors, ray, tritonclient.http' 2>/dev/null; then
        "${PIP[@]}" "${PY_PACKAGES[@]}" > target/pip.log 2>&1 &
        PIP_PID=$!
    fi
fi
NVRTC_LIB=$("$PY" -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))')
ls "$NVRTC_LIB"/libnvrtc.so.12 >/dev/null
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Mesa's device-select layer would print "XDG_RUNTIME_DIR is invalid" on a headless machine in
# every test that opens an adapter (the gradcam binary turns it off itself; test crates do not).
export NODEVICE_SELECT=1
cargo --version
if [ $PYTHON_ONLY = 0 ]; then
    # --workspace: the Python crate (which has no Rust tests) is part of the selection, so that
    # the dependencies are built with the features its build needs, and maturin's build below
    # reuses them instead of compiling them again (6 minutes on 2 cores).
    cargo test --profile suite --locked --workspace "$@"
    # The library without its default features (no CLI, no GPU crates) must compile too.
    cargo check --profile suite --locked --no-default-features --lib
    [ $# -eq 0 ] || exit 0
else
    # test_core.py compares the package with the command line's binary
    cargo build --profile suite --locked --bin gradcam
fi
if [ -n "${PIP_PID:-}" ]; then
    wait "$PIP_PID" || { cat target/pip.log; exit 1; }
fi
# The package, built as `pip install .` builds it but with the suite's profile (its library
# build is the one cargo test made), then installed over any earlier build.
rm -rf target/wheels
"$PY" -m maturin build --profile suite --locked --out target/wheels
"${PIP[@]}" --force-reinstall --no-deps target/wheels/gradcam-*.whl
# The Python code is linted and formatted as pyproject.toml says
"$PY" -m ruff check python scripts examples
"$PY" -m ruff format --check python scripts examples
export GRADCAM_BIN="$PWD/target/suite/gradcam"
"$PY" -m pytest python/tests -q "$@"
