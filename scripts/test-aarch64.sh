#!/usr/bin/env bash
# The CPU backend's tests built for aarch64 (NEON: the `gemm` crate's NEON kernels and the
# baseline build of the hand-written loops) and run under qemu-user on an x86-64 machine.
# Not part of CI (the cross build alone takes ~6 min on 2 cores); run it after touching
# src/backend/cpu or the simd dispatch. wgpu and CUDA tests are skipped: qemu-user has
# neither an aarch64 Vulkan driver nor a GPU.
#   scripts/test-aarch64.sh            # the default test set below
#   scripts/test-aarch64.sh --test families -- --skip wgpu --skip cuda   # any cargo test args
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update
    $SUDO apt-get install -y gcc-aarch64-linux-gnu qemu-user
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/aarch64-cross}
if [ $# -eq 0 ]; then
    set -- --lib --test backends --test parity --test gradcheck --test op_gradcheck \
        --test weight_gradcheck --test families --test architectures --test engine \
        -- --skip wgpu --skip cuda
fi
cargo test --release --locked --target "$TARGET" "$@"
