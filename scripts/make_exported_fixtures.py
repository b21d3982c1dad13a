"""Fixtures for graphs exported with scripts/export_model.py (tests/exported.rs reads them; CI has
no torch, so they are committed).

    pip install torch torchvision timm grad-cam safetensors
    python scripts/make_exported_fixtures.py            # everything
    python scripts/make_exported_fixtures.py --timm-report   # also try full-size timm models

Writes, under tests/fixtures/exported/:
  families/<name>.json   the graph of every torchvision family parity fixture
      (tests/fixtures/families/<name>), exported from the model its manifest's constructor builds
      with its model.safetensors loaded; the test joins it to that file's tensors and checks that
      the exported graph and the built-in builder give the same logits and CAMs;
  <name>/{model.safetensors, expected.safetensors, manifest.json}  parity fixtures of models no
      family covers, each exported with its graph embedded, its logits and pytorch-grad-cam's
      GradCAM maps (PyPI grad-cam 1.5.x) at its default layer and inner layers:
      custom_cnn (branches, concat, functional activations, an nn.Sequential inside an
      nn.ModuleDict, a reused activation module, an asymmetric F.pad), tf_same (nn.Conv2d
      subclasses with a ZeroPad2d child, TensorFlow's "static same" padding), and narrowed timm
      models (resnet50d, efficientnet_b0, mobilenetv3_large_100, convnext_tiny, ghostnet_100,
      rexnet_100 layouts with fewer channels and blocks).
Models are seeded, calibrated as in make_family_fixtures.py (so no activation vanishes), rounded
to the saved dtype, and run with inplace=False everywhere (a forward hook sees a module's own
output, as the engine defines it).
"""

import argparse
import collections
import json
import math
import pathlib
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_family_fixtures as fam  # noqa: E402
from export_model import export_graph, export_model  # noqa: E402
from models import not_inplace, prepare, reference_cams, round_to  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "exported"
FAMILIES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "families"


