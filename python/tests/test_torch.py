"""gradcam.torch, the drop-in for pytorch-grad-cam, against pytorch-grad-cam itself (PyPI
`grad-cam` 1.5.x) on a torchvision ResNet-18, a VGG11-BN (both random init, seeded, no download)
and a small custom CNN; and the drop-in's own behaviour (export cache, errors, targets, outputs).

    PYTHONPATH=python python -m pytest python/tests/test_torch.py

Tolerance: maps within max-abs 1e-3, the CAM-family tolerance of the Rust parity tests
(tests/methods.rs). The engine computes in float32 with its own summation order, pytorch-grad-cam
partly in float64 numpy; each map is min-max normalized to [0, 1] twice, which scales a rounding
difference by 1 / (max - min) of the raw map, and a bilinear upsample and the ReLU can move a
pixel across a kink. Observed differences are around 1e-5.

Models and inputs are small (96x96 and 64x64 for ResNet-18 and VGG11-BN, batch 2) and ScoreCAM and
AblationCAM (a forward pass per channel) run on the small CNN only, to keep the file fast on two
CPU cores. Every engine here is the CPU backend (gradcam.torch.default_backend = "cpu"), except
in the README example, which runs with the drop-in's defaults.
"""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pgc = pytest.importorskip("pytorch_grad_cam")

import torch.nn.functional as F  # noqa: E402
from pytorch_grad_cam import (  # noqa: E402
    base_cam,
    eigen_cam,
    eigen_grad_cam,
    grad_cam_elementwise,
    hirescam,
    layer_cam,
)
from pytorch_grad_cam.utils import model_targets as pgc_targets  # noqa: E402
from pytorch_grad_cam.utils import svd_on_activations  # noqa: E402
from torch import nn  # noqa: E402

import gradcam  # noqa: E402
import gradcam.torch as gt  # noqa: E402
from gradcam.torch.utils import model_targets as gt_targets  # noqa: E402

TOL = 1e-3

# PyTorch's OpenMP threads spin after each op; on two cores they starve the engine's threads (and
# the engine's starve them) when the two alternate, which made this file three times slower.
torch.set_num_threads(1)

ALL = [
    "GradCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FEM",
]
EIGEN = {"EigenCAM", "EigenGradCAM"}


@pytest.fixture(autouse=True)
def cpu_backend(monkeypatch):
    monkeypatch.setattr(gt, "default_backend", "cpu")


# ----------------------------------------------------------------------------------------------
# Models.


def randomize_batch_norms(model, g):
    """Running statistics and affine parameters away from (0, 1, 1, 0), so that BatchNorm is not
    the identity and the maps depend on all of it."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


class SmallCNN(nn.Module):
    """Functional ops, a concat of two branches, a residual, a module reused: what the exporter
    traces into. `stem` and `block` end in a ReLU (AblationCAM's ablated value is then 0 in both
    libraries, see docs/methods.md)."""

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.a = nn.Conv2d(12, 8, 3, padding=1)
        self.b = nn.Conv2d(12, 8, 1)
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([F.relu(self.a(x)), F.silu(self.b(x))], 1)
        x = F.relu(self.bn(self.down(x)))
        x = x + self.block(x)
        return self.head(x.mean((2, 3)))


def make(name):
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(0)
    if name == "resnet18":
        model, shape = torchvision.models.resnet18(num_classes=10), (2, 3, 96, 96)
    elif name == "vgg11_bn":
        model, shape = torchvision.models.vgg11_bn(num_classes=10), (2, 3, 64, 64)
    else:
        model, shape = SmallCNN(), (2, 3, 32, 32)
    with torch.no_grad():
        randomize_batch_norms(model, g)
    model.eval()
    return model, torch.randn(*shape, generator=g)


@pytest.fixture(scope="module")
def models():
    return {name: make(name) for name in ["resnet18", "vgg11_bn", "small"]}


# ----------------------------------------------------------------------------------------------
# pytorch-grad-cam's maps.


@pytest.fixture
def sign_corrected(monkeypatch):
    """pytorch-grad-cam with its SVD projection's sign corrected (its own
    get_2d_projection_with_sign_correction), which is what the engine computes: the plain
    projection's sign is arbitrary and its ReLU can wipe a map out."""
    proj = svd_on_activations.get_2d_projection_with_sign_correction
    for mod in (base_cam, eigen_cam, eigen_grad_cam, hirescam, layer_cam, grad_cam_elementwise):
        monkeypatch.setattr(mod, "get_2d_projection", proj)


