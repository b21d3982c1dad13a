"""Throughput of this project against pytorch-grad-cam's GradCAM and PyTorch's plain forward
pass, same model, input size, batch and thread count (or GPU), one after the other.

    pip install torch torchvision grad-cam safetensors
    cargo build --release && python scripts/compare_speed.py --threads 2
    python scripts/compare_speed.py --device cuda --batch 64      # on an NVIDIA GPU

With --device cuda, PyTorch runs on the GPU (its defaults: cuDNN, TF32 convolutions allowed)
and this project on --backend cuda (--conv-kernel picks v1 or v2; default: the backend's).

Reports medians of --iters timed runs after one warm-up, in images/s, and the ratios.
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import tempfile
import time

import torch
import torchvision

from models import save_weights

DEFAULT_LAYER = {"vgg16": "features.29", "resnet50": "layer4"}


def median_time(fn, iters):
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["resnet50", "vgg16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--bin", default="target/release/gradcam")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--conv-kernel", default=None, choices=["v1", "v2"])
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    torch.set_num_threads(args.threads)
    from pgc_compat import import_gradcam
    GradCAM, standins = import_gradcam()
    if standins:
        print(f"note: missing {', '.join(standins)}: stand-ins used (cv2.resize -> torch bilinear)")

    tmp = pathlib.Path(tempfile.mkdtemp())
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"threads {args.threads}; batch {args.batch}; {args.size}x{args.size}; "
          f"median of {args.iters} runs; torch {torch.__version__}")
    print(f"{'model':9} {'pytorch fwd':>12} {'pgc GradCAM':>12} {'gradcam fwd':>12} {'gradcam CAM':>12} "
          f"{'CAM speed-up':>13}")
    for arch in args.archs:
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        weights = tmp / f"{arch}.safetensors"
        try:
            save_weights(model, weights)
            source = ["--weights", str(weights)]
        except ImportError:
            # No safetensors package (the GPU machines): the project's own random weights of
            # the same architecture; throughput does not depend on the values.
            source = ["--arch", arch]
        model = model.to(device)
        x = torch.randn(args.batch, 3, args.size, args.size, device=device)

        def forward():
            with torch.no_grad():
                model(x)
            sync()

        t_fwd = median_time(forward, args.iters)
        layer = model.get_submodule(DEFAULT_LAYER[arch])
        with GradCAM(model=model, target_layers=[layer]) as cam:
            t_pgc = median_time(lambda: (cam(input_tensor=x, targets=None), sync()), args.iters)
        del model, x
        if args.device == "cuda":
            torch.cuda.empty_cache()  # leave the GPU's memory to the next process
        cmd = [args.bin, "--threads", str(args.threads), "bench", *source,
               "--batch", str(args.batch), "--size", str(args.size), "--iters", str(args.iters), "--json",
               "--backend", args.device]
        if args.conv_kernel:
            cmd += ["--conv-kernel", args.conv_kernel]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        ours = json.loads(out)
        ips = lambda t: args.batch / t
        cam_ips = ours["gradcam_images_per_s"]
        if args.device == "cuda":
            print(f"  ({ours['backend']})")
        print(f"{arch:9} {ips(t_fwd):12.2f} {ips(t_pgc):12.2f} {ours['forward_images_per_s']:12.2f} "
              f"{cam_ips:12.2f} {cam_ips / ips(t_pgc):12.2f}x", flush=True)
    print("(images/s; 'pgc' = pytorch-grad-cam GradCAM, default target layer, top-1 class)")


if __name__ == "__main__":
    main()
