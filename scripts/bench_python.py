"""What the Python package costs over the engine, and the drop-in against pytorch-grad-cam.

    pip install . torch torchvision grad-cam safetensors   # or scripts/test.sh --python
    cargo build --release
    python scripts/bench_python.py --threads 2 --iters 5

For each model (random torchvision weights, batch 8, 224², default layer, top-1 class, CPU):
- "cli": `gradcam bench --weights W` (the command line's in-process figure: the median of
  --iters explanations inside one process, weights loaded once);
- "package": gradcam.Explainer(W, backend="cpu").explain(x) from this process, median of --iters;
  the overhead is package / cli - 1 (the goal: at most 5%);
- "pgc" and "drop-in": pytorch-grad-cam's GradCAM and gradcam.torch.GradCAM on the same model and
  input in this process (the first drop-in call exports the model; it is a warm-up, like
  pytorch-grad-cam's own first call), median of --iters; the ratio pgc / drop-in.

The CLI's and the package's runs alternate (cli, package, cli, package) and each figure is the
median over both rounds, so that a drift of the machine's speed hits both alike.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from compare_speed import median_time  # noqa: E402
from models import save_weights  # noqa: E402

LAYER = {"resnet50": "layer4", "vgg16": "features.29", "resnet18": "layer4"}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "")
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags.split()]
    return f"{fields.get('Model name', '?').strip()} ({', '.join(simd)}; {os.cpu_count()} cpus)"


def cli_bench(binary, weights, batch, iters, threads):
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [binary, "bench", "--weights", weights, "--batch", str(batch), "--iters", str(iters),
         "--backend", "cpu", "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["gradcam_median_s"]


def bench(arch, a, tmp):
    import gradcam

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    w = tmp / f"{arch}.safetensors"
    save_weights(model, w)
    x = np.random.default_rng(0).standard_normal((a.batch, 3, 224, 224)).astype(np.float32)
    ex = gradcam.Explainer(w, backend="cpu", threads=a.threads)
    ex.explain(x)  # warm-up: buffers, pools
    cli, pkg = [], []
    for _ in range(2):
        cli.append(cli_bench(a.binary, w, a.batch, a.iters, a.threads))
        pkg.append(median_time(lambda: ex.explain(x), a.iters, warmup=0))
    row = {"arch": arch, "cli_s": statistics.median(cli), "package_s": statistics.median(pkg)}
    row["overhead"] = row["package_s"] / row["cli_s"] - 1
    if a.no_pgc:
        return row
    from pytorch_grad_cam import GradCAM as PgcGradCAM

    import gradcam.torch as gt

    target = [model.get_submodule(LAYER[arch])]
    xt = torch.from_numpy(x)
    pgc = PgcGradCAM(model=model, target_layers=target)
    ours = gt.GradCAM(model=model, target_layers=target)
    pgc(input_tensor=xt, targets=None)
    ours(input_tensor=xt, targets=None)  # exports the model once
    row["pgc_s"] = median_time(lambda: pgc(input_tensor=xt, targets=None), a.iters, warmup=0)
    row["dropin_s"] = median_time(lambda: ours(input_tensor=xt, targets=None), a.iters, warmup=0)
    row["dropin_speedup"] = row["pgc_s"] / row["dropin_s"]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["resnet50", "vgg16"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gradcam"))
    ap.add_argument("--no-pgc", action="store_true", help="skip the drop-in against pytorch-grad-cam")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    print(f"machine: {cpu_model()}; torch {torch.__version__}; threads {a.threads}; batch {a.batch}, 224²")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs:
            rows.append(bench(arch, a, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print()
    head = f"{'model':10} {'cli s':>8} {'package s':>10} {'overhead':>9}"
    print(head + f" {'pgc s':>8} {'drop-in s':>10} {'speed-up':>9}")
    for r in rows:
        extra = (
            f" {r['pgc_s']:8.3f} {r['dropin_s']:10.3f} {r['dropin_speedup']:8.2f}×" if "pgc_s" in r else ""
        )
        print(f"{r['arch']:10} {r['cli_s']:8.3f} {r['package_s']:10.3f} {r['overhead']:+8.1%}{extra}")


if __name__ == "__main__":
    main()