def run(lib, cls, model, layers, x, targets, batch_size=None, **kw):
    """One call of lib's class cls; batch_size is set as an attribute (pytorch-grad-cam's ScoreCAM
    reads it so, and takes no such argument)."""
    smooth = {k: kw.pop(k) for k in ("aug_smooth", "eigen_smooth") if k in kw}
    with getattr(lib, cls)(model=model, target_layers=layers, **kw) as cam:
        if batch_size is not None:
            cam.batch_size = batch_size
        return cam(input_tensor=x, targets=targets, **smooth)


def reference(cls, model, layers, x, targets, **kw):
    return run(pgc, cls, model, layers, x, targets, **kw)


def ours(cls, model, layers, x, targets, **kw):
    return run(gt, cls, model, layers, x, targets, **kw)


def check_same(cls, model, layers, x, targets_of, **kw):
    """targets_of(module) builds the targets from a model_targets module (pytorch-grad-cam's for
    the reference, gradcam.torch's for the drop-in), or returns None."""
    want = reference(cls, model, layers, x, targets_of(pgc_targets), **dict(kw))
    got = ours(cls, model, layers, x, targets_of(gt_targets), **dict(kw))
    assert got.shape == want.shape and got.dtype == np.float32
    flat = want.reshape(len(want), -1)
    # not degenerate: every reference map has structure and spans [0, 1] (a mean of six maps
    # with aug_smooth: at least part of it)
    top = 0.3 if kw.get("aug_smooth") else 0.99
    assert (flat.max(1) > top).all() and (flat.std(1) > 0.05).all(), (flat.max(1), flat.std(1))
    err = float(np.abs(got - want).max())
    assert err < TOL, f"{cls}: max |engine - pytorch-grad-cam| = {err:.2e}"
    return got


def layers_of(model, names):
    return [model.get_submodule(n) for n in names]


def none(_):
    return None


def one_class(c):
    return lambda t: [t.ClassifierOutputTarget(c)] * 2


def logit_top(model, x):
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    return lambda t: [t.ClassifierOutputTarget(c) for c in top]


def softmax_top(model, x):
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    return lambda t: [t.ClassifierOutputSoftmaxTarget(c) for c in top]


# ----------------------------------------------------------------------------------------------
# Parity.


@pytest.mark.parametrize("cls", ALL)
def test_resnet18_layer4_top1(models, cls, sign_corrected):
    model, x = models["resnet18"]
    check_same(cls, model, [model.layer4], x, none)


@pytest.mark.parametrize("cls", ["GradCAM", "GradCAMPlusPlus", "LayerCAM", "EigenGradCAM", "FEM"])
def test_resnet18_inner_block_one_class(models, cls, sign_corrected):
    model, x = models["resnet18"]
    check_same(cls, model, [model.layer3[0]], x, one_class(3))


@pytest.mark.parametrize("cls", ["GradCAM", "HiResCAM", "EigenCAM", "XGradCAM"])
def test_resnet18_several_layers(models, cls, sign_corrected):
    model, x = models["resnet18"]
    check_same(cls, model, [model.layer3, model.layer4[-1]], x, none)


@pytest.mark.parametrize("cls", ["GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM"])
def test_resnet18_softmax_targets(models, cls):
    model, x = models["resnet18"]
    check_same(cls, model, [model.layer4], x, softmax_top(model, x))


def test_resnet18_mixed_logit_and_softmax_targets(models):
    model, x = models["resnet18"]
    with torch.no_grad():
        a, b = model(x).argmax(1).tolist()

    def mixed(t):
        return [t.ClassifierOutputSoftmaxTarget(a), t.ClassifierOutputTarget(b)]

    got = check_same("GradCAM", model, [model.layer4], x, mixed)
    # the rows come back in order: each equals its own single-image call
    for i, target in enumerate(mixed(gt_targets)):
        one = ours("GradCAM", model, [model.layer4], x[i : i + 1], [target])
        assert np.abs(one[0] - got[i]).max() < 1e-6


