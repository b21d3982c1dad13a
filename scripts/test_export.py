"""Tests of scripts/export_model.py, where torch is installed (CI has none: it checks the
exporter's committed outputs in tests/exported.rs instead).

    python -m pytest scripts/test_export.py     # or: python scripts/test_export.py
"""

import json
import pathlib
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    import pytest

    pytest.skip("torch is not installed", allow_module_level=True)

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from export_model import ExportError, export_graph  # noqa: E402
from make_exported_fixtures import CustomCNN, TFSameNet  # noqa: E402


def refused(model, shape=(3, 16, 16)):
    try:
        export_graph(model, shape)
    except ExportError as e:
        return str(e)
    raise AssertionError("exported")


class Wrap(nn.Module):
    def __init__(self, body, c=4):
        super().__init__()
        self.body = body
        self.fc = nn.Linear(c, 2)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow
            return y
        return -y


class Exp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.exp(self.conv(x))


class PadPool(nn.Module):
    def forward(self, x):
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2)


def test_unsupported_module_names_its_path():
    msg = refused(Wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2))))
    assert "'body.1' at module path 'body.1'" in msg and "Upsample" in msg and "Supported: modules:" in msg


def test_data_dependent_control_flow():
    msg = refused(Wrap(Branchy()))
    assert msg.startswith("torch.fx cannot trace the model at module path 'body'"), msg
    assert "data-dependent control flow" in msg


def test_unsupported_function():
    msg = refused(Wrap(Exp()))
    assert "cannot export 'exp' at module path 'body': an unsupported function" in msg, msg


def test_padding_only_before_a_conv():
    msg = refused(Wrap(nn.Sequential(nn.Conv2d(3, 4, 1), PadPool())))
    assert "supported only directly before a convolution" in msg, msg


def test_tanh_gelu_and_reflect_padding():
    assert "only the exact (erf) GELU" in refused(Wrap(nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU("tanh"))))
    msg = refused(Wrap(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")))
    assert "padding_mode 'reflect'" in msg and "at module path 'body'" in msg


def test_custom_cnn_keeps_module_paths():
    graph, extra = export_graph(CustomCNN().eval(), (3, 20, 24))
    assert graph["schema"] == 1 and not extra
    outputs = {m["name"]: m["output"] for m in graph["modules"]}
    ops = {n["name"]: n for n in graph["nodes"]}
    # an nn.Sequential inside an nn.ModuleDict, and its children
    assert ops[outputs["paths.a"]]["module"] == "paths.a.1"
    assert ops[outputs["paths.b.2"]]["op"] == "hardswish"
    # the reused module's output is its first call; its second call still belongs to it
    assert ops[outputs["act"]]["inputs"] == [outputs["stem"]]
    assert sum(1 for n in graph["nodes"] if n["module"] == "act") == 2
    # F.pad (0, 1, 0, 1) folded into the conv after it: top, left, bottom, right
    assert ops[outputs["down"]]["params"]["padding"] == [0, 0, 1, 1]
    assert {"cat", "silu", "leaky_relu", "mul", "add", "sigmoid"} <= {n["op"] for n in graph["nodes"]}


def test_conv2d_subclass_with_a_padding_child():
    graph, _ = export_graph(TFSameNet().eval(), (3, 45, 38))
    outputs = {m["name"]: m["output"] for m in graph["modules"]}
    stem = next(n for n in graph["nodes"] if n["name"] == outputs["conv_stem"])
    assert stem["op"] == "conv2d" and stem["module"] == "conv_stem"
    assert stem["params"]["padding"] == [1, 0, 1, 1]  # TF same, 45x38, stride 2, k3: H pads 2, W pads 1
    assert outputs["conv_stem.static_padding"] is None  # folded into the conv


def test_cli_writes_one_file():
    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "r.safetensors"
        r = subprocess.run(
            [
                sys.executable,
                str(HERE / "export_model.py"),
                "torchvision.models:resnet18",
                "--kwargs",
                '{"num_classes": 10}',
                "--input-shape",
                "3,64,64",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        from safetensors import safe_open

        with safe_open(str(out), "pt") as f:
            graph = json.loads(f.metadata()["gradcam.graph"])
            assert "layer4.1.bn2.running_var" in f.keys()
        assert graph["default_layer"] == "layer4" and graph["input"]["shape"] == [3, 64, 64]
        r = subprocess.run(
            [sys.executable, str(HERE / "export_model.py"), "torch.nn:Upsample", "--out", str(out)],
            capture_output=True,
            text=True,
        )
        assert r.returncode != 0 and r.stderr.startswith("error: "), r.stderr


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"ok {name}")
