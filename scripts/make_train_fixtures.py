"""Writes the training fixtures under tests/fixtures/train/: for the seed CNN and a narrow
VGG11-BN (torchvision's VGG at 1/16 width), initial weights, two batches, and the parameters
after two torch.optim.SGD steps (lr, momentum, weight decay); two steps, because a single
step never reads the momentum buffer. BatchNorm is frozen (eval mode, weight and bias not
trained) and dropout has
p = 0 (a random mask cannot be reproduced across frameworks), as tests/train.rs runs them.

    pip install torch torchvision safetensors
    python scripts/make_train_fixtures.py            # fixtures
    python scripts/make_train_fixtures.py --check    # also: Rust-saved weights load in PyTorch

--check runs `gradcam train` (cargo run --release) for a fresh seed CNN and a fine-tuned
narrow VGG11-BN with a replaced head, and loads both with model.load_state_dict(strict=True).
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
from models import SeedCNN, narrow_vgg, prepare, save_weights
from safetensors.torch import load_file, save_file
from torchvision.models.vgg import cfgs

REPO = pathlib.Path(__file__).resolve().parent.parent
ROOT = REPO / "tests" / "fixtures" / "train"
SGD = dict(lr=0.1, momentum=0.9, weight_decay=5e-3)
BATCH = 6


def frozen_bn_train_mode(model):
    """Training mode with frozen BatchNorm (eval mode: running statistics used and kept;
    weight and bias not trained) and dropout p = 0."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


def make(name, model, classes, seed):
    torch.manual_seed(seed)
    out = ROOT / name
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors")
    batches = {}
    for i in range(2):
        batches[f"x{i}"] = torch.randn(BATCH, 3, 32, 32)
        # Labels as f32: the Rust weight reader keeps float tensors only.
        batches[f"y{i}"] = torch.randint(0, classes, (BATCH,)).float()
    frozen_bn_train_mode(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **SGD)
    losses = []
    for i in range(2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(batches[f"x{i}"]), batches[f"y{i}"].long())
        loss.backward()
        opt.step()
        losses.append(loss.item())
    save_file(batches, str(out / "batches.safetensors"))
    expected = {k: v.detach().contiguous() for k, v in model.named_parameters() if v.requires_grad}
    save_file(expected, str(out / "expected.safetensors"))
    (out / "manifest.json").write_text(json.dumps({"sgd": SGD, "losses": losses}, indent=1) + "\n")
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, losses {losses}")


def check_rust_checkpoints_load():
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        run = ["cargo", "run", "--release", "--quiet", "--", "train"]
        common = [
            "--data",
            "shapes",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--lr",
            "0.01",
            "--train-count",
            "48",
            "--test-count",
            "16",
        ]
        subprocess.run(
            run + ["--arch", "seed-cnn", "--out", str(d / "seed.safetensors")] + common, check=True, cwd=REPO
        )
        m = SeedCNN(3)
        m.load_state_dict(load_file(str(d / "seed.safetensors")))
        print("seed-cnn checkpoint loads in PyTorch (strict)")
        vgg = prepare(narrow_vgg(cfgs["A"], batch_norm=True, hidden=32, num_classes=5), 7)
        save_weights(vgg, d / "vgg.safetensors")
        subprocess.run(
            run
            + [
                "--init",
                str(d / "vgg.safetensors"),
                "--replace-head",
                "3",
                "--out",
                str(d / "vgg3.safetensors"),
            ]
            + common,
            check=True,
            cwd=REPO,
        )
        vgg3 = narrow_vgg(cfgs["A"], batch_norm=True, hidden=32, num_classes=3)
        sd = load_file(str(d / "vgg3.safetensors"))
        vgg3.load_state_dict(sd)
        before = load_file(str(d / "vgg.safetensors"))
        assert torch.equal(sd["features.1.running_mean"], before["features.1.running_mean"]), (
            "BN must stay frozen"
        )
        assert torch.equal(sd["features.1.weight"], before["features.1.weight"]), "BN must stay frozen"
        print("fine-tuned narrow vgg11_bn (head replaced, 3 classes) loads in PyTorch (strict); BN unchanged")


def main():
    torch.manual_seed(0)
    make("seed_cnn", SeedCNN(3), 3, 1)
    torch.manual_seed(2)
    vgg = prepare(narrow_vgg(cfgs["A"], batch_norm=True, hidden=32, num_classes=5), 3)
    make("vgg11_bn_narrow", vgg, 5, 4)
    if "--check" in sys.argv:
        check_rust_checkpoints_load()


if __name__ == "__main__":
    main()
