#!/usr/bin/env bash
# One prepared check of the CUDA backend on a machine with an NVIDIA GPU, the CUDA toolkit,
# PyTorch and torchvision, but no Rust and no network. Under 8 minutes on an H100.
#
# Prepare on a machine with Rust and network, from the repository root:
#   cargo build --release                                   # -> target/release/gradcam
#   pip wheel --no-deps grad-cam ttach -w wheels/           # pure-Python wheels, not committed
# then carry `target/release/gradcam` and `wheels/` along with the working tree (the device
# tool's `carry`), and run on the GPU machine:
#   bash scripts/gpu-check.sh
#
# Steps, most important first (a run cut short still answers the first questions): GPU and
# NVRTC discovery; `gradcam selftest --backend cuda` (every conv kernel and the kernels of the
# families' op set, squeeze-excitation included); the parity fixtures with --backend cuda, then
# the family fixtures; throughput at 224x224, batch 64, on resnet50 and vgg16, then on
# mobilenet_v3_large, efficientnet_b0, convnext_tiny and densenet121, next to pytorch-grad-cam's
# GradCAM and PyTorch's forward pass; grouped conv v1 against v2 per kernel; the time per
# kernel; conv v1's parity
# and throughput; `gradcam serve` under load; the wgpu adapters, and wgpu's selftest and throughput when one of them is a
# hardware GPU (bring a Vulkan loader: the device tool's README says how).
# Exits non-zero if the selftest or the parity check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${GRADCAM_BIN:-target/release/gradcam}
PY=$(command -v python3 || command -v python)
status=0
section() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
[ -x "$BIN" ] || { echo "error: $BIN not found: build it with cargo build --release and carry it"; exit 1; }

# NVRTC: the toolkit's own (lib64 of CUDA_HOME or /usr/local/cuda*), else the one inside the
# PyTorch wheels (linked under the name libnvrtc.so, which cudarc looks for).
nvrtc_dir=""
for d in ${CUDA_HOME:+$CUDA_HOME/lib64} /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 \
         /usr/local/cuda/targets/x86_64-linux/lib; do
    if ls "$d"/libnvrtc.so* >/dev/null 2>&1; then nvrtc_dir=$d; break; fi
done
if [ -z "$nvrtc_dir" ]; then
    lib=$("$PY" - <<'PY'
import glob, os, site
for s in site.getsitepackages():
    for pat in ["nvidia/cuda_nvrtc/lib/libnvrtc.so*", "nvidia/cu*/lib/libnvrtc.so*"]:
        for f in sorted(glob.glob(os.path.join(s, pat))):
            if "builtins" not in f and "alt" not in f:
                print(f); raise SystemExit
PY
)
    if [ -n "$lib" ]; then
        nvrtc_dir=$(mktemp -d)
        ln -s "$lib" "$nvrtc_dir/libnvrtc.so"
        ln -s "$(dirname "$lib")"/libnvrtc-builtins* "$nvrtc_dir/" 2>/dev/null || true
    fi
fi
echo "NVRTC from: ${nvrtc_dir:-not found}"
[ -n "$nvrtc_dir" ] && export LD_LIBRARY_PATH="$nvrtc_dir:$(dirname "$(readlink -f "$nvrtc_dir/libnvrtc.so" 2>/dev/null || echo .)")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

section "selftest --backend cuda (every kernel against naive f64 loops)"
timeout 120 "$BIN" selftest --backend cuda || status=1

section "parity fixtures with --backend cuda, default conv kernel (v3, 3xTF32)"
timeout 150 "$PY" scripts/gpu_parity.py --bin "$BIN" --backend cuda || status=1

section "family parity fixtures with --backend cuda (the new op set's kernels)"
timeout 300 "$PY" scripts/gpu_parity.py --bin "$BIN" --backend cuda --fixtures tests/fixtures/families || status=1

