"""Writes tests/fixtures/metrics/: pytorch-grad-cam's (PyPI `grad-cam` 1.5.x) faithfulness metrics
for the seed_cnn fixture model, its inputs and a few CAMs, with ROAD's imputer noise set to 0.

    pip install torch grad-cam safetensors
    python scripts/make_metric_fixtures.py

Needs tests/fixtures/seed_cnn/ (scripts/make_fixtures.py). The Rust test tests/metrics.rs compares
src/metrics/ against these files:
  expected.safetensors
    cams            [cases, H, W] f32   the CAM of each case (image = manifest cases[i].image)
    removed_morf    [cases, P, H, W] u8 pixels ROADMostRelevantFirst(p) removes, p = percentiles
    removed_lerf    [cases, P, H, W] u8 the same for ROADLeastRelevantFirst(p)
    imputed_morf    [cases, Q, 3, H, W] NoisyLinearImputer(noise=0) output, p = imputed_percentiles
    imputed_lerf    [cases, Q, 3, H, W]
    odd.image / odd.removed / odd.imputed   the imputer alone on a non-square image and mask
  manifest.json     cases (image, class) and the metric values per target (logit, softmax)
Rerunning reproduces every value; only the signs of the zeros scipy returns for the singular
all-removed systems (case 3 at percentile 10) may change from run to run.
"""

import json
import pathlib

import numpy as np
import pytorch_grad_cam.metrics.road as road
import torch
import torch.nn.functional as F
from models import SeedCNN
from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
)
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from safetensors.torch import load_file, save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
PERCENTILES = [10, 20, 30, 40, 50, 60, 70, 80, 90]
IMPUTED_PERCENTILES = [10, 50, 90]


class NoiseFreeImputer(NoisyLinearImputer):
    def __init__(self, noise=0.0, weighting=road.neighbors_weights):
        super().__init__(noise=noise, weighting=weighting)


# ROAD's metric classes build `NoisyLinearImputer()` with its default noise 0.01 and no way to pass
# another; the module global is looked up at construction, so a noise-free subclass replaces it
# (a subclass, since the imputer calls its own static methods through the global name).
road.NoisyLinearImputer = NoiseFreeImputer


def smooth_cam(gen, h, w, cells=4):
    """A random smooth map in [0, 1]: bilinear upsampling of a cells x cells normal grid."""
    low = torch.randn(1, 1, cells, cells, generator=gen)
    up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    up = up - up.min()
    return (up / up.max()).numpy().astype(np.float32)


def main():
    seed = ROOT / "seed_cnn"
    model = SeedCNN(10)
    model.load_state_dict(load_file(str(seed / "model.safetensors")))
    model.eval()
    x = load_file(str(seed / "expected.safetensors"))["input"]
    grad_cams = load_file(str(seed / "expected.safetensors"))["cam.0"]  # pytorch-grad-cam's GradCAM
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    _, _, h, w = x.shape
    gen = torch.Generator().manual_seed(7)
    cam1 = smooth_cam(gen, h, w)
    with torch.no_grad():  # the class x * cam raises most, so that IncreaseInConfidence is 1 once
        rises = int((model(x[1:2] * torch.from_numpy(cam1)) - model(x[1:2])).argmax())

    # (image, class, cam, what)
    cases = [
        (0, top[0], smooth_cam(gen, h, w), "smooth random map"),
        (1, rises, cam1, "smooth random map, the class x * cam raises most"),
        (2, top[2], smooth_cam(gen, h, w, cells=6), "smooth random map"),
        # 4 levels 0.2, 0.4, 0.6, 0.8: wide ties, the lowest and highest each on > 10 % of the
        # pixels, so that MoRF and LeRF at percentile 10 remove every pixel (a singular system)
        (
            0,
            top[0],
            np.float32(np.clip(np.round(smooth_cam(gen, h, w) * 5) / 5, 0.2, 0.8)),
            "quantized to 4 levels, ties",
        ),
        (1, top[1], grad_cams[1].numpy().astype(np.float32), "pytorch-grad-cam GradCAM of conv3"),
    ]
    inputs = torch.stack([x[c[0]] for c in cases])
    cams = np.stack([c[2] for c in cases])

    expected = {"cams": torch.from_numpy(cams).contiguous()}
    imputer = NoiseFreeImputer()
    for name, remover in [("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)]:
        removed = np.zeros((len(cases), len(PERCENTILES), h, w), np.uint8)
        imputed = torch.zeros(len(cases), len(IMPUTED_PERCENTILES), *x.shape[1:])
        for i, (img, _, cam, _) in enumerate(cases):
            for j, p in enumerate(PERCENTILES):
                seen = {}

                def spy(image, kept, seen=seen):
                    seen["kept"] = kept
                    return imputer(image, kept)

                out = remover(p, spy)(x[img], torch.from_numpy(cam))
                removed[i, j] = 1 - seen["kept"].numpy().astype(np.uint8)
                if p in IMPUTED_PERCENTILES:
                    imputed[i, IMPUTED_PERCENTILES.index(p)] = out
        expected[f"removed_{name}"] = torch.from_numpy(removed).contiguous()
        expected[f"imputed_{name}"] = imputed.contiguous()

    # The imputer alone on a non-square image (catches a swapped row/column stride).
    g = torch.Generator().manual_seed(11)
    odd = torch.randn(3, 12, 20, generator=g)
    odd_removed = torch.rand(12, 20, generator=g) < 0.4
    odd_removed[0, :] = True  # a removed border row
    odd_removed[:, -1] = True  # and column
    expected["odd.image"] = odd.contiguous()
    expected["odd.removed"] = odd_removed.to(torch.uint8).contiguous()
    expected["odd.imputed"] = imputer(odd, (~odd_removed).float()).contiguous()

    targets = {"logit": ClassifierOutputTarget, "softmax": ClassifierOutputSoftmaxTarget}
    values = {}
    for kind, target in targets.items():
        t = [target(c[1]) for c in cases]

        def run(metric, t=t):
            return [float(v) for v in metric(inputs, cams, t, model)]

        values[kind] = {
            "cam_mult_image_confidence_change": run(CamMultImageConfidenceChange()),
            "drop_in_confidence": run(DropInConfidence()),
            "increase_in_confidence": run(IncreaseInConfidence()),
            "road_morf": [run(ROADMostRelevantFirst(p)) for p in PERCENTILES],
            "road_lerf": [run(ROADLeastRelevantFirst(p)) for p in PERCENTILES],
            "road_morf_average": run(ROADMostRelevantFirstAverage(PERCENTILES)),
            "road_lerf_average": run(ROADLeastRelevantFirstAverage(PERCENTILES)),
            "road_combined": run(ROADCombined(PERCENTILES)),
        }

    out = ROOT / "metrics"
    out.mkdir(parents=True, exist_ok=True)
    save_file(expected, str(out / "expected.safetensors"))
    manifest = {
        "model": "seed_cnn/model.safetensors",
        "inputs": "seed_cnn/expected.safetensors:input",
        "percentiles": PERCENTILES,
        "imputed_percentiles": IMPUTED_PERCENTILES,
        "cases": [{"image": c[0], "class": c[1], "cam": c[3]} for c in cases],
        "values": values,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(cases)} cases, {sum(v.numel() * v.element_size() for v in expected.values())} bytes")


if __name__ == "__main__":
    main()