@pytest.mark.parametrize("cls", ["GradCAM", "XGradCAM", "LayerCAM", "GradCAMPlusPlus"])
def test_resnet18_eigen_smooth(models, cls, sign_corrected):
    model, x = models["resnet18"]
    check_same(cls, model, [model.layer4], x, none, eigen_smooth=True)


@pytest.mark.parametrize("cls,targets", [("GradCAM", "none"), ("GradCAMPlusPlus", "top"), ("GradCAM", "top")])
def test_resnet18_aug_smooth(models, cls, targets):
    # targets None: each augmented input explains its own top class, in both libraries; "top":
    # the plain input's top classes, fixed for every augmentation
    model, x = models["resnet18"]
    check_same(
        cls, model, [model.layer4], x, none if targets == "none" else logit_top(model, x), aug_smooth=True
    )


def test_resnet18_fullgrad(models):
    model, x = models["resnet18"]
    check_same("FullGrad", model, [], x, none)


@pytest.mark.parametrize("cls", ["GradCAM", "GradCAMPlusPlus", "EigenCAM"])
def test_vgg11_bn(models, cls, sign_corrected):
    model, x = models["vgg11_bn"]
    check_same(cls, model, layers_of(model, ["features.27"]), x, none)


def test_vgg11_bn_several_layers_softmax_and_fullgrad(models):
    model, x = models["vgg11_bn"]
    check_same("HiResCAM", model, layers_of(model, ["features.20", "features.27"]), x, softmax_top(model, x))
    check_same("FullGrad", model, [], x, one_class(1))


@pytest.mark.parametrize("cls", ALL + ["ScoreCAM", "AblationCAM", "FullGrad"])
def test_small_cnn_every_method(models, cls, sign_corrected):
    model, x = models["small"]
    check_same(cls, model, [] if cls == "FullGrad" else [model.block], x, none)


@pytest.mark.parametrize("cls", ["ScoreCAM", "AblationCAM"])
def test_small_cnn_perturbation_methods(models, cls, sign_corrected):
    model, x = models["small"]
    layers = [model.stem, model.block]
    check_same(cls, model, layers, x, one_class(2), batch_size=5)  # 5 does not divide 12 or 16 channels
    check_same(cls, model, [model.block], x, softmax_top(model, x))
    check_same(cls, model, [model.stem], x, none, eigen_smooth=True)


# ----------------------------------------------------------------------------------------------
# The drop-in's own behaviour.


def test_random_cam_is_seeded(models):
    # pytorch-grad-cam's RandomCAM draws from numpy's global state: no map to compare with.
    model, x = models["small"]
    a = gt.RandomCAM(model, [model.block])(x)
    b = gt.RandomCAM(model, [model.block])(x)
    c = gt.RandomCAM(model, [model.block], seed=1)(x)
    assert a.shape == (2, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # a random weighting can be negative everywhere, and the ReLU then leaves a map of zeros
    assert a.min() >= 0 and a.max() <= 1 and a.reshape(2, -1).std(1).max() > 0.05


def test_reexport_after_parameter_change(models, monkeypatch):
    model, x = make("resnet18")
    count = []
    real = gradcam._export.export_bytes
    monkeypatch.setattr(gradcam._export, "export_bytes", lambda *a, **k: count.append(1) or real(*a, **k))
    layers = [model.layer4]
    cam = gt.GradCAM(model, layers)
    before = cam(x)
    cam(x)
    gt.HiResCAM(model, layers)(x)  # another CAM object of the same model: the same export
    assert len(count) == 1

    # in place through .data: no version counter moves, the contents' checksum does
    with torch.no_grad():
        model.layer4[1].conv2.weight.data.mul_(2)
        model.layer3[0].bn1.running_var.data.mul_(3)
    after = cam(x)
    assert len(count) == 2
    assert np.abs(after - before).max() > 0.05
    assert np.abs(after - reference("GradCAM", model, layers, x, None)).max() < TOL

    # load_state_dict (copy_ into the same tensors)
    other, _ = make("resnet18")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1)
    model.load_state_dict(other.state_dict())
    got = cam(x)
    assert len(count) == 3
    assert np.abs(got - reference("GradCAM", model, layers, x, None)).max() < TOL

    # a module's hyperparameter (no tensor changes), on the small CNN
    model, x = make("small")
    cam = gt.GradCAM(model, [model.block])
    cam(x)
    assert len(count) == 4
    model.down.stride = (1, 1)
    got = cam(x)
    assert len(count) == 5
    assert np.abs(got - reference("GradCAM", model, [model.block], x, None)).max() < TOL

    # another input shape: exported for it
    x2 = torch.randn(1, 3, 24, 40)
    assert cam(x2).shape == (1, 24, 40)
    assert len(count) == 6