class CustomCNN(nn.Module):
    """What a team's own network looks like: the features the exporter must keep apart."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()  # reused: called twice
        self.paths = nn.ModuleDict(
            {
                "a": nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)),
                "b": nn.Sequential(
                    nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False),
                    nn.BatchNorm2d(8, eps=1e-3),
                    nn.Hardswish(),
                ),
            }
        )
        self.down = nn.Conv2d(16, 16, 3, stride=2)
        self.gate = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.act(self.stem(x))
        a = self.paths["a"](x)
        b = self.paths["b"](x)
        x = torch.cat([a, F.silu(b)], 1)
        x = self.act(x)
        x = F.pad(x, (0, 1, 0, 1))  # TensorFlow's asymmetric "same" before a stride-2 conv
        x = self.down(x)
        x = x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))
        x = F.leaky_relu(x, 0.1) + x
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Conv2dStaticSamePadding(nn.Conv2d):
    """As efficientnet-pytorch (lukemelas) ports TensorFlow's "same" padding: computed once for a
    fixed image size, held by a ZeroPad2d child (or an Identity when it is zero)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=True, image_size=None):
        super().__init__(cin, cout, k, stride, groups=groups, bias=bias)
        ih, iw = image_size
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        oh, ow = math.ceil(ih / sh), math.ceil(iw / sw)
        ph = max((oh - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((ow - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        if ph > 0 or pw > 0:
            self.static_padding = nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        else:
            self.static_padding = nn.Identity()

    def forward(self, x):
        x = self.static_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class TFSameNet(nn.Module):
    """A TensorFlow port: every conv a Conv2dStaticSamePadding for a 45x38 image."""

    def __init__(self, image_size=(45, 38), num_classes=10):
        super().__init__()
        size = list(image_size)

        def conv(cin, cout, k, s=1, groups=1, bias=False):
            c = Conv2dStaticSamePadding(cin, cout, k, s, groups, bias, image_size=tuple(size))
            size[:] = [math.ceil(d / s) for d in size]
            return c

        self.conv_stem = conv(3, 8, 3, 2)
        self.bn0 = nn.BatchNorm2d(8, eps=1e-3)
        self.blocks = nn.Sequential(
            nn.Sequential(conv(8, 8, 5, 2, groups=8), nn.BatchNorm2d(8, eps=1e-3), nn.SiLU()),
            nn.Sequential(conv(8, 16, 1), nn.BatchNorm2d(16, eps=1e-3), nn.SiLU()),
            nn.Sequential(conv(16, 16, 4, 2, groups=16), nn.BatchNorm2d(16, eps=1e-3), nn.ReLU6()),
        )
        self.conv_head = conv(16, 32, 1, bias=True)
        self.head_act = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.silu(self.bn0(self.conv_stem(x)))
        x = self.head_act(self.conv_head(self.blocks(x)))
        return self.fc(self.pool(x).flatten(1))


def timm_models():
    from timm.models import convnext, efficientnet, ghostnet, mobilenetv3, resnet, rexnet

    return {
        "timm_resnet50d": (
            lambda: resnet.ResNet(
                resnet.Bottleneck,
                (1, 1, 1, 1),
                channels=(8, 16, 32, 64),
                stem_width=8,
                stem_type="deep",
                avg_down=True,
                num_classes=10,
            ),
            "timm.models.resnet.ResNet(Bottleneck, (1, 1, 1, 1), channels=(8, 16, 32, 64), "
            "stem_width=8, stem_type='deep', avg_down=True, num_classes=10)  # resnet50d's layout",
            torch.float16,
            (2, 3, 64, 48),
            ["layer4", "layer3", "layer2.0.act3", "layer1", "act1"],
        ),
        "timm_efficientnet_b0": (
            lambda: efficientnet._gen_efficientnet(
                "efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.3, num_classes=10
            ),
            "timm.models.efficientnet._gen_efficientnet('efficientnet_b0', "
            "channel_multiplier=0.25, depth_multiplier=0.3, num_classes=10)",
            torch.float16,
            (2, 3, 64, 48),
            ["bn2", "blocks.4", "blocks.2.0.se", "blocks.5", "blocks.1"],
        ),
        "timm_mobilenetv3_large_100": (
            lambda: mobilenetv3._gen_mobilenet_v3(
                "mobilenetv3_large_100", 0.25, depth_multiplier=0.5, num_classes=10
            ),
            "timm.models.mobilenetv3._gen_mobilenet_v3('mobilenetv3_large_100', 0.25, "
            "depth_multiplier=0.5, num_classes=10)",
            torch.float16,
            (2, 3, 64, 48),
            ["blocks", "blocks.3", "conv_stem", "blocks.5", "blocks.1"],
        ),
        "timm_convnext_tiny": (
            lambda: convnext.ConvNeXt(
                depths=(1, 1, 2, 1), dims=(16, 24, 32, 48), num_classes=10, ls_init_value=0.5
            ),
            "timm.models.convnext.ConvNeXt(depths=(1, 1, 2, 1), dims=(16, 24, 32, 48), "
            "num_classes=10, ls_init_value=0.5)  # convnext_tiny's layout",
            torch.float32,
            (2, 3, 64, 48),
            ["stages", "stages.2.blocks.1", "stem", "stages.1", "stages.3.downsample"],
        ),
        "timm_ghostnet_100": (
            lambda: ghostnet._create_ghostnet("ghostnet_100", width=0.25, num_classes=10),
            "timm.models.ghostnet._create_ghostnet('ghostnet_100', width=0.25, num_classes=10)",
            torch.float16,
            (2, 3, 64, 48),
            ["blocks", "blocks.6", "blocks.3.0.ghost1", "blocks.8", "blocks.2"],
        ),
        "timm_rexnet_100": (
            lambda: rexnet._create_rexnet("rexnet_100", False, width_mult=0.25, num_classes=10),
            "timm.models.rexnet._create_rexnet('rexnet_100', False, width_mult=0.25, num_classes=10)",
            torch.float16,
            (2, 3, 64, 48),
            ["features", "features.8", "stem", "features.12", "features.4", "features.2"],
        ),
    }


def own_models():
    return {
        "custom_cnn": (
            CustomCNN,
            "scripts/make_exported_fixtures.py: CustomCNN()",
            torch.float32,
            (2, 3, 29, 34),
            ["down", "paths.b", "paths.a", "act", "stem"],
        ),
        "tf_same": (
            TFSameNet,
            "scripts/make_exported_fixtures.py: TFSameNet()",
            torch.float32,
            (2, 3, 45, 38),
            ["head_act", "blocks.2.0", "conv_stem", "blocks.1", "bn0"],
        ),
    }


def randomize_layer_norms(model, g):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                n = m.weight.numel()
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def cam_f64(graph, tensors, x, layer, classes):
    """Grad-CAM of `layer` computed in float64 with the exported graph: pytorch-grad-cam's float32
    maps are kept only where they agree with it (a layer whose map depends on float32 rounding
    is no test of the engine)."""
    from export_model import run_graph

    values = {}
    t = {k: v.double() for k, v in tensors.items()}
    y = run_graph(graph, t, x.double().requires_grad_(), values)
    a = values[next(m["output"] for m in graph["modules"] if m["name"] == layer)]
    (grad,) = torch.autograd.grad(sum(y[i, k] for i, k in enumerate(classes)), a)
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * a).sum(1))
    cam = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam - cam.flatten(1).amin(1)[:, None, None]
    return cam / (cam.flatten(1).amax(1)[:, None, None] + 1e-7)


# custom_cnn records its own evaluation transform (the others: timm's pretrained config, or none)
PREPROCESS = {
    "custom_cnn": {
        "resize": 40,
        "crop": 32,
        "interpolation": "bilinear",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
}


def write_parity(name, make, desc, dtype, shape, layers, seed):
    torch.manual_seed(seed)
    model = not_inplace(prepare(make(), seed + 1))
    g = torch.Generator().manual_seed(seed + 2)
    randomize_layer_norms(model, g)
    fam.calibrate(model, torch.randn(128, *shape[1:], generator=g), g)
    model = round_to(model, dtype)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 3))
    out = ROOT / name
    out.mkdir(parents=True, exist_ok=True)
    graph = export_model(
        model, out / "model.safetensors", tuple(shape[1:]), dtype=dtype, preprocess=PREPROCESS.get(name)
    )
    with torch.no_grad():
        logits = model(x)
    expected = {"input": x.contiguous(), "logits": logits.contiguous()}
    manifest = {
        "weights_dtype": str(dtype).removeprefix("torch."),
        "constructor": desc,
        "default_layer": graph["default_layer"],
        "cases": [],
    }
    cases = [(graph["default_layer"], None)] + [(lay, i if i % 2 else None) for i, lay in enumerate(layers)]
    tensors = {
        **model.state_dict(),
        **{
            k: v
            for k, v in load_file(str(out / "model.safetensors")).items()
            if k.startswith("gradcam.const.")
        },
    }
    for layer, cls in dict.fromkeys(cases):
        cams, classes = reference_cams(model, x, layer, cls)
        if not bool((cams.flatten(1).amax(1) > 0).all()):
            print(f"  {name} {layer}: skipped, an all-zero CAM")
            continue
        if len(manifest["cases"]) == 4:
            break
        drift = float((cam_f64(graph, tensors, x, layer, classes).detach() - cams.double()).abs().max())
        if drift > 1e-4:
            print(f"  {name} {layer}: skipped, float32 and float64 maps differ by {drift:.1e}")
            continue
        j = len(manifest["cases"])
        expected[f"cam.{j}"] = cams.float().contiguous()
        manifest["cases"].append({"layer": layer, "class": cls, "classes": classes, "cam": f"cam.{j}"})
    save_file(expected, str(out / "expected.safetensors"))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(
        f"{name}: {len(graph['nodes'])} ops, default {graph['default_layer']}, {size / 1e3:.0f} kB, "
        f"logits std {float(logits.std()):.3f}",
        flush=True,
    )
    return size


def write_family_graphs():
    fam.use_out_of_place_forwards()
    out = ROOT / "families"
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for d in sorted(p for p in FAMILIES.iterdir() if (p / "manifest.json").exists()):
        man = json.loads((d / "manifest.json").read_text())
        model = not_inplace(fam.construct(man["constructor"])).eval()
        sd = collections.OrderedDict(
            (k, v.float() if v.is_floating_point() else v)
            for k, v in load_file(str(d / "model.safetensors")).items()
        )
        sd._metadata = model.state_dict()._metadata  # MNASNet wants its version (see verify())
        model.load_state_dict(sd, strict=True)
        x = load_file(str(d / "expected.safetensors"))["input"]
        graph, extra = export_graph(model, tuple(x.shape[1:]))
        assert not extra, f"{d.name}: the graph needs tensors of its own"
        text = json.dumps(graph, separators=(",", ":"))
        (out / f"{d.name}.json").write_text(text + "\n")
        total += len(text)
        print(
            f"families/{d.name}: {len(graph['nodes'])} ops, default {graph['default_layer']}, "
            f"{len(text) / 1e3:.0f} kB",
            flush=True,
        )
    return total


TIMM_FULL = [
    "resnet50d",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "convnext_tiny",
    "regnetz_b16",
    "ghostnet_100",
    "rexnet_100",
    "tf_efficientnet_b0",
    "densenet121",
    "regnety_008",
    "mixnet_s",
    "lcnet_050",
    "cspresnet50",
    "repvgg_a0",
    "nfnet_l0",
    "res2net50_26w_4s",
    "dla34",
    "seresnext26d_32x4d",
    "ecaresnet26t",
    "resnest14d",
    "hrnet_w18_small",
    "vgg11_bn",
]


def timm_report():
    """Full-size timm models (random weights, no download): which export (the exporter's own check
    compares the exported graph with the model), and the message of those that do not."""
    import timm
    from export_model import ExportError

    for name in TIMM_FULL:
        try:
            graph, _ = export_graph(timm.create_model(name, pretrained=False), (3, 128, 128), batch=1)
            print(
                f"| {name} | exports ({len(graph['nodes'])} ops), default layer `{graph['default_layer']}` |"
            )
        except ExportError as e:
            print(f"| {name} | {str(e).split('. Supported')[0]} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated fixture names to (re)write")
    ap.add_argument("--timm-report", action="store_true", help="also try full-size timm models")
    a = ap.parse_args()
    torch.set_num_threads(2)
    only = [n for n in a.only.split(",") if n]
    total = 0
    if not only or "families" in only:
        total += write_family_graphs()
    for i, (name, spec) in enumerate({**own_models(), **timm_models()}.items()):
        if not only or name in only:
            total += write_parity(name, *spec, seed=5000 + 10 * i)
    print(f"written: {total / 1e6:.2f} MB")
    if a.timm_report:
        timm_report()


if __name__ == "__main__":
    main()
