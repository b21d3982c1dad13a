"""Writes src/model/zoo_shapes.tsv: the state_dict key→shape lists of the torchvision variants
that `gradcam bench --arch` builds random weights for beyond seed-cnn/VGG/ResNet (the families
of the speed table), taken from the manifests scripts/make_family_fixtures.py writes.

    python scripts/make_zoo_shapes.py
"""

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
VARIANTS = [
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "densenet121",
    "regnet_y_1_6gf",
    "resnext50_32x4d",
    "mobilenet_v2",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "googlenet",
    "inception_v3",
    "mnasnet1_0",
    "regnet_x_1_6gf",
    "alexnet",
    "efficientnet_v2_s",
    "wide_resnet50_2",
]


def main():
    lines = []
    for v in VARIANTS:
        m = json.loads((ROOT / "tests/fixtures/families/manifests" / f"{v}.json").read_text())
        for key, dtype, shape in m["tensors"]:
            if dtype == "F32":
                lines.append(f"{v}\t{key}\t{','.join(map(str, shape))}")
    (ROOT / "src/model/zoo_shapes.tsv").write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} tensors of {len(VARIANTS)} variants")


if __name__ == "__main__":
    main()
