"""Parity of the CPU engine with PyTorch + pytorch-grad-cam on full-size torchvision models
(vgg19, resnet50 at 224x224, random weights with non-trivial BatchNorm statistics).
Too big for committed fixtures, so it runs locally:

    pip install torch torchvision grad-cam safetensors
    cargo build --release && python scripts/check_full_models.py

Prints one line per target layer: logits relative L2 and CAM max abs difference.
"""

import argparse
import json
import pathlib
import subprocess
import tempfile

import numpy as np
import torch
from models import reference_cams, save_weights, torchvision_model

CASES = [
    ("vgg19", [None, "features.34", "features.26"]),
    ("resnet50", [None, "layer4.1.conv2", "layer3.0.downsample.0", "layer2.3"]),
]
DEFAULT = {"vgg19": "features.35", "resnet50": "layer4"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/gradcam")
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = pathlib.Path(tempfile.mkdtemp())
    worst = 0.0
    for arch, layers in CASES:
        model = torchvision_model(arch)
        weights = tmp / f"{arch}.safetensors"
        save_weights(model, weights)
        x = torch.randn(args.batch, 3, 224, 224)
        np.save(tmp / "x.npy", x.numpy())
        with torch.no_grad():
            ref_logits = model(x).numpy()
        for layer in layers:
            name = layer or DEFAULT[arch]
            ref_cams, classes = reference_cams(model, x, name, None)
            cmd = [
                args.bin,
                "explain",
                "--weights",
                str(weights),
                "--input-tensor",
                str(tmp / "x.npy"),
                "--out",
                str(tmp / "out"),
            ] + (["--layer", layer] if layer else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            ours = [json.loads(line)["class"] for line in out.splitlines()]
            logits = np.load(tmp / "out" / "logits.npy")
            cams = np.load(tmp / "out" / "cams.npy")
            rel = np.linalg.norm(logits - ref_logits) / np.linalg.norm(ref_logits)
            cam_err = np.abs(cams - ref_cams.numpy()).max()
            worst = max(worst, cam_err)
            ok = rel <= 1e-4 and cam_err <= 1e-3 and ours == classes
            print(
                f"{arch:9} {name + (' (default)' if layer is None else ''):24} logits rel L2 {rel:.2e}"
                f"  CAM max abs {cam_err:.2e}  classes {'match' if ours == classes else 'DIFFER'}"
                f"  {'ok' if ok else 'FAIL'}",
                flush=True,
            )
    print(f"worst CAM max abs difference: {worst:.2e} (tolerance 1e-3)")


if __name__ == "__main__":
    main()
