"""Fixtures and facts for loading every torchvision CNN family from a state_dict alone.

    pip install torch torchvision grad-cam safetensors
    python scripts/make_family_fixtures.py                   # manifests, facts and parity fixtures
    python scripts/make_family_fixtures.py --manifests-only  # manifests and facts only

Writes, under tests/fixtures/families/:
  manifests/<variant>.json  for the 68 torchvision CNN variants, built with weights=None on the
      meta device (no weights, no download): the state_dict (key, dtype, shape) in order, every
      named module with the shape of its first output in one eval forward, the logits shape;
  manifests/preprocess.json the evaluation preprocessing of each variant's DEFAULT weights;
  facts.json                what the weights do not carry (eps, block tables, pools, transform_input,
      in-place sites...), read from the installed torchvision, and notes on
      /work/shared/reference/torchvision-cnns.md;
  <variant>/{model.safetensors, expected.safetensors, manifest.json}  parity fixtures: a narrowed
      model of the smallest variant of each family, built with torchvision's classes and forward
      code, its logits and pytorch-grad-cam's (PyPI grad-cam 1.5.x) GradCAM maps.

Every parity model goes through the same steps (all seeded):
  1. the constructor expression (manifest "constructor", evaluated with `torch`, `nn`,
     `torchvision`, `partial` and `models` = scripts/models.py in scope);
  2. models.prepare(): eval mode, BatchNorm statistics that are not the identity;
  3. models.not_inplace(): inplace=False on every activation/dropout (torchvision mostly builds
     them with inplace=True, which would overwrite the hooked output of the conv/BN before them);
     models.use_out_of_place_forwards() replaces the forward code that adds or applies ReLU in
     place (CNBlock, MBConv, FusedMBConv, MobileNetV3 InvertedResidual, BasicConv2d of GoogLeNet
     and Inception3, DenseNet.forward); ResNet's blocks are patched by importing models.py;
  4. ConvNeXt only: layer_scale ~ U(0.25, 0.75) instead of 1e-6, LayerNorm affine randomized;
  5. calibrate(): one no-grad forward on a separate random batch in which every Conv2d / Linear
     is rescaled per output channel to unit std (and shifted to a small random mean where it has
     a bias) and every BatchNorm's running statistics are set from its actual input (mean + 0.1 sd
     noise, var * U(0.5, 1.5)), so that no activation vanishes or explodes and the logits depend on
     the input (logit std, overall and across the batch, is printed);
  6. models.round_to() the saved dtype, then the reference logits and CAMs.
"""

import argparse
import collections
import importlib
import inspect
import json
import pathlib
import re
from functools import partial

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

# the submodules themselves (torchvision.models.googlenet is also the name of a builder function)
(
    convnext,
    densenet,
    efficientnet,
    googlenet,
    inception,
    mnasnet,
    mobilenetv2,
    mobilenetv3,
    regnet,
    resnet,
    shufflenetv2,
    squeezenet,
    vgg,
) = (
    importlib.import_module(f"torchvision.models.{m}")
    for m in (
        "convnext",
        "densenet",
        "efficientnet",
        "googlenet",
        "inception",
        "mnasnet",
        "mobilenetv2",
        "mobilenetv3",
        "regnet",
        "resnet",
        "shufflenetv2",
        "squeezenet",
        "vgg",
    )
)

