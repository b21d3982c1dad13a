#!/usr/bin/env bash
# The whole test suite on a fresh Debian/Ubuntu machine without a GPU: installs what the tests
# need when it is missing, then runs `cargo test --profile suite --locked` (release code without
# LTO: see Cargo.toml and docs/testing.md).
#  - Mesa's software Vulkan driver (lavapipe, `mesa-vulkan-drivers`): the wgpu tests run on it.
#  - NVRTC from PyPI (`nvidia-cuda-nvrtc-cu12`): tests/cuda_kernels.rs compiles every
#    kernels/*.cu with it. The cu12 wheel ships libnvrtc.so.12, a name cudarc (built with CUDA
#    12.8 bindings) loads; the CUDA 13 wheel ships only libnvrtc.so.13, which it does not look for.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update
    $SUDO apt-get install -y mesa-vulkan-drivers
fi
PY=$(command -v python3 || command -v python)
if ! "$PY" -c 'import nvidia.cuda_nvrtc' 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check nvidia-cuda-nvrtc-cu12
fi
NVRTC_LIB=$("$PY" -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))')
ls "$NVRTC_LIB"/libnvrtc.so.12 >/dev/null
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Mesa's device-select layer would print "XDG_RUNTIME_DIR is invalid" on a headless machine in
# every test that opens an adapter (the gradcam binary turns it off itself; test crates do not).
export NODEVICE_SELECT=1
cargo --version
cargo test --profile suite --locked "$@"
# The library without its default features (no CLI, no GPU crates) must build too (same
# profile, so the dependencies built for the tests are reused).
cargo build --profile suite --locked --no-default-features --lib
