"""Images per second of gradcam.ray.CamPredictor on a local Ray cluster (not a test).

    PYTHONPATH=python python3 scripts/bench_ray.py [--runs 3] [--models seed,resnet18]

For each model: a folder's files explained through a "path" column (the actors read, decode
and preprocess them), with one actor using every core (threads = cores) and with one actor per
core (threads = 1 each), against the same files explained in this process with explain_images
(every core, no Ray). Ray's numbers are end to end (from from_items to the last result in the
driver, the actors' start-up included), the time until the first batch starts in an actor
(about the start-up), and the images over the time from the first batch's start to the last
batch's end in the actors (the steady state: no start-up, but Ray's work between batches
included).
Medians of --runs runs; the load average before and after says how busy the machine was.

Models: the bundled seed-cnn (32x32, 3 classes) on examples/shapes/, and resnet18 with random
weights (torchvision, written as a state_dict; needs torch, torchvision, safetensors) on random
320x240 JPEGs (resized to 256, cropped to 224), both generated in a temporary folder.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import gradcam
from gradcam.ray import CamPredictor

ROOT = Path(__file__).resolve().parents[1]


def cpu_info():
    out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, {' '.join(simd) or 'no AVX2'}"


def seed_model(tmp, n):
    files = sorted(str(p) for p in (ROOT / "examples" / "shapes").glob("*.png"))
    return str(ROOT / "examples" / "seed-cnn-shapes.safetensors"), (files * (n // len(files) + 1))[:n]


def resnet18_model(tmp, n):
    import safetensors.torch
    import torch
    import torchvision
    from PIL import Image

    torch.manual_seed(0)
    weights = os.path.join(tmp, "resnet18.safetensors")
    safetensors.torch.save_file(torchvision.models.resnet18(weights=None).state_dict(), weights)
    rng = np.random.default_rng(0)
    files = []
    for i in range(8):
        # smooth random images (a JPEG of noise would be slow to decode and unlike a photo)
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((320, 240), Image.BILINEAR)
        files.append(os.path.join(tmp, f"img{i}.jpg"))
        img.save(files[-1], quality=90)
    return weights, (files * (n // len(files) + 1))[:n]


def direct(weights, files, batch_size, threads):
    ex = gradcam.Explainer(weights, backend="cpu", threads=threads)
    ex.explain_images(files[:batch_size])  # warm-up
    t = time.perf_counter()
    for i in range(0, len(files), batch_size):
        res = ex.explain_images(files[i : i + batch_size])
        assert res.ok.all()
    return time.perf_counter() - t


class TimedPredictor(CamPredictor):
    """CamPredictor that stamps each row with when its batch started and ended (time.time())."""

    def __call__(self, batch):
        t0 = time.time()
        out = super().__call__(batch)
        n = len(out["class"])
        out["t0"], out["t1"] = np.full(n, t0), np.full(n, time.time())
        return out


def on_ray(ray, weights, files, batch_size, concurrency, threads):
    """(seconds end to end, seconds to the first batch's start, images/s while the actors work)."""
    t = time.time()
    ds = ray.data.from_items([{"path": f} for f in files]).map_batches(
        TimedPredictor,
        fn_constructor_kwargs={"weights": weights, "backend": "cpu", "threads": threads, "keep_input": False},
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=threads,
    )
    # no stage after the actors: its tasks would wait for the CPUs the actors hold
    out = ds.take_all()
    end = time.time()
    assert len(out) == len(files) and not any(r["error"] for r in out)
    t0, t1 = min(r["t0"] for r in out), max(r["t1"] for r in out)
    return end - t, t0 - t, len(files) / (t1 - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", default="seed,resnet18")
    ap.add_argument("--seed-images", type=int, default=4096)
    ap.add_argument("--resnet-images", type=int, default=128)
    ap.add_argument("--seed-batch", type=int, default=256)
    ap.add_argument("--resnet-batch", type=int, default=16)
    args = ap.parse_args()
    import ray

    cores = os.cpu_count()
    print(f"machine: {cpu_info()}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"ray {ray.__version__}, numpy {np.__version__}, gradcam {gradcam.__version__}")
    t = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    print(f"ray.init: {time.perf_counter() - t:.1f} s\n")
    configs = [(1, cores), (cores, 1)] if cores > 1 else [(1, 1)]

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            make, n, bs = {
                "seed": (seed_model, args.seed_images, args.seed_batch),
                "resnet18": (resnet18_model, args.resnet_images, args.resnet_batch),
            }[name]
            weights, files = make(tmp, n)
            print(f"{name}: {n} images, batch {bs}")
            ts = [direct(weights, files, bs, cores) for _ in range(args.runs)]
            print(f"  in process, explain_images, {cores} threads: {n / statistics.median(ts):8.1f} images/s")
            for conc, threads in configs:
                runs = [on_ray(ray, weights, files, bs, conc, threads) for _ in range(args.runs)]
                t, first, steady = (statistics.median(r[k] for r in runs) for k in range(3))
                print(
                    f"  ray, concurrency {conc}, threads {threads}: {n / t:8.1f} images/s end to end "
                    f"({t:.2f} s; runs {' '.join(f'{r[0]:.2f}' for r in runs)}); first batch starts after "
                    f"{first:.2f} s; {steady:.1f} images/s while the actors work"
                )
            print()
    ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