def test_cache_holds_the_model_weakly():
    import gc
    import weakref

    model, x = make("small")
    cam = gt.GradCAM(model, [model.block])
    cam(x)
    assert model in gt._CACHE
    ref = weakref.ref(model)
    del model, cam
    gc.collect()
    assert ref() is None  # neither the cache nor its engines kept it alive


def test_targets_of_both_libraries_and_numpy_categories(models):
    model, x = models["small"]
    cam = gt.GradCAM(model, [model.block])
    a = cam(
        x,
        [pgc_targets.ClassifierOutputTarget(np.int64(1)), gt_targets.ClassifierOutputTarget(torch.tensor(3))],
    )
    b = cam(x, [gt_targets.ClassifierOutputTarget(1), pgc_targets.ClassifierOutputTarget(3)])
    assert np.array_equal(a, b)
    # gradcam.torch's targets work with pytorch-grad-cam too: they are the same callables
    ref = reference("GradCAM", model, [model.block], x, [gt_targets.ClassifierOutputTarget(1)] * 2)
    assert np.abs(cam(x, [pgc_targets.ClassifierOutputTarget(1)] * 2) - ref).max() < TOL


def test_unsupported_target_lists_supported_ones(models):
    model, x = models["small"]
    cam = gt.GradCAM(model, [model.block])
    for bad in [pgc_targets.ClassifierOutputReST(1), lambda out: out[:, 0], 3]:
        with pytest.raises(ValueError) as e:
            cam(x, [gt_targets.ClassifierOutputTarget(0), bad])
        msg = str(e.value)
        assert (
            "targets[1]" in msg and "ClassifierOutputTarget" in msg and "ClassifierOutputSoftmaxTarget" in msg
        ), msg
    with pytest.raises(ValueError, match="1 entries for a batch of 2"):
        cam(x, [gt_targets.ClassifierOutputTarget(0)])
    with pytest.raises(ValueError, match="negative"):
        cam(x, [gt_targets.ClassifierOutputTarget(-1)] * 2)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            y = -y
        return self.fc(y.mean((2, 3)))


class Upsampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.up(self.conv(x)).mean((2, 3)))


def test_untraceable_model_raises_the_exporters_message():
    x = torch.randn(1, 3, 16, 16)
    m = Branchy()
    with pytest.raises(gt.ExportError) as e:
        gt.GradCAM(m, [m.conv])(x)
    assert str(e.value).startswith("torch.fx cannot trace the model"), str(e.value)
    assert "data-dependent control flow" in str(e.value)
    assert isinstance(e.value, gradcam.ModelError) and isinstance(e.value, gradcam.Error)
    m = Upsampler()
    with pytest.raises(gt.ExportError, match=r"'up' at module path 'up'.*Upsample.*Supported: modules:"):
        gt.GradCAM(m, [m.conv])(x)


def test_target_layer_not_in_the_model(models):
    model, _ = models["small"]
    stray = nn.Conv2d(3, 3, 1)
    with pytest.raises(
        ValueError, match=r"target_layers\[1\] \(Conv2d: Conv2d\(3, 3.*is not a module of the model"
    ):
        gt.GradCAM(model, [model.block, stray])
    with pytest.raises(ValueError, match="the model itself"):
        gt.GradCAM(model, [model])
    with pytest.raises(ValueError, match="target_layers is empty"):
        gt.GradCAM(model, [])
    # a module path is accepted too; a wrong one is named
    assert gt.GradCAM(model, ["block"])._layers == ["block"]
    with pytest.raises(ValueError, match="no module 'blok'"):
        gt.GradCAM(model, ["blok"])


