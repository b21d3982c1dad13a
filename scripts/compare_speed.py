"""Throughput of this project against pytorch-grad-cam's GradCAM and PyTorch's plain forward
pass, same model, input size, batch and thread count (or GPU), one after the other.

    pip install torch torchvision grad-cam safetensors
    cargo build --release && python scripts/compare_speed.py --threads 2
    python scripts/compare_speed.py --archs mobilenet_v3_large efficientnet_b0 --iters 5
    python scripts/compare_speed.py --mode process     # one process per batch, load included
    python scripts/compare_speed.py --device cuda --batch 64      # on an NVIDIA GPU

--mode inprocess (the default) times the work alone: PyTorch's forward and pytorch-grad-cam's
GradCAM in this process, ours with `gradcam bench`. --mode process times what a user waits for:
one `gradcam explain --input-tensor` process per batch against one Python process that imports
torch, builds the model, loads the same safetensors file and runs GradCAM on the same batch,
each writing its CAMs to a .npy file.

With --device cuda, PyTorch runs on the GPU (its defaults: cuDNN, TF32 convolutions allowed)
and this project on --backend cuda (--conv-kernel picks v1 or v2; default: the backend's).

Reports medians of --iters timed runs after one warm-up, in images/s, and the ratios.
"""

import argparse
import functools
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torchvision
from models import save_weights

# The families' default targets (`gradcam inspect` prints ours; pytorch-grad-cam's README
# recommends features[-1] / layer4 / trunk_output), as modules pytorch-grad-cam can hook.
DEFAULT_LAYER = {
    "vgg16": "features.29",
    "resnet18": "layer4",
    "resnet50": "layer4",
    "resnext50_32x4d": "layer4",
    "mobilenet_v3_large": "features",
    "efficientnet_b0": "features",
    "convnext_tiny": "features",
    "densenet121": "features",
    "regnet_y_1_6gf": "trunk_output",
}
FAMILY_BENCH = [
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "densenet121",
    "regnet_y_1_6gf",
    "resnext50_32x4d",
]

# The Python side of --mode process: what a user of pytorch-grad-cam runs for one batch.
PGC_PROCESS = """
import sys, numpy, torch, torchvision
from safetensors.torch import load_file
sys.path.insert(0, {scripts!r})
from pgc_compat import import_gradcam
torch.set_num_threads({threads})
GradCAM, _ = import_gradcam()
model = getattr(torchvision.models, {arch!r})(weights=None)
model.load_state_dict(load_file({weights!r}))
model.eval()
x = torch.from_numpy(numpy.load({x!r}))
with GradCAM(model=model, target_layers=[model.get_submodule({layer!r})]) as cam:
    numpy.save({out!r}, cam(input_tensor=x, targets=None))
"""


def cpu_model():
    """lscpu's model name and the vector extensions that change the picture."""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    ext = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni") if f in flags]
    return f"{fields.get('Model name', '?').strip()} ({' '.join(ext) or 'no AVX2'})"


def median_wall(cmd, iters, warmup=1):
    """Median wall time of running `cmd` as a process, after `warmup` runs (page cache)."""
    return median_process(cmd, iters, warmup)[0]


# Runs a command as its child and reports that child's wall time and peak RSS. The child must
# not be forked from this script itself: Linux counts the forking process's memory (torch,
# here) into a child's ru_maxrss up to its exec.
MEASURE = """
import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nmeasured {time.perf_counter() - t} {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_process(cmd):
    """(wall seconds, peak resident set in MB) of one run of `cmd`."""
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", MEASURE, *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited with {run.returncode}: {run.stderr}")
    wall, rss_kb = run.stderr.rstrip().rsplit("\n", 1)[-1].split()[1:]
    return float(wall), int(rss_kb) / 1024  # ru_maxrss is in KB on Linux


def median_process(cmd, iters, warmup=1):
    """Medians of wall time and peak RSS over `iters` runs of `cmd`, after `warmup` runs (the
    page cache)."""
    for _ in range(warmup):
        run_process(cmd)
    runs = [run_process(cmd) for _ in range(iters)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(2))


def median_time(fn, iters, warmup=1):
    """Median of `iters` timed calls of `fn`, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--archs",
        nargs="+",
        default=["resnet50", "vgg16"],
        help=f"torchvision names; 'families' = {' '.join(FAMILY_BENCH)}",
    )
    ap.add_argument("--mode", default="inprocess", choices=["inprocess", "process", "both"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--bin", default="target/release/gradcam")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--conv-kernel", default=None, choices=["v1", "v2"])
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated CAM methods (gradcam++,scorecam,ablationcam) timed "
        "against pytorch-grad-cam's classes instead of the GradCAM table",
    )
    ap.add_argument(
        "--mask-batch",
        type=int,
        default=16,
        help="masks / ablations per forward pass, both sides (--methods)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs before the timed ones (--methods; 0 for ScoreCAM at "
        "resnet50 scale, where one run takes minutes)",
    )
    args = ap.parse_args()
    args.archs = [a for arch in args.archs for a in (FAMILY_BENCH if arch == "families" else [arch])]
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
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; load average "
        f"{os.getloadavg()[0]:.1f}; threads {args.threads}; batch {args.batch}; "
        f"{args.size}x{args.size}; median of {args.iters} runs; torch {torch.__version__}"
    )
    if args.methods:
        return method_rows(args, tmp)
    if args.mode != "process":
        print(
            f"{'model':18} {'pytorch fwd':>12} {'pgc GradCAM':>12} {'gradcam fwd':>12} "
            f"{'gradcam CAM':>12} {'fwd ratio':>10} {'CAM speed-up':>13}"
        )
    rows = []
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
        if args.mode != "inprocess":
            rows.append(process_row(args, arch, weights, tmp))
            if args.mode == "process":
                continue
        model = model.to(device)
        x = torch.randn(args.batch, 3, args.size, args.size, device=device)

        def forward(model, x):
            with torch.no_grad():
                model(x)
            sync()

        # The loop's model and x are passed in (a partial, a lambda's default argument) rather than
        # read from the enclosing scope; neither outlives its median_time call, so `del` below
        # still frees them.
        t_fwd = median_time(functools.partial(forward, model, x), args.iters)
        layer = model.get_submodule(DEFAULT_LAYER[arch])
        with GradCAM(model=model, target_layers=[layer]) as cam:
            t_pgc = median_time(lambda x=x: (cam(input_tensor=x, targets=None), sync()), args.iters)
        del model, x
        if args.device == "cuda":
            torch.cuda.empty_cache()  # leave the GPU's memory to the next process
        cmd = [
            args.bin,
            "--threads",
            str(args.threads),
            "bench",
            *source,
            "--batch",
            str(args.batch),
            "--size",
            str(args.size),
            "--iters",
            str(args.iters),
            "--json",
            "--backend",
            args.device,
        ]
        if args.conv_kernel:
            cmd += ["--conv-kernel", args.conv_kernel]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        ours = json.loads(out)

        def ips(t):
            return args.batch / t

        cam_ips = ours["gradcam_images_per_s"]
        if args.device == "cuda":
            print(f"  ({ours['backend']})")
        fwd_ips = ours["forward_images_per_s"]
        print(
            f"{arch:18} {ips(t_fwd):12.2f} {ips(t_pgc):12.2f} {fwd_ips:12.2f} "
            f"{cam_ips:12.2f} {fwd_ips / ips(t_fwd):9.2f}x {cam_ips / ips(t_pgc):12.2f}x",
            flush=True,
        )
    if args.mode != "process":
        print("(images/s; 'pgc' = pytorch-grad-cam GradCAM, default target layer, top-1 class)")
    if rows:
        print(
            f"one process per batch of {args.batch}, load included (seconds and peak RSS in MB, "
            f"median of {args.iters}):"
        )
        print(
            f"{'model':18} {'file MB':>8} {'pgc s':>7} {'pgc MB':>7} {'gradcam s':>10} "
            f"{'gradcam MB':>11} {'speed-up':>9}"
        )
        for arch, size, (t_pgc, m_pgc), (t_ours, m_ours) in rows:
            print(
                f"{arch:18} {size:8.0f} {t_pgc:7.2f} {m_pgc:7.0f} {t_ours:10.2f} {m_ours:11.0f} "
                f"{t_pgc / t_ours:8.2f}x"
            )


