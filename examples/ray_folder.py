"""Explains every image of a folder on a local Ray cluster and writes the overlays.

    python examples/ray_folder.py                                  # the bundled model and examples/shapes/
    python examples/ray_folder.py resnet50.safetensors photos/ --out overlays --concurrency 2 --batch-size 16

The files are read, decoded and preprocessed by the actors (CamPredictor's "path" column); each
actor holds one explainer with the CPUs Ray gives it (--num-cpus divided by --concurrency); the
overlays (pytorch-grad-cam's show_cam_on_image on the network's view of the image) are written as
PNG by Ray tasks. A file that cannot be decoded is reported, not fatal. Needs `pip install
"ray[data]" pillow`.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import ray

from gradcam.ray import CamPredictor

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def write_overlays(batch, out):
    """A Ray task: one overlay PNG per explained row; returns the small columns only."""
    from PIL import Image

    import gradcam

    written = []
    for path, rgb, cam, error in zip(batch["path"], batch["rgb"], batch["cam"], batch["error"]):
        if error:
            written.append("")
            continue
        dest = os.path.join(out, Path(path).stem + ".overlay.png")
        Image.fromarray(gradcam.overlay(rgb, cam)).save(dest)
        written.append(dest)
    return {
        "path": batch["path"],
        "overlay": np.array(written, dtype=object),
        "class": batch["class"],
        "probability": batch["probability"],
        "error": batch["error"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="?", default=str(ROOT / "examples" / "seed-cnn-shapes.safetensors"))
    ap.add_argument("folder", nargs="?", default=str(ROOT / "examples" / "shapes"))
    ap.add_argument("--out", default="ray-overlays", help="output folder (default: ./ray-overlays)")
    ap.add_argument("--concurrency", type=int, default=1, help="explainer actors (default 1)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--method", default="gradcam", help="a CAM method (its map is drawn)")
    ap.add_argument("--layer", default=None, help="target layer (default: the model's)")
    ap.add_argument("--backend", default="auto", help="auto, cpu, wgpu or cuda")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local cluster")
    ap.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (with --backend cuda/auto)")
    args = ap.parse_args()

    files = sorted(str(p) for p in Path(args.folder).iterdir() if p.suffix.lower() in EXTENSIONS)
    if not files:
        ap.error(f"no images in {args.folder}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"ray.init: {time.perf_counter() - t:.1f} s")

    per_actor = max(1, args.num_cpus // args.concurrency)  # CamPredictor's threads follow it
    # GPU actors: Ray reserves 1 CPU each (it warns when both num_cpus and num_gpus are given)
    resources = {"num_gpus": args.num_gpus} if args.num_gpus else {"num_cpus": per_actor}
    t = time.perf_counter()
    ds = ray.data.from_items([{"path": f} for f in files])
    ds = ds.map_batches(
        CamPredictor,
        fn_constructor_kwargs={
            "weights": args.weights,
            "method": args.method,
            "layer": args.layer,
            "backend": args.backend,
            "rgb": True,
        },
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        **resources,
    )
    # num_cpus=0: the writers run beside the actors, which hold every CPU
    ds = ds.map_batches(write_overlays, fn_kwargs={"out": str(out.resolve())}, batch_size=None, num_cpus=0)
    rows = ds.take_all()
    dt = time.perf_counter() - t

    failed = [r for r in rows if r["error"]]
    for r in sorted(rows, key=lambda r: r["path"])[:10]:
        what = r["error"] or f"class {r['class']} p={r['probability']:.3f} -> {r['overlay']}"
        print(f"  {Path(r['path']).name}: {what}")
    if len(rows) > 10:
        print(f"  ... {len(rows) - 10} more")
    print(
        f"{len(rows)} images ({len(failed)} failed) in {dt:.2f} s: {len(rows) / dt:.1f} images/s "
        f"({args.concurrency} actor(s), {resources}, batch {args.batch_size}; actor start-up included)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