section "pytorch-grad-cam wheels"
# grad-cam is published as a source archive: `pip wheel` (above) turns it into a wheel; a
# carried .tar.gz from `pip download` is built here without network.
pkgs=$(ls wheels/*.whl 2>/dev/null || ls wheels/*.tar.gz 2>/dev/null)
if [ -n "$pkgs" ]; then
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation $pkgs ||
        echo "warning: installing the carried wheels failed"
else
    echo "warning: no wheels/ carried; pytorch-grad-cam must already be installed"
fi

section "throughput, 224x224, batch 64 (images/s, median of 3)"
timeout 240 "$PY" scripts/compare_speed.py --device cuda --batch 64 --iters 3 --bin "$BIN" || status=1

section "new families: throughput, 224x224, batch 64, next to pytorch-grad-cam (median of 3)"
timeout 300 "$PY" scripts/compare_speed.py --device cuda --batch 64 --iters 3 --bin "$BIN" \
    --archs mobilenet_v3_large efficientnet_b0 convnext_tiny densenet121 || status=1

section "grouped/depthwise conv: v1 (reference) against v2 (tiled), time per kernel, batch 64"
for arch in mobilenet_v3_large efficientnet_b0 convnext_tiny; do
    for k in v1 v3; do
        echo "$arch, --conv-kernel $k (v3: dense convs v3, grouped convs v2):"
        # A failed bench counts; the filter below is a report (head may cut it short).
        out=$(timeout 60 "$BIN" bench --backend cuda --conv-kernel "$k" --arch "$arch" --batch 64 --iters 3) ||
            status=1
        grep -E 'grad-cam:|grouped_conv_fwd|squeeze_excite' <<<"$out" | head -12
    done
done

section "time per kernel (CUDA events), one Grad-CAM batch of 64"
for arch in resnet50 vgg16; do
    timeout 60 "$BIN" bench --backend cuda --arch "$arch" --batch 64 --iters 1 || status=1
done

section "every conv kernel: images/s (batch 64, median of 5) and parity (TF32 ones report only)"
# GPU_CHECK_VARIANTS="v3 v4" narrows this section (device time is scarce).
variants=${GPU_CHECK_VARIANTS:-v1 v2 v3 v4}
for k in $variants; do
    for arch in resnet50 vgg16; do
        timeout 60 "$BIN" bench --backend cuda --conv-kernel "$k" --arch "$arch" --batch 64 --iters 5 --json |
            "$PY" -c 'import json,sys; d=json.load(sys.stdin); print("%-8s %s: grad-cam %7.1f images/s, forward %7.1f images/s" % (d["arch"], sys.argv[1], d["gradcam_images_per_s"], d["forward_images_per_s"]))' "$k" || status=1
    done
done
for k in $variants; do
    case $k in
        v1) timeout 150 "$PY" scripts/gpu_parity.py --bin "$BIN" --backend cuda --conv-kernel v1 | tail -1 || status=1 ;;
        v2 | v4) timeout 150 "$PY" scripts/gpu_parity.py --bin "$BIN" --backend cuda --conv-kernel "$k" --report-only | tail -1 ;;
    esac
done

section "gradcam serve on CUDA: load at concurrency 1, 4, 16 against the in-process bench"
# A pytorch-grad-cam server too when fastapi and uvicorn are installed (carry their wheels in
# wheels/ to have them); otherwise ours and the in-process bench only.
pgc=--skip-pgc
"$PY" -c 'import fastapi, uvicorn' 2>/dev/null && pgc=
# shellcheck disable=SC2086
timeout 240 "$PY" scripts/bench_serve.py --device cuda --gradcam-args="--backend cuda" --max-batch 32 \
    --duration 10 --concurrency 1 4 16 $pgc --out /tmp/bench_serve_cuda.json || status=1

section "wgpu adapters"
devices=$("$BIN" devices 2>&1)
echo "$devices"
if grep -q '^wgpu: .*\[hardware GPU\]' <<<"$devices"; then
    section "selftest --backend wgpu (both conv kernels)"
    timeout 120 "$BIN" selftest --backend wgpu || status=1
    section "wgpu throughput, 224x224, batch 64 (images/s, median of 3)"
    for arch in resnet50 vgg16; do
        timeout 90 "$BIN" bench --backend wgpu --arch "$arch" --batch 64 --iters 3 || true
    done
else
    echo "no hardware GPU adapter for wgpu: its selftest and throughput are skipped"
fi

section "done: status $status"
exit $status