PGC_CLASSES = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "fem": "FEM",
}


def method_rows(args, tmp):
    """Each method of --methods: pytorch-grad-cam's class in this process (the model built and
    warm) against one `gradcam explain --input-tensor --method M` process on the same batch
    (its model loading included), top-1 classes, --mask-batch perturbed inputs per pass."""
    import numpy
    import pytorch_grad_cam

    print(f"{'model':18} {'method':12} {'pgc s/batch':>12} {'gradcam s/batch':>16} {'speed-up':>9}")
    for arch in args.archs:
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        weights = tmp / f"{arch}.safetensors"
        save_weights(model, weights)
        x = torch.randn(args.batch, 3, args.size, args.size)
        xpath = tmp / f"{arch}.x.npy"
        numpy.save(xpath, x.numpy())
        layer = model.get_submodule(DEFAULT_LAYER[arch])
        for method in args.methods.split(","):
            cls = getattr(pytorch_grad_cam, PGC_CLASSES[method])
            with cls(model=model, target_layers=[layer]) as cam:
                cam.batch_size = args.mask_batch
                t_pgc = median_time(lambda x=x: cam(input_tensor=x, targets=None), args.iters, args.warmup)
            ours = explain_cmd(
                args,
                weights,
                "--method",
                method,
                "--layer",
                DEFAULT_LAYER[arch],
                "--batch-size",
                str(args.mask_batch),
                "--input-tensor",
                str(xpath),
                "--out",
                str(tmp / f"{arch}.{method}"),
            )
            t_ours = median_wall(ours, args.iters, args.warmup)
            print(f"{arch:18} {method:12} {t_pgc:12.2f} {t_ours:16.2f} {t_pgc / t_ours:8.2f}x", flush=True)
    print(
        "(seconds per batch, median; pgc in process with a warm model, ours one process "
        "per batch, loading included)"
    )


def process_row(args, arch, weights, tmp):
    """(arch, weights file MB, pytorch-grad-cam's and ours (seconds, peak RSS MB)) for one
    batch; with --batch 1, the time to the first result."""
    import numpy

    x = tmp / f"{arch}.x.npy"
    numpy.save(x, torch.randn(args.batch, 3, args.size, args.size).numpy())
    script = PGC_PROCESS.format(
        scripts=str(pathlib.Path(__file__).parent),
        threads=args.threads,
        arch=arch,
        weights=str(weights),
        x=str(x),
        layer=DEFAULT_LAYER[arch],
        out=str(tmp / f"{arch}.pgc.npy"),
    )
    pgc = median_process(["python3", "-c", script], args.iters)
    ours = explain_cmd(
        args,
        weights,
        "--input-tensor",
        str(x),
        "--out",
        str(tmp / f"{arch}.ours"),
    )
    return arch, weights.stat().st_size / 2**20, pgc, median_process(ours, args.iters)


def explain_cmd(args, weights, *rest):
    """Our `gradcam explain` command line with the run's threads, weights and backend."""
    cmd = [args.bin, "--threads", str(args.threads), "explain", "--weights", str(weights)]
    return [*cmd, "--backend", args.device, "--quiet", *rest]


if __name__ == "__main__":
    main()