import models  # noqa: E402
from models import (  # noqa: E402
    not_inplace,
    prepare,
    reference_cams,
    round_to,
    save_weights,
    use_out_of_place_forwards,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "families"
TV_DIR = pathlib.Path(torchvision.__file__).parent

VARIANTS = (
    [("alexnet", "alexnet")]
    + [(f"vgg{d}{bn}", "vgg") for d in (11, 13, 16, 19) for bn in ("", "_bn")]
    + [(f"resnet{d}", "resnet") for d in (18, 34, 50, 101, 152)]
    + [(v, "resnext") for v in ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d")]
    + [(v, "wide_resnet") for v in ("wide_resnet50_2", "wide_resnet101_2")]
    + [(v, "squeezenet") for v in ("squeezenet1_0", "squeezenet1_1")]
    + [(f"densenet{d}", "densenet") for d in (121, 161, 169, 201)]
    + [("googlenet", "googlenet"), ("inception_v3", "inception"), ("mobilenet_v2", "mobilenet_v2")]
    + [(v, "mobilenet_v3") for v in ("mobilenet_v3_small", "mobilenet_v3_large")]
    + [(f"mnasnet{a}", "mnasnet") for a in ("0_5", "0_75", "1_0", "1_3")]
    + [(f"efficientnet_b{i}", "efficientnet") for i in range(8)]
    + [(f"efficientnet_v2_{s}", "efficientnet_v2") for s in "sml"]
    + [(f"regnet_x_{s}", "regnet_x") for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")]
    + [
        (f"regnet_y_{s}", "regnet_y")
        for s in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf")
    ]
    + [(f"shufflenet_v2_{s}", "shufflenet_v2") for s in ("x0_5", "x1_0", "x1_5", "x2_0")]
    + [(f"convnext_{s}", "convnext") for s in ("tiny", "small", "base", "large")]
)
FAMILY = dict(VARIANTS)

DEFAULT_LAYER = {
    "alexnet": "features.11",
    "vgg": None,
    "resnet": "layer4",
    "resnext": "layer4",
    "wide_resnet": "layer4",
    "squeezenet": "features",
    "densenet": "features",
    "googlenet": "inception5b",
    "inception": "Mixed_7c",
    "mobilenet_v2": "features",
    "mobilenet_v3": "features",
    "mnasnet": "layers",
    "efficientnet": "features",
    "efficientnet_v2": "features",
    "regnet_x": "trunk_output",
    "regnet_y": "trunk_output",
    "shufflenet_v2": "conv5",
    "convnext": "features",
}

SAFETENSORS_DTYPE = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


# ----------------------------------------------------------------------------------------------
# Building the full-size variants (meta device) and recording what their builders were given.


def builder_kwargs(name):
    # googlenet / inception_v3 as the pretrained builders construct them: aux heads present,
    # transform_input on, torchvision's init skipped (weights would be loaded)
    if name in ("googlenet", "inception_v3"):
        return dict(aux_logits=True, transform_input=True, init_weights=False)
    return {}


class Capture:
    """Wraps module-level functions (and BlockParams.from_init_params) of torchvision.models.* so
    that building a variant records the arguments its builder passed them."""

    TARGETS = [
        (vgg, "_vgg"),
        (resnet, "_resnet"),
        (squeezenet, "_squeezenet"),
        (densenet, "_densenet"),
        (mobilenetv3, "_mobilenet_v3_conf"),
        (mobilenetv3, "_mobilenet_v3"),
        (mnasnet, "_mnasnet"),
        (efficientnet, "_efficientnet_conf"),
        (efficientnet, "_efficientnet"),
        (regnet, "_regnet"),
        (shufflenetv2, "_shufflenetv2"),
        (convnext, "_convnext"),
    ]

    def __enter__(self):
        self.calls = {}
        self.saved = []
        for mod, fname in self.TARGETS:
            orig = getattr(mod, fname)
            self.saved.append((mod, fname, orig))
            setattr(mod, fname, self._wrap(fname, orig))
        self.saved_bp = regnet.BlockParams.__dict__["from_init_params"]
        orig_bp = self.saved_bp.__func__

        def from_init_params(cls, **kw):
            with torch.device(
                "cpu"
            ):  # computes the widths with torch ops, which meta tensors cannot .tolist()
                out = orig_bp(cls, **kw)
            self.calls["from_init_params"] = (kw, out)
            return out

        regnet.BlockParams.from_init_params = classmethod(from_init_params)
        return self

    def _wrap(self, fname, orig):
        def wrapper(*args, **kwargs):
            out = orig(*args, **kwargs)
            self.calls[fname] = (args, dict(kwargs), out)
            return out

        return wrapper

    def __exit__(self, *exc):
        for mod, fname, orig in self.saved:
            setattr(mod, fname, orig)
        regnet.BlockParams.from_init_params = self.saved_bp


def build_meta(name):
    with Capture() as cap, torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None, **builder_kwargs(name))
    return model.eval(), cap.calls


def input_shape(name, batch=1):
    s = 299 if name == "inception_v3" else 224
    return [batch, 3, s, s]


def trace_modules(model, x):
    """[name, class, first output shape or None] for every named module, call counts, logits."""
    first, calls, handles = {}, collections.Counter(), []
    for name, m in model.named_modules():
        if not name:
            continue

        def hook(mod, inp, out, name=name):
            calls[name] += 1
            if name not in first:
                first[name] = list(out.shape) if isinstance(out, torch.Tensor) else None

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    rows = [[n, type(m).__name__, first.get(n)] for n, m in model.named_modules() if n]
    return rows, calls, y


def tensor_rows(model):
    return [[k, SAFETENSORS_DTYPE[v.dtype], list(v.shape)] for k, v in model.state_dict().items()]


def preprocess_entry(name):
    w = torchvision.models.get_model_weights(name).DEFAULT
    t = w.transforms()
    return {
        "weights": w.name,
        "enum": type(w).__name__,
        "resize_size": t.resize_size[0],
        "crop_size": t.crop_size[0],
        "interpolation": t.interpolation.value,
        "antialias": t.antialias,
        "mean": t.mean,
        "std": t.std,
        "order": "resize shorter side to resize_size (antialiased) -> center crop crop_size -> "
        "float in [0,1] -> normalize (x - mean) / std",
    }


# ----------------------------------------------------------------------------------------------
# Facts read from the installed torchvision.


def src_ref(module, pattern, nth=0):
    """'file.py:LINE: text' of the nth line of a torchvision module's source matching pattern."""
    path = pathlib.Path(inspect.getsourcefile(module))
    hits = [
        (i + 1, line.strip())
        for i, line in enumerate(path.read_text().splitlines())
        if re.search(pattern, line)
    ]
    if not hits:
        raise LookupError(f"{pattern!r} not in {path}")
    i, line = hits[nth]
    return f"{path.relative_to(TV_DIR.parent)}:{i}: {line}"


def generalize(names):
    pats = collections.Counter(re.sub(r"\d+", "#", n) for n in names)
    return [[p, c] for p, c in sorted(pats.items())]


def norm_facts(model):
    bn, ln = collections.defaultdict(list), collections.defaultdict(list)
    for n, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            bn[m.eps].append(n)
        elif isinstance(m, nn.LayerNorm):
            ln[(type(m).__name__, m.eps)].append(n)
    out = {
        "batchnorm": [{"eps": e, "count": len(v), "modules": generalize(v)} for e, v in sorted(bn.items())]
    }
    if ln:
        out["layernorm"] = [
            {"class": c, "eps": e, "count": len(v), "modules": generalize(v)}
            for (c, e), v in sorted(ln.items())
        ]
    return out


def pool_facts(model):
    groups = collections.defaultdict(list)
    for n, m in model.named_modules():
        if isinstance(m, nn.MaxPool2d):
            key = (
                "MaxPool2d",
                str(m.kernel_size),
                str(m.stride),
                str(m.padding),
                str(m.dilation),
                m.ceil_mode,
                None,
            )
        elif isinstance(m, nn.AvgPool2d):
            key = (
                "AvgPool2d",
                str(m.kernel_size),
                str(m.stride),
                str(m.padding),
                None,
                m.ceil_mode,
                m.count_include_pad,
            )
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            key = ("AdaptiveAvgPool2d", str(m.output_size), None, None, None, None, None)
        else:
            continue
        groups[key].append(n)
    out = []
    for (cls, k, s, p, d, ceil, cip), names in groups.items():
        e = {"class": cls}
        if cls == "AdaptiveAvgPool2d":
            e["output_size"] = json.loads(k.replace("(", "[").replace(")", "]"))
        else:
            e.update(kernel_size=json.loads(k), stride=json.loads(s), padding=json.loads(p), ceil_mode=ceil)
            if d is not None:
                e["dilation"] = json.loads(d)
            if cip is not None:
                e["count_include_pad"] = cip
        e["modules"] = generalize(names)
        out.append(e)
    return out


# Pools and reductions done with torch.nn.functional / tensor methods (no module), from the source.
FUNCTIONAL_POOLS = {
    "densenet": [
        (
            densenet,
            r"F\.adaptive_avg_pool2d\(out",
            "adaptive_avg_pool2d (1,1) after F.relu of features (eval)",
        )
    ],
    "googlenet": [
        (
            googlenet,
            r"F\.adaptive_avg_pool2d\(x, \(4, 4\)\)",
            "aux1/aux2 only (train mode): adaptive_avg_pool2d (4,4)",
        )
    ],
    "inception": [
        (
            inception,
            r"F\.avg_pool2d\(x, kernel_size=3, stride=1, padding=1\)",
            "InceptionA/C/E branch_pool: avg_pool2d(3, stride 1, padding 1), defaults ceil_mode=False, "
            "count_include_pad=True (the border windows divide by 9)",
        ),
        (
            inception,
            r"F\.max_pool2d\(x, kernel_size=3, stride=2\)",
            "InceptionB/D branch_pool: max_pool2d(3, stride 2, padding 0, ceil_mode=False)",
        ),
        (
            inception,
            r"F\.avg_pool2d\(x, kernel_size=5, stride=3\)",
            "AuxLogits only (train mode): avg_pool2d(5, stride 3), count_include_pad=True",
        ),
        (
            inception,
            r"F\.adaptive_avg_pool2d\(x, \(1, 1\)\)",
            "AuxLogits only (train mode): adaptive_avg_pool2d (1,1)",
        ),
    ],
    "mobilenet_v2": [
        (mobilenetv2, r"adaptive_avg_pool2d\(x, \(1, 1\)\)", "adaptive_avg_pool2d (1,1) of features")
    ],
    "mnasnet": [
        (mnasnet, r"x = x\.mean\(\[2, 3\]\)", "x.mean([2, 3]) of layers (global average, no module)")
    ],
    "shufflenet_v2": [
        (shufflenetv2, r"x = x\.mean\(\[2, 3\]\)", "x.mean([2, 3]) of conv5 (global average, no module)")
    ],
}

INPLACE_SITES = [
    (
        resnet,
        r"out \+= identity",
        "BasicBlock/Bottleneck: `out += identity` overwrites the output of bn2/bn3",
    ),
    (
        convnext,
        r"result \+= input",
        "CNBlock: `result += input` overwrites the output of stochastic_depth "
        "(identity in eval, so the tensor `layer_scale * block(x)`)",
    ),
    (
        efficientnet,
        r"result \+= input",
        "MBConv: `result += input` overwrites the output of `block` and of its "
        "last module (projection Conv2dNormActivation and its BatchNorm)",
    ),
    (efficientnet, r"result \+= input", "FusedMBConv: same as MBConv", 1),
    (
        mobilenetv3,
        r"result \+= input",
        "InvertedResidual: `result += input` overwrites the output of `block` "
        "and of its projection Conv2dNormActivation / BatchNorm",
    ),
    (
        googlenet,
        r"return F\.relu\(x, inplace=True\)",
        "BasicConv2d: F.relu in place overwrites the output of `bn`",
    ),
    (
        googlenet,
        r"F\.relu\(self\.fc1\(x\), inplace=True\)",
        "InceptionAux (train only): overwrites fc1's output",
    ),
    (
        inception,
        r"return F\.relu\(x, inplace=True\)",
        "BasicConv2d: F.relu in place overwrites the output of `bn`",
    ),
    (
        densenet,
        r"F\.relu\(features, inplace=True\)",
        "DenseNet.forward: overwrites the output of `features` "
        "(and of features.norm5), the default Grad-CAM target",
    ),
    (
        torchvision.ops.misc,
        r"inplace: Optional\[bool\] = True",
        "Conv2dNormActivation: its activation "
        "(ReLU/ReLU6/SiLU/Hardswish) is built with inplace=True and overwrites the BatchNorm output",
    ),
    (
        efficientnet,
        r"activation=partial\(nn\.SiLU, inplace=True\)",
        "MBConv SE: SiLU in place overwrites fc1's output",
    ),
    (
        regnet,
        r"self\.activation = activation_layer\(inplace=True\)",
        "ResBottleneckBlock: ReLU in place on the fresh sum (harmless) ",
    ),
]


def mobilenet_v3_table(calls):
    setting, last_channel = calls["_mobilenet_v3_conf"][2]
    rows = []
    for i, c in enumerate(setting):
        rows.append(
            {
                "features_index": i + 1,
                "input": c.input_channels,
                "kernel": c.kernel,
                "expanded": c.expanded_channels,
                "out": c.out_channels,
                "use_se": c.use_se,
                "activation": "HS" if c.use_hs else "RE",
                "stride": c.stride,
                "dilation": c.dilation,
                "expand_conv": c.expanded_channels != c.input_channels,
                "se_squeeze": mobilenetv3._make_divisible(c.expanded_channels // 4, 8) if c.use_se else None,
                "residual": c.stride == 1 and c.input_channels == c.out_channels,
            }
        )
    last_in = setting[-1].out_channels
    return {
        "blocks": rows,
        "last_channel": last_channel,
        "stem": {
            "features_index": 0,
            "conv": [3, setting[0].input_channels, 3],
            "stride": 2,
            "activation": "HS",
        },
        "last_conv": {
            "features_index": len(setting) + 1,
            "conv": [last_in, 6 * last_in, 1],
            "activation": "HS",
        },
        "classifier": f"Linear({6 * last_in}, {last_channel}) -> Hardswish -> Dropout(0.2) -> "
        f"Linear({last_channel}, num_classes)",
    }


def efficientnet_table(name, calls, model):
    conf_args, conf_kwargs, (setting, last_channel) = calls["_efficientnet_conf"]
    eff_args, eff_kwargs, _ = calls["_efficientnet"]
    stages = [
        {
            "features_index": i + 1,
            "block": c.block.__name__,
            "expand_ratio": c.expand_ratio,
            "kernel": c.kernel,
            "stride": c.stride,
            "in": c.input_channels,
            "out": c.out_channels,
            "layers": c.num_layers,
        }
        for i, c in enumerate(setting)
    ]
    sd = [m.p for m in model.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    sd_default = inspect.signature(efficientnet.EfficientNet).parameters["stochastic_depth_prob"].default
    norm = eff_kwargs.get("norm_layer")
    out = {
        "width_mult": conf_kwargs.get("width_mult"),
        "depth_mult": conf_kwargs.get("depth_mult"),
        "dropout": eff_args[1],
        "last_channel": eff_args[2] if eff_args[2] is not None else 4 * setting[-1].out_channels,
        "batchnorm": (
            {"eps": norm.keywords.get("eps", 1e-5), "momentum": norm.keywords.get("momentum", 0.1)}
            if norm is not None
            else {"eps": 1e-5, "momentum": 0.1}
        ),
        "stages": stages,
        "stage_rule": "the first block of a stage has (in, stride); the others in = out, stride 1; expanded "
        "= _make_divisible(in * expand_ratio, 8); residual when stride 1 and in == out; stem conv3x3 s2 "
        "(3 -> stages[0].in) CNA SiLU; head conv1x1 (-> last_channel) CNA SiLU, avgpool, Dropout, Linear",
        "stochastic_depth_prob": eff_kwargs.get("stochastic_depth_prob", sd_default),
        "stochastic_depth_per_block": "p * block_index / total_blocks (block_index from 0 over all stages)",
        "stochastic_depth_max": max(sd),
        "se_squeeze": "max(1, block_input_channels // 4) (MBConv only; FusedMBConv has no SE)",
    }
    return out


def mnasnet_table(calls, model):
    alpha = calls["_mnasnet"][0][0]
    layers = model.layers
    stacks = []
    for i in range(8, 14):
        b0 = layers[i][0]
        stacks.append(
            {
                "layers_index": i,
                "in": b0.layers[0].in_channels,
                "out": b0.layers[6].out_channels,
                "kernel": b0.layers[3].kernel_size[0],
                "stride": b0.layers[3].stride[0],
                "expansion": b0.layers[0].out_channels // b0.layers[0].in_channels,
                "repeats": len(layers[i]),
                "residual": [blk.apply_residual for blk in layers[i]],
            }
        )
    return {
        "alpha": alpha,
        "depths": mnasnet._get_depths(alpha),
        "stacks": stacks,
        "stem": "layers.0-7: conv3x3 s2 (3->d0), BN, ReLU, dw conv3x3 (d0), BN, ReLU, conv1x1 (d0->d1), BN "
        "(no ReLU)",
        "head": "layers.14-16: conv1x1 (d7->1280), BN, ReLU; x.mean([2,3]); classifier Dropout(0.2), "
        "Linear(1280, n)",
        "block": "_InvertedResidual: conv1x1 expand, BN, ReLU, dw conv k (stride), BN, ReLU, conv1x1, BN; "
        "+input if in==out and stride 1",
        "bn_momentum": 1 - 0.9997,
        "load_from_safetensors": "MNASNet._load_from_state_dict raises ValueError for a state_dict without "
        "'version' metadata (1 or 2), as any dict read from safetensors is; in PyTorch set "
        "sd._metadata = {'': {'version': 2}} before load_state_dict",
        "note": "a state_dict saved with MNASNet._version 1 metadata (alpha != 1) has the fixed 32/16 stem "
        "of v1 (MNASNet._load_from_state_dict); shapes tell it apart",
    }


def regnet_table(calls, model):
    kw, bp = calls["from_init_params"]
    stages = []
    width_in = model.stem[0].out_channels
    for i, (w, s, d, g, b) in enumerate(bp._get_expanded_params()):
        w_b = int(round(w * b))
        stages.append(
            {
                "name": f"trunk_output.block{i + 1}",
                "depth": d,
                "width": w,
                "stride": s,
                "group_width": g,
                "bottleneck_multiplier": b,
                "w_b": w_b,
                "groups": w_b // g,
                "se_channels_first_block": int(round(bp.se_ratio * width_in)) if bp.se_ratio else None,
                "se_channels_other_blocks": int(round(bp.se_ratio * w)) if bp.se_ratio else None,
            }
        )
        width_in = w
    return {
        "init_params": kw,
        "depths": bp.depths,
        "widths": bp.widths,
        "group_widths": bp.group_widths,
        "bottleneck_multipliers": bp.bottleneck_multipliers,
        "strides": bp.strides,
        "se_ratio": bp.se_ratio,
        "stem_width": model.stem[0].out_channels,
        "stages": stages,
        "block": "ResBottleneckBlock: proj (conv1x1 stride s + BN) if width or stride changes; f = a (1x1 "
        "CNA ReLU), b (3x3 stride s, groups w_b/group_width, CNA ReLU), [se: avgpool, fc1, ReLU, fc2, "
        "Sigmoid, mul], c (1x1 conv + BN); ReLU(proj(x) + f(x)) or ReLU(x + f(x))",
        "se_squeeze": "int(round(se_ratio * block_width_in))",
    }


def convnext_table(calls, model):
    args, kwargs, _ = calls["_convnext"]
    sd = [m.p for m in model.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    return {
        "block_setting": [[c.input_channels, c.out_channels, c.num_layers] for c in args[0]],
        "stochastic_depth_prob": args[1],
        "stochastic_depth_max": max(sd),
        "stochastic_depth_per_block": "p * block_index / (total_blocks - 1)",
        "layer_scale_init": inspect.signature(convnext.ConvNeXt).parameters["layer_scale"].default,
        "layer_scale_shape": "[C, 1, 1] parameter of CNBlock (key features.#.#.layer_scale)",
        "stem": "features.0: Conv2d(3, C0, k4, s4, bias) + LayerNorm2d(eps 1e-6)",
        "downsample": "features.{2,4,6}: LayerNorm2d(C, eps 1e-6) + Conv2d(C, C', k2, s2, bias)",
        "block": "CNBlock: dwconv 7x7 p3 (bias) -> Permute NHWC -> LayerNorm(C, eps 1e-6) -> Linear(C, 4C) "
        "-> GELU (exact erf, approximate='none') -> Linear(4C, C) -> Permute NCHW; "
        "x + stochastic_depth(layer_scale * block(x))",
        "classifier": "LayerNorm2d(C, eps 1e-6) -> Flatten(1) -> Linear(C, n) (after AdaptiveAvgPool2d(1))",
    }


def family_facts(name, fam, calls, model):
    if fam == "mobilenet_v3":
        return mobilenet_v3_table(calls)
    if fam in ("efficientnet", "efficientnet_v2"):
        return efficientnet_table(name, calls, model)
    if fam == "mnasnet":
        return mnasnet_table(calls, model)
    if fam in ("regnet_x", "regnet_y"):
        return regnet_table(calls, model)
    if fam == "convnext":
        return convnext_table(calls, model)
    if fam == "shufflenet_v2":
        args = calls["_shufflenetv2"][0]
        return {
            "stages_repeats": args[2],
            "stages_out_channels": args[3],
            "block": "InvertedResidual: stride 2: cat(branch1(x), branch2(x)); stride 1: x1, x2 = "
            "x.chunk(2, 1), cat(x1, branch2(x2)); then channel_shuffle(groups=2): view(N, 2, C/2, H, W), "
            "transpose(1, 2), contiguous, view(N, C, H, W). branch1 of stride-1 blocks is an empty "
            "Sequential, never called",
            "branch1": "dw conv3x3 s2 p1 (in), BN, conv1x1 (in -> out/2), BN, ReLU",
            "branch2": "conv1x1 (in or out/2 -> out/2), BN, ReLU, dw conv3x3 (stride) p1, BN, conv1x1, BN, "
            "ReLU",
            "head": "conv5 = conv1x1 + BN + ReLU; x.mean([2, 3]); fc",
        }
    if fam == "densenet":
        a = calls["_densenet"][0]
        return {
            "growth_rate": a[0],
            "block_config": list(a[1]),
            "num_init_features": a[2],
            "bn_size": 4,
            "drop_rate": 0.0,
            "memory_efficient": False,
            "layer": "_DenseLayer(input list): cat(inputs) -> norm1 -> relu1 -> conv1 1x1 (bn_size*k) -> "
            "norm2 -> relu2 -> conv2 3x3 p1 (k); the block returns cat([input] + every layer's new features)",
            "transition": "norm -> relu -> conv 1x1 (C -> C//2) -> AvgPool2d(2, 2)",
            "head": "features ends with norm5; forward: F.relu -> F.adaptive_avg_pool2d(1) -> flatten -> "
            "classifier",
            "checkpoint_keys": "torchvision's .pth checkpoints use the old names "
            "denselayer#.norm.1/conv.1/...; densenet._load_state_dict renames them with "
            + src_ref(densenet, r"r\"\^\(\.\*denselayer"),
        }
    if fam in ("resnet", "resnext", "wide_resnet"):
        a, kw, _ = calls["_resnet"]
        return {
            "block": a[0].__name__,
            "layers": a[1],
            "groups": kw.get("groups", 1),
            "width_per_group": kw.get("width_per_group", 64),
            "bottleneck_width": "int(planes * width_per_group / 64) * groups, planes = 64, 128, 256, 512",
            "stride_on": "conv1 (3x3) of BasicBlock; conv2 (3x3) of Bottleneck (ResNet v1.5), and "
            "downsample.0 (1x1)",
            "downsample": "conv1x1(stride) + BN in block 0 of a stage when stride != 1 or inplanes != planes "
            "* expansion",
        }
    if fam == "vgg":
        a = calls["_vgg"][0]
        return {
            "cfg": a[0],
            "layers": vgg.cfgs[a[0]],
            "batch_norm": a[1],
            "classifier": "Linear(512*7*7, 4096), ReLU, Dropout(0.5), Linear(4096, 4096), ReLU, "
            "Dropout(0.5), Linear(4096, n)",
        }
    if fam == "squeezenet":
        fires = [
            [
                int(n.split(".")[1]),
                m.inplanes,
                m.squeeze.out_channels,
                m.expand1x1.out_channels,
                m.expand3x3.out_channels,
            ]
            for n, m in model.named_modules()
            if isinstance(m, squeezenet.Fire)
        ]
        first = model.features[0]
        return {
            "version": calls["_squeezenet"][0][0],
            "stem": {
                "kernel": first.kernel_size[0],
                "stride": first.stride[0],
                "padding": first.padding[0],
                "out": first.out_channels,
            },
            "fire": fires,
            "fire_columns": ["features_index", "inplanes", "squeeze", "expand1x1", "expand3x3"],
            "fire_forward": "relu(squeeze(x)) -> cat(relu(expand1x1), relu(expand3x3 p1))",
            "classifier": "Dropout(0.5), Conv2d(512, n, 1) (bias), ReLU, AdaptiveAvgPool2d(1); flatten",
        }
    if fam == "googlenet":
        incs = {
            n: [
                m.branch1.conv.out_channels,
                m.branch2[0].conv.out_channels,
                m.branch2[1].conv.out_channels,
                m.branch3[0].conv.out_channels,
                m.branch3[1].conv.out_channels,
                m.branch4[1].conv.out_channels,
            ]
            for n, m in model.named_modules()
            if isinstance(m, googlenet.Inception)
        }
        return {
            "inception": incs,
            "inception_columns": ["ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5 (kernel 3!)", "pool_proj"],
            "branch3_kernel": "3x3 padding 1, not 5x5: "
            + src_ref(googlenet, r"kernel_size=3 instead of kernel_size=5"),
            "basic_conv2d": "conv (bias=False) -> BatchNorm2d(eps=0.001) -> F.relu",
            "aux": "aux1 after inception4a, aux2 after inception4d, train mode only: "
            "adaptive_avg_pool2d(4,4), BasicConv2d 1x1 -> 128, flatten, fc1 2048->1024, relu, dropout 0.7, "
            "fc2",
            "dropout": 0.2,
        }
    if fam == "inception":
        return {
            "mixed": {n: type(m).__name__ for n, m in model.named_children() if n.startswith("Mixed")},
            "basic_conv2d": "conv (bias=False) -> BatchNorm2d(eps=0.001) -> F.relu",
            "aux": "AuxLogits after Mixed_6e, train mode only: avg_pool2d(5, 3), conv0 1x1 -> 128, conv1 5x5 "
            "-> 768, adaptive_avg_pool2d(1), flatten, fc 768 -> n",
            "dropout": 0.5,
            "min_size": [75, 75],
        }
    if fam == "mobilenet_v2":
        return {
            "inverted_residual_setting": [
                [1, 16, 1, 1],
                [6, 24, 2, 2],
                [6, 32, 3, 2],
                [6, 64, 4, 2],
                [6, 96, 3, 1],
                [6, 160, 3, 2],
                [6, 320, 1, 1],
            ],
            "setting_columns": ["t (expand)", "c (out)", "n (repeats)", "s (stride of the first)"],
            "source": src_ref(mobilenetv2, r"# t, c, n, s"),
            "width_mult": 1.0,
            "round_nearest": 8,
            "stem": 32,
            "last_channel": 1280,
            "block": "InvertedResidual: [conv1x1 expand CNA ReLU6 if t != 1], dw 3x3 CNA ReLU6 (stride), "
            "conv1x1, BN; x + conv(x) (out of place) if stride 1 and in == out",
            "head": "features.18 conv1x1 CNA ReLU6 -> F.adaptive_avg_pool2d(1) -> flatten -> Dropout(0.2) -> "
            "Linear",
        }
    if fam == "alexnet":
        return {
            "features": "conv11 s4 p2 (64), ReLU, MaxPool(3,2), conv5 p2 (192), ReLU, MaxPool(3,2), conv3 p1 "
            "(384), ReLU, conv3 p1 (256), ReLU, conv3 p1 (256), ReLU, MaxPool(3,2)",
            "avgpool": [6, 6],
            "classifier": "Dropout(0.5), Linear(9216, 4096), ReLU, Dropout(0.5), Linear(4096, 4096), ReLU, "
            "Linear(4096, n)",
        }
    return {}


TRANSFORM_INPUT = {
    "applies_to": ["googlenet", "inception_v3"],
    "default": "False in GoogLeNet/Inception3; the builders set True only when weights are given and "
    "transform_input is not passed",
    "source": [
        src_ref(googlenet, r"x_ch0 = torch\.unsqueeze"),
        src_ref(googlenet, r"x_ch1 = torch\.unsqueeze"),
        src_ref(googlenet, r"x_ch2 = torch\.unsqueeze"),
        src_ref(inception, r"x_ch0 = torch\.unsqueeze"),
    ],
    "formula": "y_c = x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5, std = (0.229, 0.224, 0.225), mean = "
    "(0.485, 0.456, 0.406); computed as torch.unsqueeze(x[:, c], 1) * scale (f32 tensor times Python float) "
    "then + shift, then cat",
    "scale": [0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5],
    "shift": [(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5],
}


def check_transform_input():
    """Does x*f32(scale)+f32(shift) in float32 reproduce _transform_input exactly?"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 17, 13, generator=g)
    m = googlenet.GoogLeNet(num_classes=2, aux_logits=False, transform_input=True, init_weights=False)
    y = m._transform_input(x)
    s = torch.tensor(TRANSFORM_INPUT["scale"], dtype=torch.float32).view(1, 3, 1, 1)
    b = torch.tensor(TRANSFORM_INPUT["shift"], dtype=torch.float32).view(1, 3, 1, 1)
    return float((y - (x * s + b)).abs().max())


def activation_grads():
    """Measured derivatives at the breakpoints (torch CPU autograd)."""
    pts = torch.tensor([-3.0, -1e-3, 0.0, 1e-3, 3.0, 6.0], requires_grad=True)
    out = {}
    for name, f in [
        ("relu", torch.relu),
        ("relu6", nn.functional.relu6),
        ("hardswish", nn.functional.hardswish),
        ("hardsigmoid", nn.functional.hardsigmoid),
    ]:
        (g,) = torch.autograd.grad(f(pts).sum(), pts)
        out[name] = dict(zip(["-3", "-0.001", "0", "0.001", "3", "6"], [round(v, 6) for v in g.tolist()]))
    return out


def maxpool_tie():
    """Where max_pool2d sends the gradient of a window of equal values (CPU)."""
    x = torch.ones(1, 1, 3, 3, requires_grad=True)
    nn.functional.max_pool2d(x, 3, 1).sum().backward()
    return {
        "input": "ones(3x3), max_pool2d(3)",
        "grad": x.grad[0, 0].tolist(),
        "meaning": "first max in row-major order",
    }


def doc_checks(tensors, modules_by_variant, calls_by_variant, models_meta):
    """Numbers used to check claims of torchvision-cnns.md."""
    res = {}
    sigs = collections.defaultdict(list)
    keysets = collections.defaultdict(list)
    for v, rows in tensors.items():
        sigs[json.dumps([[k, s] for k, _, s in rows])].append(v)
        keysets[json.dumps(sorted(k for k, _, _ in rows))].append(v)
    res["duplicate_signatures"] = [g for g in sigs.values() if len(g) > 1]
    res["keyset_collisions"] = sorted([g for g in keysets.values() if len(g) > 1])
    reuse = {}
    for v, calls in calls_by_variant.items():
        multi = sorted({re.sub(r"\d+", "#", n) + f" x{c}" for n, c in calls.items() if c > 1})
        if multi:
            reuse[v] = multi
    res["modules_called_more_than_once"] = reuse
    kernels, bias_convs, pads, grouped_rule, not_prev = collections.Counter(), set(), set(), [], {}
    dil = set()
    for v, m in models_meta.items():
        prev_out = None
        sd = m.state_dict()
        convs = {n + ".weight": c for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}
        mism = 0
        for k, t in sd.items():
            if t.dim() != 4:
                continue
            c = convs[k]
            kernels[(tuple(c.kernel_size), tuple(c.stride))] += 1
            if c.bias is not None:
                bias_convs.add(FAMILY[v])
            if c.padding_mode != "zeros" or isinstance(c.padding, str):
                pads.add(v)
            if c.dilation != (1, 1):
                dil.add(v)
            if c.groups > 1 and t.shape[1] != 1:
                ok = prev_out is not None and prev_out // t.shape[1] == c.groups
                if not ok:
                    grouped_rule.append((v, k))
            if c.groups == 1 and prev_out is not None and c.in_channels != prev_out:
                mism += 1
            prev_out = t.shape[0]
        not_prev[v] = mism
    res["conv_kernel_stride"] = sorted([[list(k), list(s), n] for (k, s), n in kernels.items()])
    res["families_with_conv_bias"] = sorted(bias_convs)
    res["nonzero_padding_mode_or_str_padding"] = sorted(pads)
    res["dilated_convs"] = sorted(dil)
    res["grouped_rule_failures"] = grouped_rule
    res["groups1_in_differs_from_prev_out"] = {
        v: not_prev[v]
        for v in ("densenet121", "densenet161", "densenet169", "densenet201", "googlenet", "inception_v3")
    }
    res["other_buffers"] = sorted(
        {
            k
            for v, m in models_meta.items()
            for k, _ in m.named_buffers()
            if not re.search(r"\.(running_mean|running_var|num_batches_tracked)$", k)
        }
    )
    leaf = collections.defaultdict(set)
    for v, rows in modules_by_variant.items():
        m = models_meta[v]
        names = {n for n, c in m.named_modules() if n and not list(c.children())}
        for n, cls, _ in rows:
            if n in names:
                leaf[FAMILY[v]].add(cls)
    res["leaf_classes"] = {f: sorted(s) for f, s in leaf.items()}
    sd = {}
    for v, m in models_meta.items():
        ps = [c.p for c in m.modules() if isinstance(c, torchvision.ops.StochasticDepth)]
        if ps:
            sd[v] = round(max(ps), 4)
    res["stochastic_depth_max"] = sd
    res["dropout_p"] = sorted(
        {c.p for m in models_meta.values() for c in m.modules() if isinstance(c, nn.Dropout)}
    )
    return res


def fx_checks():
    """symbolic_trace of every variant (meta) and the counts the document quotes."""
    from torch import fx

    out = {"failures": [], "counts": {}}
    for v, _ in VARIANTS:
        m, _ = build_meta(v)
        try:
            gm = fx.symbolic_trace(m)
        except Exception as e:  # noqa: BLE001
            out["failures"].append([v, type(e).__name__])
            continue
        if v in ("googlenet", "inception_v3"):
            c = collections.Counter(
                getattr(n.target, "__name__", str(n.target))
                for n in gm.graph.nodes
                if n.op == "call_function"
            )
            out["counts"][v] = {k: c[k] for k in ("relu", "avg_pool2d", "max_pool2d", "cat")}
    try:
        with torch.device("meta"):
            m = torchvision.models.densenet121(weights=None, memory_efficient=True)
        fx.symbolic_trace(m.eval())
        out["densenet121_memory_efficient"] = "traces"
    except Exception as e:  # noqa: BLE001
        out["densenet121_memory_efficient"] = type(e).__name__
    return out


def write_manifests(with_fx=True):
    out = ROOT / "manifests"
    out.mkdir(parents=True, exist_ok=True)
    preprocess, variants, tensors, mods, calls_by, metas = {}, {}, {}, {}, {}, {}
    fam_facts = collections.defaultdict(dict)
    for name, fam in VARIANTS:
        model, calls = build_meta(name)
        x = torch.empty(input_shape(name), device="meta")
        rows, ncalls, y = trace_modules(model, x)
        tens = tensor_rows(model)
        manifest = {
            "variant": name,
            "family": fam,
            "num_classes": 1000,
            "tensors": tens,
            "input": input_shape(name),
            "modules": rows,
            "output": list(y.shape),
        }
        (out / f"{name}.json").write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
        preprocess[name] = preprocess_entry(name)
        v = {
            "family": fam,
            **norm_facts(model),
            "pools": pool_facts(model),
            "default_target_layer": DEFAULT_LAYER[fam] or f"features.{len(model.features) - 2}",
        }
        if name in ("googlenet", "inception_v3"):
            v["aux_keys"] = [k for k, _, _ in tens if k.startswith(("aux1.", "aux2.", "AuxLogits."))]
            v["aux_modules"] = [n for n, _, _ in rows if n.split(".")[0] in ("aux1", "aux2", "AuxLogits")]
        variants[name] = v
        fam_facts[fam][name] = family_facts(name, fam, calls, model)
        tensors[name], mods[name], calls_by[name], metas[name] = tens, rows, ncalls, model
        print(
            f"manifest {name}: {len(tens)} tensors, {len(rows)} modules, output {list(y.shape)}", flush=True
        )
    (out / "preprocess.json").write_text(json.dumps(preprocess, indent=1) + "\n")
    checks = doc_checks(tensors, mods, calls_by, metas)
    checks["activation_grads"] = activation_grads()
    checks["maxpool_tie_grad"] = maxpool_tie()
    checks["transform_input_f32_max_abs_diff"] = check_transform_input()
    if with_fx:
        checks["fx"] = fx_checks()
    facts = {
        "torchvision": torchvision.__version__,
        "torch": torch.__version__,
        "source": str(TV_DIR / "models"),
        "how": "read from the installed torchvision by scripts/make_family_fixtures.py: builders run on the "
        "meta device with their module-level helpers wrapped to record their arguments; module attributes "
        "(eps, pools) read from the built models",
        "variants": variants,
        "families": fam_facts,
        "transform_input": TRANSFORM_INPUT,
        "functional_pools": {
            f: [{"what": what, "source": src_ref(mod, pat)} for mod, pat, what in lst]
            for f, lst in FUNCTIONAL_POOLS.items()
        },
        "inplace_sites": [
            {"what": s[2], "source": src_ref(s[0], s[1], s[3] if len(s) > 3 else 0)} for s in INPLACE_SITES
        ],
        "activations": {
            "Hardswish": "x * relu6(x + 3) / 6",
            "Hardsigmoid": "relu6(x + 3) / 6",
            "SiLU": "x * sigmoid(x)",
            "GELU": "exact: x * 0.5 * (1 + erf(x / sqrt(2))) (nn.GELU() default approximate='none')",
            "measured_derivatives_at_breakpoints": checks["activation_grads"],
        },
        "checks": checks,
        "notes": doc_notes(checks),
    }
    (ROOT / "facts.json").write_text(json.dumps(facts, indent=1) + "\n")
    return facts


def doc_notes(c):
    """Claims of /work/shared/reference/torchvision-cnns.md found wrong or imprecise (checked against
    torchvision's installed source and the numbers in c)."""
    sdmax = c["stochastic_depth_max"]
    notes = [
        "Checked and found right (no note needed): versions; fx.symbolic_trace of all 68 in eval (and the "
        "densenet memory_efficient TraceError); googlenet F.relu x57, inception F.relu x94 / avg_pool2d x9 / "
        "max_pool2d x2; leaf-module classes per family; module reuse only in resnet/resnext/wide "
        "(layerX.Y.relu x2/x3); ceil_mode pools and googlenet 112 -> 56; the derivatives at breakpoints "
        "(measured, facts.activations); maxpool ties to the first max; SE squeeze formulas; transform_input "
        "constants; aux key counts (20, 14); key patterns; no other buffers; all 68 key->shape signatures "
        "unique and the key-name-set collision groups exactly as listed; the grouped-conv rule (no failures) "
        "and the groups=1 mismatch counts (densenet121 57, googlenet 37, inception_v3 39); eps tables.",
        f"§2 StochasticDepth 'p from 0 up to 0.1875-0.5': the largest per-block p ranges from "
        f"{min(sdmax.values())} (convnext_tiny: stochastic_depth_prob 0.1) to {max(sdmax.values())}; "
        f"efficientnet uses p * i / n (b0 max {sdmax['efficientnet_b0']}), convnext p * i / (n - 1) (its "
        "last block gets the full p). Identity in eval either way.",
        "§1/§2 in-place aliasing: the doc names only resnet's `out += identity`. Also in place in "
        "torchvision: `result += input` in CNBlock (convnext), MBConv and FusedMBConv (efficientnet), "
        "mobilenet_v3 InvertedResidual (overwrite the hooked output of `block` / its projection BatchNorm, "
        "and for convnext of stochastic_depth); F.relu(inplace=True) in googlenet and inception BasicConv2d "
        "(overwrites `bn`'s output) and in DenseNet.forward (overwrites the output of `features` = "
        "features.norm5, the DEFAULT target layer: pytorch-grad-cam on stock torchvision densenet records "
        "post-ReLU activations); every activation built by Conv2dNormActivation (inplace=True default) and "
        "every nn.ReLU(inplace=True) overwrites the conv/BN output before it. mobilenet_v2, mnasnet and "
        "regnet add out of place. See facts.inplace_sites.",
        "§2 AdaptiveAvgPool2d: googlenet's aux (4,4) pool is functional (F.adaptive_avg_pool2d), not a "
        "module; mobilenet_v2's global pool is functional too; mnasnet and shufflenet use x.mean([2, 3]).",
        "§3 'Gaps in Sequential numbering mark ReLU, pool or Permute modules': gaps also mark Dropout "
        "(alexnet classifier.0/.3, squeezenet classifier.0, mobilenet_v2/efficientnet/mnasnet classifier.0, "
        "mobilenet_v3 classifier.2), other activations (ReLU6, SiLU, Hardswish at index 2 of "
        "Conv2dNormActivation, mobilenet_v3 classifier.1 Hardswish, convnext block.4 GELU), Flatten "
        "(convnext classifier.1) and squeezenet's classifier ReLU / AdaptiveAvgPool2d (classifier.2/.3).",
        "§3 densenet keys: model.state_dict() uses norm1/conv1/norm2/conv2, but torchvision's .pth "
        "checkpoints still use denselayer#.norm.1 / conv.1 / norm.2 / conv.2 and are renamed at load "
        "(densenet._load_state_dict regex, facts.families.densenet.*.checkpoint_keys); a converter from "
        "those files must rename the same way.",
        "§3 mobilenet_v3's key list omits the stem features.0.{0,1} and the last conv features.N.{0,1} "
        "(efficientnet's likewise omits features.N.{0,1}).",
        "§2 Conv2d kernels (clarification): googlenet has no 5x5 conv (its 'ch5x5' branch is 3x3, "
        "torchvision issue #906, kept for the ported weights); 5x5 occurs in inception_v3 (branch5x5_2, "
        "AuxLogits.conv1) and as depthwise 5x5 in mnasnet / mobilenet_v3 / efficientnet.",
        "Not in the doc: a mnasnet state_dict saved with _version 1 metadata and alpha != 1 uses the old "
        "fixed 32/16 stem (MNASNet._load_from_state_dict rebuilds layers 0-8); shapes tell it apart.",
        "Not in the doc: ResNet Bottleneck puts the stride on conv2 (3x3, 'ResNet v1.5'), not conv1; "
        "efficientnet_b5-b7 and mobilenet_v3 BatchNorm momentum 0.01 (irrelevant in eval).",
    ]
    if c["keyset_collisions"]:
        notes.append(
            "§4 key-name-set collisions measured: "
            + "; ".join("{" + ", ".join(g) + "}" for g in c["keyset_collisions"])
        )
    if c["duplicate_signatures"]:
        notes.append("§4 NOT all key->shape signatures are unique: " + str(c["duplicate_signatures"]))
    return notes


# ----------------------------------------------------------------------------------------------
# Parity fixtures.

BN = "partial(nn.BatchNorm2d, eps=1e-3)"
EFF = "torchvision.models.efficientnet"

# name, torchvision variant, constructor, weights dtype, input (N, C, H, W), [(layer, class or None)],
# seed offset
FIXTURES = [
    (
        "alexnet",
        "alexnet",
        "models.narrow_channels(torchvision.models.alexnet(weights=None, num_classes=10), div=8, "
        "fixed={4096: 128})",
        torch.float16,
        (2, 3, 96, 80),
        [("features.11", None), ("features.3", 3), ("features.8", None)],
    ),
    (
        "squeezenet1_0",
        "squeezenet1_0",
        "models.narrow_channels(torchvision.models.squeezenet1_0(weights=None, num_classes=10), div=4)",
        torch.float32,
        (2, 3, 66, 50),
        [("features", None), ("features.6", 4), ("features.7", None)],
    ),
    (
        "squeezenet1_1",
        "squeezenet1_1",
        "models.narrow_channels(torchvision.models.squeezenet1_1(weights=None, num_classes=10), div=4)",
        torch.float32,
        (2, 3, 66, 50),
        [("features", None), ("features.8", 8), ("features.6", None)],
    ),
    (
        "resnext50_32x4d",
        "resnext50_32x4d",
        "models.NarrowGroupedResNet(torchvision.models.resnet.Bottleneck, [1, 2, 1, 1], base=16, groups=8, "
        "width_per_group=8, num_classes=10)",
        torch.bfloat16,
        (2, 3, 64, 48),
        [("layer4", None), ("layer3.0.conv2", 7), ("layer2.1", None)],
    ),
    (
        "wide_resnet50_2",
        "wide_resnet50_2",
        "models.NarrowGroupedResNet(torchvision.models.resnet.Bottleneck, [1, 2, 1, 1], base=8, "
        "width_per_group=128, num_classes=10)",
        torch.float16,
        (2, 3, 64, 48),
        [("layer4", None), ("layer3.0.conv2", 2), ("layer2.1.bn3", None)],
    ),
    (
        "densenet121",
        "densenet121",
        "torchvision.models.densenet.DenseNet(growth_rate=8, block_config=(2, 3, 2, 2), "
        "num_init_features=16, bn_size=4, num_classes=10)",
        torch.float32,
        (2, 3, 80, 64),
        [("features", None), ("features.denseblock2", 3), ("features.transition1.pool", None)],
    ),
    (
        "googlenet",
        "googlenet",
        "models.narrow_channels(torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=True, "
        "transform_input=True, init_weights=True), div=8)",
        torch.float32,
        (2, 3, 64, 48),
        [("inception5b", None), ("inception4a", 6), ("inception3b.branch3.1.bn", None)],
    ),
    (
        "inception_v3",
        "inception_v3",
        "models.narrow_channels(torchvision.models.inception_v3(weights=None, num_classes=10, "
        "aux_logits=True, transform_input=True, init_weights=True), div=16)",
        torch.float32,
        (2, 3, 112, 128),
        [("Mixed_7c", None), ("Mixed_6c.branch7x7dbl_3.bn", 1), ("Mixed_5c", None)],
    ),
    # MobileNetV2 and V3 keep torchvision's own block tables (narrowed by width_mult): their
    # strides and activations belong to the table rows, which the weights do not identify.
    (
        "mobilenet_v2",
        "mobilenet_v2",
        "torchvision.models.mobilenetv2.MobileNetV2(num_classes=10, width_mult=0.25)",
        torch.float16,
        (2, 3, 64, 48),
        [("features", None), ("features.3", 5), ("features.6.conv.1.0", None)],
    ),
    (
        "mobilenet_v3_small",
        "mobilenet_v3_small",
        "torchvision.models.mobilenetv3.MobileNetV3(*torchvision.models.mobilenetv3._mobilenet_v3_conf("
        "'mobilenet_v3_small', width_mult=0.25), num_classes=10)",
        torch.float32,
        (2, 3, 64, 48),
        [("features", None), ("features.5.block.3.1", 4), ("features.4.block.2", None)],
    ),
    (
        "mobilenet_v3_large",
        "mobilenet_v3_large",
        "torchvision.models.mobilenetv3.MobileNetV3(*torchvision.models.mobilenetv3._mobilenet_v3_conf("
        "'mobilenet_v3_large', width_mult=0.25), num_classes=10)",
        torch.float16,
        (2, 3, 64, 48),
        [("features", None), ("features.4.block", 8), ("features.6.block.1", None)],
    ),
    (
        "mnasnet0_5",
        "mnasnet0_5",
        "torchvision.models.mnasnet.MNASNet(0.25, num_classes=10)",
        torch.float16,
        (2, 3, 64, 48),
        [("layers", None), ("layers.9", 3), ("layers.10.1", None)],
    ),
    (
        "efficientnet_b0",
        "efficientnet_b0",
        f"{EFF}.EfficientNet({EFF}._efficientnet_conf('efficientnet_b0', width_mult=0.25, "
        "depth_mult=0.5)[0], dropout=0.2, num_classes=10)",
        torch.float32,
        (2, 3, 64, 48),
        [("features", None), ("features.4.1.block.3", 2), ("features.6.0.block.2", None)],
    ),
    (
        "efficientnet_v2_s",
        "efficientnet_v2_s",
        f"{EFF}.EfficientNet([{EFF}.FusedMBConvConfig(1, 3, 1, 8, 8, 2), "
        f"{EFF}.FusedMBConvConfig(4, 3, 2, 8, 16, 2), "
        f"{EFF}.FusedMBConvConfig(4, 3, 2, 16, 24, 1), {EFF}.MBConvConfig(4, 3, 2, 24, 32, 2), "
        f"{EFF}.MBConvConfig(6, 3, 1, 32, 40, 2), {EFF}.MBConvConfig(6, 3, 2, 40, 64, 2)], dropout=0.2, "
        f"last_channel=128, norm_layer={BN}, num_classes=10)",
        torch.float32,
        (2, 3, 64, 48),
        [("features", None), ("features.2.1.block", 8), ("features.5.0.block.2", None)],
    ),
    (
        "regnet_x_400mf",
        "regnet_x_400mf",
        "torchvision.models.regnet.RegNet(torchvision.models.regnet.BlockParams(depths=[1, 2, 2, 1], "
        "widths=[16, 32, 48, 64], group_widths=[8, 8, 8, 8], bottleneck_multipliers=[1.0, 1.0, 1.0, 1.0], "
        "strides=[2, 2, 2, 2], se_ratio=None), stem_width=16, num_classes=10)",
        torch.float32,
        (2, 3, 64, 48),
        [
            ("trunk_output", None),
            ("trunk_output.block2.block2-1", 0),
            ("trunk_output.block3.block3-0.f.b", None),
        ],
    ),
    (
        "regnet_y_400mf",
        "regnet_y_400mf",
        "torchvision.models.regnet.RegNet(torchvision.models.regnet.BlockParams(depths=[1, 2, 2, 1], "
        "widths=[16, 32, 48, 64], group_widths=[8, 8, 8, 8], bottleneck_multipliers=[1.0, 1.0, 1.0, 1.0], "
        "strides=[2, 2, 2, 2], se_ratio=0.25), stem_width=16, num_classes=10)",
        torch.float32,
        (2, 3, 64, 48),
        [
            ("trunk_output", None),
            ("trunk_output.block2.block2-1", 2),
            ("trunk_output.block3.block3-0.f.se", None),
        ],
    ),
    (
        "shufflenet_v2_x0_5",
        "shufflenet_v2_x0_5",
        "torchvision.models.shufflenetv2.ShuffleNetV2([2, 3, 2], [8, 16, 32, 64, 128], num_classes=10)",
        torch.float32,
        (2, 3, 64, 48),
        [("conv5", None), ("stage3.1", 4), ("stage2.0.branch1", None)],
    ),
    (
        "convnext_tiny",
        "convnext_tiny",
        "torchvision.models.convnext.ConvNeXt([torchvision.models.convnext.CNBlockConfig(8, 16, 1), "
        "torchvision.models.convnext.CNBlockConfig(16, 32, 1), "
        "torchvision.models.convnext.CNBlockConfig(32, 48, 2), "
        "torchvision.models.convnext.CNBlockConfig(48, None, 1)], stochastic_depth_prob=0.1, "
        "layer_scale=0.5, num_classes=10)",
        torch.float32,
        (2, 3, 96, 64),
        [("features", None), ("features.5.1.stochastic_depth", 7), ("features.4.0", None)],
    ),
]


def construct(expr):
    return eval(
        expr, {"torch": torch, "nn": nn, "torchvision": torchvision, "partial": partial, "models": models}
    )


def randomize_convnext(model, g):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, convnext.CNBlock):
                m.layer_scale.copy_(torch.rand(m.layer_scale.shape, generator=g) * 0.5 + 0.25)
            if isinstance(m, nn.LayerNorm):
                n = m.weight.numel()
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def calibrate(model, x, g):
    """One no-grad forward on a calibration batch x in which, on its first call, each Conv2d / Linear
    is rescaled per output channel to unit std over the batch (and, where it has a bias, shifted to
    mean 0.2 * N(0, 1)), and each BatchNorm2d gets running statistics from its actual input
    (mean + 0.1 sd N(0, 1), var * U(0.5, 1.5)). Without it the deep narrow models' logits are
    dominated by input-independent terms (biases, BN shifts) or vanish."""
    seen, handles = set(), []

    def lin_hook(m, inp, out):
        if m in seen:
            return None
        seen.add(m)
        dim = (
            1 if isinstance(m, nn.Conv2d) else out.dim() - 1
        )  # Linear: channels last (also NHWC in ConvNeXt)
        t = out.movedim(dim, -1).reshape(-1, out.shape[dim])
        mu, sd = t.mean(0), t.std(0).clamp_min(1e-6)
        if isinstance(m, nn.Conv2d) and out.shape[2] * out.shape[3] == 1:
            # SE fc1/fc2 on pooled 1x1 maps: per-channel statistics over the batch alone do not
            # generalize (a fresh batch comes out several times larger); one scale for all
            mu, sd = torch.full_like(mu, float(t.mean())), torch.full_like(sd, float(t.std()))
        shape = [1] * out.dim()
        shape[dim] = -1
        m.weight.div_(sd.view(-1, *[1] * (m.weight.dim() - 1)))
        if m.bias is None:
            return out / sd.view(shape)
        target = 0.2 * torch.randn(mu.shape, generator=g)
        m.bias.copy_((m.bias - mu) / sd + target)
        return (out - mu.view(shape)) / sd.view(shape) + target.view(shape)

    def bn_pre(m, inp):
        if m in seen:
            return
        seen.add(m)
        t = inp[0]
        mu = t.mean((0, 2, 3))
        var = t.var((0, 2, 3), unbiased=False).clamp_min(1e-3)
        n = mu.numel()
        m.running_mean.copy_(mu + 0.1 * var.sqrt() * torch.randn(n, generator=g))
        m.running_var.copy_(var * (torch.rand(n, generator=g) + 0.5))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(lin_hook))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(bn_pre))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()


def verify(out, expr):
    """Rebuilds the model from its constructor expression and the saved weights alone and checks
    that it reproduces the saved logits and CAMs."""
    from safetensors.torch import load_file

    model = not_inplace(construct(expr)).eval()
    sd = collections.OrderedDict(
        (k, v.float() if v.is_floating_point() else v)
        for k, v in load_file(str(out / "model.safetensors")).items()
    )
    # safetensors keeps no per-module metadata; MNASNet._load_from_state_dict refuses a state_dict
    # without its "version" (1 or 2), so give it the fresh model's metadata
    sd._metadata = model.state_dict()._metadata
    model.load_state_dict(sd, strict=True)
    exp = load_file(str(out / "expected.safetensors"))
    man = json.loads((out / "manifest.json").read_text())
    with torch.no_grad():
        dl = float((model(exp["input"]) - exp["logits"]).abs().max())
    dc = max(
        float((reference_cams(model, exp["input"], c["layer"], c["class"])[0] - exp[c["cam"]]).abs().max())
        for c in man["cases"]
    )
    if dl > 1e-5 or dc > 1e-5:
        raise RuntimeError(f"{out.name}: reloaded model differs (logits {dl:.2e}, cams {dc:.2e})")
    return f"logits {dl:.0e}, cams {dc:.0e}"


def manifest_text(manifest):
    """The existing fixtures' layout (indent 1), with one line per module row."""
    modules = manifest.pop("modules")
    text = json.dumps(manifest, indent=1)
    rows = ",\n".join("  " + json.dumps(r) for r in modules)
    return text[:-2] + ',\n "modules": [\n' + rows + "\n ]\n}\n"


def write_fixtures(only=None):
    use_out_of_place_forwards()
    total, zero = 0, []
    for i, (name, variant, expr, dtype, shape, cases) in enumerate(FIXTURES):
        if only and name not in only:
            continue  # (the seeds follow the index in FIXTURES, so the others stay as they are)
        torch.manual_seed(1000 + i)
        model = not_inplace(prepare(construct(expr), 2000 + i))
        g = torch.Generator().manual_seed(3000 + i)
        if isinstance(model, convnext.ConvNeXt):
            randomize_convnext(model, g)
        calibrate(model, torch.randn(256, *shape[1:], generator=g), g)
        model = round_to(model, dtype)
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(4000 + i))
        rows, _, logits = trace_modules(model, x)
        out = ROOT / name
        out.mkdir(parents=True, exist_ok=True)
        save_weights(model, out / "model.safetensors", dtype)
        expected = {"input": x.contiguous(), "logits": logits.contiguous()}
        manifest = {
            "weights_dtype": str(dtype).removeprefix("torch."),
            "cases": [],
            "torchvision_variant": variant,
            "constructor": expr,
            "modules": rows,
        }
        msg = []
        for j, (layer, cls) in enumerate(cases):
            cams, classes = reference_cams(model, x, layer, cls)
            flat = cams.flatten(1)
            if not bool((flat.amax(1) > 0).all()):
                zero.append(
                    f"{name}: all-zero CAM for {layer} (classes {classes}, maxima {flat.amax(1).tolist()})"
                )
            expected[f"cam.{j}"] = cams.float().contiguous()
            manifest["cases"].append({"layer": layer, "class": cls, "classes": classes, "cam": f"cam.{j}"})
            msg.append(f"{layer}->{classes} mean {float(cams.mean()):.3f}")
        save_file(expected, str(out / "expected.safetensors"))
        (out / "manifest.json").write_text(manifest_text(manifest))
        check = verify(out, expr)
        size = sum(p.stat().st_size for p in out.iterdir())
        total += size
        n = sum(t.numel() for t in model.state_dict().values())
        print(
            f"{name}: {n} numbers ({dtype}), input {list(shape)}, {size / 1e3:.0f} kB, logits std "
            f"{float(logits.std()):.3f} (across batch {float(logits.std(0).mean()):.3f}); "
            + "; ".join(msg)
            + f"; reload: {check}",
            flush=True,
        )
    print(f"parity fixtures: {total / 1e6:.2f} MB")
    if zero:
        raise SystemExit("\n".join(zero))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifests-only", action="store_true", help="manifests and facts only (parts 1 and 2)")
    ap.add_argument("--fixtures-only", action="store_true", help="parity fixtures only (part 3)")
    ap.add_argument("--no-fx", action="store_true", help="skip the fx.symbolic_trace checks of the document")
    ap.add_argument("--only", default="", help="comma-separated parity fixture names to (re)write (part 3)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.fixtures_only:
        write_manifests(with_fx=not args.no_fx)
    if not args.manifests_only:
        write_fixtures(only=[n for n in args.only.split(",") if n])


if __name__ == "__main__":
    main()