def test_with_block_outputs_batch_size_and_device(models):
    model, x = models["small"]
    with gt.GradCAM(model=model, target_layers=[model.block]) as cam:
        assert cam.outputs is None
        maps = cam(input_tensor=x, targets=None)
        assert isinstance(cam.outputs, torch.Tensor) and cam.outputs.device == x.device
        with torch.no_grad():
            want = model(x)
        assert cam.outputs.shape == want.shape and (cam.outputs - want).abs().max() < 1e-4
        assert np.array_equal(maps, cam.forward(x, None))
    assert gt.ScoreCAM(model, [model.block]).batch_size == 16  # pytorch-grad-cam's defaults
    abl = gt.AblationCAM(model, [model.block])
    assert abl.batch_size == 32
    first = abl(x)
    abl.batch_size = 3
    assert np.abs(abl(x) - first).max() < 1e-6  # the result does not depend on it
    assert gt.AblationCAM(model, [model.block], batch_size=8).batch_size == 8


def test_model_put_back_in_training_mode_raises(models):
    model, x = make("small")
    cam = gt.GradCAM(model, [model.block])
    assert not model.training  # the constructor sets eval mode, as pytorch-grad-cam's
    model.train()
    with pytest.raises(gradcam.ModelError, match=r"training mode.*model.eval\(\)"):
        cam(x)
    model.eval()
    assert cam(x).shape == (2, 32, 32)


