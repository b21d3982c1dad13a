"""Writes the parity fixtures under tests/fixtures/: small models with torchvision's layouts,
their weights in f32/f16/bf16, inputs, and the logits and CAMs that PyTorch and
pytorch-grad-cam (PyPI `grad-cam` 1.5.x) compute for them.

    pip install torch torchvision grad-cam safetensors
    python scripts/make_fixtures.py

The Rust test tests/parity.rs compares the engine against these files.
"""

import json
import pathlib

import torch
from models import NarrowResNet, SeedCNN, narrow_vgg, prepare, reference_cams, round_to, save_weights
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vgg import cfgs

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"

# name, model factory, weight dtype, input shape, [(layer, class or None)]
FIXTURES = [
    (
        "seed_cnn",
        lambda: SeedCNN(10),
        torch.float32,
        (3, 3, 32, 32),
        [("conv3", None), ("conv2", 7), ("relu1", None), ("pool2", 3), ("conv1", 1)],
    ),
    (
        "vgg11_bn_narrow",
        lambda: narrow_vgg(cfgs["A"], batch_norm=True),
        torch.float16,
        (2, 3, 64, 48),
        [
            ("features.27", None),
            ("features.8", 3),
            ("features.9", None),
            ("features.13", 5),
            ("features", None),
        ],
    ),
    (
        "resnet_basic_narrow",
        lambda: NarrowResNet(BasicBlock, [2, 1, 1, 2]),
        torch.float32,
        (2, 3, 64, 48),
        [
            ("layer4", None),
            ("layer4.1.conv2", 2),
            ("layer3.0.downsample.0", None),
            ("layer1.0.relu", 4),
            ("layer2", None),
            ("layer1.1.bn2", None),
        ],
    ),
    (
        "resnet_bottleneck_narrow",
        lambda: NarrowResNet(Bottleneck, [1, 1, 2, 1]),
        torch.bfloat16,
        (2, 3, 64, 48),
        [
            ("layer4", None),
            ("layer3.1.conv2", 6),
            ("layer1.0.downsample.1", None),
            ("layer2.0.relu", None),
            ("relu", 9),
            ("maxpool", None),
        ],
    ),
]


def main():
    for i, (name, make, dtype, shape, cases) in enumerate(FIXTURES):
        torch.manual_seed(100 + i)
        model = round_to(prepare(make(), 200 + i), dtype)
        x = torch.randn(*shape)
        with torch.no_grad():
            logits = model(x)
        out = ROOT / name
        out.mkdir(parents=True, exist_ok=True)
        save_weights(model, out / "model.safetensors", dtype)
        expected = {"input": x.contiguous(), "logits": logits.contiguous()}
        manifest = {"weights_dtype": str(dtype).removeprefix("torch."), "cases": []}
        for j, (layer, cls) in enumerate(cases):
            cams, classes = reference_cams(model, x, layer, cls)
            expected[f"cam.{j}"] = cams.float().contiguous()
            manifest["cases"].append({"layer": layer, "class": cls, "classes": classes, "cam": f"cam.{j}"})
        save_file(expected, str(out / "expected.safetensors"))
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{name}: {sum(p.numel() for p in model.parameters())} params, {len(cases)} cases")


if __name__ == "__main__":
    main()