def test_warns_when_a_target_layers_output_is_modified_in_place(models):
    model, x = models["resnet18"]
    with pytest.warns(UserWarning, match=r"layer4\.1\.bn2: a later op modifies the output in place"):
        gt.GradCAM(model, [model.layer4[1].bn2])(x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gt.LayerCAM(model, [model.layer4[1], model.layer3])(x)


def test_failed_image_raises_input_error(models):
    model, x = models["small"]
    x = x.clone()
    x[1, 0, 3, 4] = float("nan")
    with pytest.raises(gradcam.InputError, match="image 1"):
        gt.GradCAM(model, [model.block])(x)


def test_unsupported_options_raise(models):
    model, _ = models["small"]
    with pytest.raises(gradcam.OptionError, match="reshape_transform"):
        gt.GradCAM(model, [model.block], reshape_transform=lambda t: t)
    with pytest.raises(gradcam.OptionError, match="k=3"):
        gt.FEM(model, [model.block], k=3)
    with pytest.raises(gradcam.OptionError, match="ratio_channels_to_ablate"):
        gt.AblationCAM(model, [model.block], ratio_channels_to_ablate=0.5)
    with pytest.raises(gradcam.OptionError, match="ablation_layer"):
        gt.AblationCAM(model, [model.block], ablation_layer=pgc.AblationLayerVit())
    gt.AblationCAM(model, [model.block], ablation_layer=pgc.AblationLayer())  # the default: fine
    with pytest.raises(AttributeError, match="KPCA_CAM"):
        gt.KPCA_CAM  # noqa: B018
    with pytest.warns(UserWarning, match="target_layers is ignored"):
        gt.FullGrad(model, [model.block])


def test_readme_example():
    """pytorch-grad-cam's README usage, only the imports changed (resnet50 without downloaded
    weights, a small input, and a random RGB image), with the drop-in's default backend."""
    from torchvision.models import resnet50

    from gradcam.torch import GradCAM
    from gradcam.torch.utils.image import show_cam_on_image
    from gradcam.torch.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = resnet50()
    target_layers = [model.layer4[-1]]
    rgb_img = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    input_tensor = torch.from_numpy(rgb_img.transpose(2, 0, 1)[None].copy())

    gt.default_backend = "auto"
    targets = [ClassifierOutputTarget(281)]
    with GradCAM(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)
        grayscale_cam = grayscale_cam[0, :]
        visualization = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
        model_outputs = cam.outputs

    want = reference("GradCAM", model, target_layers, input_tensor, [pgc_targets.ClassifierOutputTarget(281)])
    assert np.abs(grayscale_cam - want[0]).max() < TOL
    assert visualization.shape == (64, 64, 3) and visualization.dtype == np.uint8
    assert model_outputs.shape == (1, 1000)


def test_export_bytes_is_the_files_bytes(tmp_path):
    from gradcam._export import export_bytes, export_model

    model, _ = make("small")
    export_model(model, tmp_path / "m.safetensors", (3, 20, 24))
    assert export_bytes(model, (3, 20, 24)) == (tmp_path / "m.safetensors").read_bytes()


def test_importable_without_pytorch_grad_cam():
    """gradcam.torch and its utils need neither pytorch-grad-cam nor OpenCV."""
    import subprocess

    code = (
        "import sys\n"
        "for m in ('pytorch_grad_cam', 'cv2', 'scipy', 'matplotlib'): sys.modules[m] = None\n"
        "import numpy as np, torch\n"
        "import gradcam.torch as gt\n"
        "from gradcam.torch.utils.model_targets import ClassifierOutputSoftmaxTarget\n"
        "from gradcam.torch.utils.image import show_cam_on_image, scale_cam_image, preprocess_image\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),\n"
        "                        torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()\n"
        "x = torch.randn(1, 3, 12, 12)\n"
        "cam = gt.GradCAM(m, [m[1]], backend='cpu')(x, [ClassifierOutputSoftmaxTarget(1)])\n"
        "img = show_cam_on_image(np.zeros((12, 12, 3), np.float32), cam[0], use_rgb=True)\n"
        "assert img.shape == (12, 12, 3) and scale_cam_image(cam, (6, 6)).shape == (1, 6, 6)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


# ----------------------------------------------------------------------------------------------
# gradcam.torch.utils.image against pytorch_grad_cam.utils.image.


def test_image_utils_match_pytorch_grad_cam():
    cv2 = pytest.importorskip("cv2")
    from pytorch_grad_cam.utils import image as P

    from gradcam.torch.utils import image as G

    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    assert np.array_equal(G._JET_BGR, lut)

    rng = np.random.default_rng(0)
    img = rng.random((20, 30, 3), dtype=np.float32)
    mask = rng.random((20, 30), dtype=np.float32)
    for use_rgb in (False, True):
        for w in (0.0, 0.3, 0.5, 1.0):
            assert np.array_equal(G.show_cam_on_image(img, mask, use_rgb, image_weight=w),
                                  P.show_cam_on_image(img, mask, use_rgb, image_weight=w))  # fmt: skip
    assert np.array_equal(
        G.show_cam_on_image(img, mask, True, colormap=cv2.COLORMAP_VIRIDIS),
        P.show_cam_on_image(img, mask, True, colormap=cv2.COLORMAP_VIRIDIS),
    )
    with pytest.raises(ValueError, match="range"):
        G.show_cam_on_image(img * 2, mask)
    with pytest.raises(ValueError, match="image_weight"):
        G.show_cam_on_image(img, mask, image_weight=1.5)

    for shape, size in [
        ((2, 7, 5), (32, 24)),
        ((2, 64, 48), (23, 31)),
        ((1, 10, 10), (10, 10)),
        ((3, 13, 17), (40, 9)),
    ]:
        cam = rng.random(shape, dtype=np.float32)
        a, b = G.scale_cam_image(cam, size), P.scale_cam_image(cam, size)
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.abs(a - b).max() < 1e-5
    cam = rng.random((2, 5, 5))
    assert np.array_equal(G.scale_cam_image(cam), P.scale_cam_image(cam))

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    for im in [
        rng.integers(0, 256, (9, 7, 3), dtype=np.uint8),
        rng.random((9, 7, 3), dtype=np.float32),
        rng.random((9, 7, 3)),
    ]:
        a, b = G.preprocess_image(im, mean, std), P.preprocess_image(im, mean, std)
        assert a.dtype == b.dtype and a.shape == b.shape == (1, 3, 9, 7) and torch.equal(a, b)
    assert torch.equal(G.preprocess_image(im), P.preprocess_image(im))


def test_a_model_with_pytorch_grad_cams_hooks_still_exports(models):
    """A notebook that compares the two libraries keeps pytorch-grad-cam's GradCAM alive: its
    activation hooks (which branch on output.requires_grad) stay on the model. The export sets
    them aside while it traces, and they work again afterwards."""
    model, x = make("small")  # a fresh model: the export cache must not already hold it
    layers = [model.block]
    theirs = pgc.GradCAM(model=model, target_layers=layers)
    hooks = list(model.block._forward_hooks.items())
    assert hooks
    want = theirs(input_tensor=x, targets=None)
    got = gt.GradCAM(model=model, target_layers=layers)(input_tensor=x, targets=None)
    assert float(np.abs(got - want).max()) < TOL
    assert list(model.block._forward_hooks.items()) == hooks
    assert np.array_equal(theirs(input_tensor=x, targets=None), want)
    theirs.activations_and_grads.release()
