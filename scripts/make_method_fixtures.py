"""Writes tests/fixtures/methods/: what pytorch-grad-cam (PyPI `grad-cam` 1.5.x), Captum and
kazuto1011/grad-cam-pytorch's definitions give for every attribution method `explain --method`
has, on the parity models of scripts/make_fixtures.py (their committed weights and inputs).

    pip install torch torchvision grad-cam safetensors ttach captum
    python scripts/make_method_fixtures.py

tests/methods.rs compares the engine against these files. Targets are explicit classes (each
image's top-1 class unless a case says otherwise), so that every library explains the same
score. EigenCAM-like maps are stored twice: as pytorch-grad-cam computes them (the SVD's sign
is arbitrary) and with the projection's sign corrected (|min| > |max| flips it, pytorch-grad-cam's
own `get_2d_projection_with_sign_correction`), which is what the engine computes.
"""

import json
import pathlib
import sys

import torch
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import BasicBlock
from torchvision.models.vgg import cfgs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import pytorch_grad_cam as pgc  # noqa: E402
import pytorch_grad_cam.base_cam as base_cam  # noqa: E402
import pytorch_grad_cam.utils.svd_on_activations as svd  # noqa: E402
from models import NarrowResNet, SeedCNN, narrow_vgg, prepare  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"

# name, model factory, two layers (the second a ReLU or block output, so AblationCAM's
# ablated value is 0 there: see perturb.rs on pytorch-grad-cam's batch artefact).
MODELS = [
    ("seed_cnn", lambda: SeedCNN(10), ["relu3", "relu2"]),
    ("resnet_basic_narrow", lambda: NarrowResNet(BasicBlock, [2, 1, 1, 2]), ["layer4", "layer3"]),
    ("vgg11_bn_narrow", lambda: narrow_vgg(cfgs["A"], batch_norm=True), ["features.27", "features.20"]),
]

CAMS = {
    "gradcam": pgc.GradCAM,
    "hirescam": pgc.HiResCAM,
    "gradcam-elementwise": pgc.GradCAMElementWise,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "eigengradcam": pgc.EigenGradCAM,
    "eigencam": pgc.EigenCAM,
    "scorecam": pgc.ScoreCAM,
    "ablationcam": pgc.AblationCAM,
    "fem": pgc.FEM,
}
EIGEN = {"eigencam", "eigengradcam"}


def load(name, make):
    model = prepare(make(), 0)
    sd = {
        k: v.float() if v.is_floating_point() else v
        for k, v in load_file(str(ROOT / name / "model.safetensors")).items()
    }
    model.load_state_dict(sd)
    model.eval()
    x = load_file(str(ROOT / name / "expected.safetensors"))["input"].float()
    return model, x


def pgc_cam(model, x, method, layers, targets, sign_fixed=False, **kw):
    """One pytorch-grad-cam call; with `sign_fixed`, its SVD projection sign-corrected."""
    proj = svd.get_2d_projection_with_sign_correction if sign_fixed else svd.get_2d_projection
    saved = (
        base_cam.get_2d_projection,
        pgc.eigen_cam.get_2d_projection,
        pgc.eigen_grad_cam.get_2d_projection,
    )
    base_cam.get_2d_projection = pgc.eigen_cam.get_2d_projection = pgc.eigen_grad_cam.get_2d_projection = proj
    try:
        mods = [model.get_submodule(layer) for layer in layers]
        smooth = {k: kw.pop(k) for k in ("aug_smooth", "eigen_smooth") if k in kw}
        with CAMS[method](model=model, target_layers=mods, **kw) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=targets, **smooth)).float()
    finally:
        (
            base_cam.get_2d_projection,
            pgc.eigen_cam.get_2d_projection,
            pgc.eigen_grad_cam.get_2d_projection,
        ) = saved


def _basic_forward_module_order(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


def fullgrad(model, x, targets):
    """pytorch-grad-cam's FullGrad pairs the biases (module order) with the gradients (the order
    the layers ran): the out-of-place BasicBlock of models.py runs its downsample branch first,
    so for the reference the block runs its modules in definition order, as torchvision's."""
    saved = BasicBlock.forward
    BasicBlock.forward = _basic_forward_module_order
    try:
        with pgc.FullGrad(model=model, target_layers=[]) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=targets)).float()
    finally:
        BasicBlock.forward = saved


class DeconvReLU(torch.autograd.Function):
    """kazuto1011's deconvnet ReLU: forward as ReLU, backward ReLU(grad_out)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


class GuidedReLU(torch.autograd.Function):
    """kazuto1011's guided backpropagation ReLU: ReLU(grad_out) where the input was > 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0).float()


def with_relu(model, fn):
    """The model with every nn.ReLU's forward replaced by `fn` (F.relu calls are unchanged:
    the parity models use modules only)."""
    saved = []
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            saved.append((m, m.forward))
            m.forward = fn.apply
    return saved


def input_grad(model, x, classes, fn=None):
    saved = with_relu(model, fn) if fn else []
    try:
        x = x.clone().requires_grad_(True)
        out = model(x)
        out.gather(1, torch.tensor(classes)[:, None]).sum().backward()
        return x.grad.detach().clone()
    finally:
        for m, f in saved:
            m.forward = f


def occlusion(model, x, classes, patch, stride, fill=0.0):
    """kazuto1011's occlusion sensitivity as the engine defines it: a patch centred on every
    stride-th pixel of the unpadded image, clipped at the border, filled with `fill`; the map
    is occluded minus plain logit, on the grid [ceil(H/stride), ceil(W/stride)]."""
    n, _, h, w = x.shape
    gh, gw = -(-h // stride), -(-w // stride)
    half = patch // 2
    with torch.no_grad():
        base = model(x).gather(1, torch.tensor(classes)[:, None])[:, 0]
        out = torch.zeros(n, gh, gw)
        for gy in range(gh):
            for gx in range(gw):
                cy, cx = gy * stride, gx * stride
                xo = x.clone()
                xo[:, :, max(cy - half, 0) : cy - half + patch, max(cx - half, 0) : cx - half + patch] = fill
                out[:, gy, gx] = model(xo).gather(1, torch.tensor(classes)[:, None])[:, 0] - base
    return out


def main():
    from captum.attr import IntegratedGradients

    out_root = ROOT / "methods"
    for name, make, layers in MODELS:
        torch.manual_seed(0)
        model, x = load(name, make)
        with torch.no_grad():
            logits = model(x)
        classes = logits.argmax(1).tolist()
        second = logits.argsort(1, descending=True)[:, 1].tolist()
        logit_t = [ClassifierOutputTarget(c) for c in classes]
        expected = {"input": x.contiguous(), "logits": logits.contiguous()}
        cases = []

        def add(key, tensor, *, expected=expected, cases=cases, **case):
            expected[key] = tensor.float().contiguous()
            cases.append({"key": key, **case})

        for layer in layers:
            for method in CAMS:
                key = f"{method}.{layer}"
                add(
                    key,
                    pgc_cam(model, x, method, [layer], logit_t, sign_fixed=True),
                    method=method,
                    layers=[layer],
                    classes=classes,
                )
                if method in EIGEN:
                    add(
                        key + ".pgc",
                        pgc_cam(model, x, method, [layer], logit_t),
                        method=method,
                        layers=[layer],
                        classes=classes,
                        pgc_sign=True,
                    )
        first = layers[0]
        for method in ["gradcam", "gradcam++", "scorecam"]:
            add(
                f"{method}.softmax",
                pgc_cam(model, x, method, [first], [ClassifierOutputSoftmaxTarget(c) for c in classes]),
                method=method,
                layers=[first],
                classes=classes,
                target="softmax",
            )
        for method in ["gradcam", "layercam"]:
            add(
                f"{method}.second",
                pgc_cam(model, x, method, [first], [ClassifierOutputTarget(c) for c in second]),
                method=method,
                layers=[first],
                classes=second,
            )
        for method in ["gradcam", "hirescam", "gradcam++", "eigencam"]:
            add(
                f"{method}.layers",
                pgc_cam(model, x, method, layers, logit_t, sign_fixed=True),
                method=method,
                layers=layers,
                classes=classes,
            )
        for method in ["gradcam", "xgradcam", "scorecam"]:
            add(
                f"{method}.eigen_smooth",
                pgc_cam(model, x, method, [first], logit_t, sign_fixed=True, eigen_smooth=True),
                method=method,
                layers=[first],
                classes=classes,
                eigen_smooth=True,
            )
        for method in ["gradcam", "gradcam++"]:
            # Fixed targets: the engine keeps the plain input's classes for every augmentation.
            add(
                f"{method}.aug_smooth",
                pgc_cam(model, x, method, [first], logit_t, aug_smooth=True),
                method=method,
                layers=[first],
                classes=classes,
                aug_smooth=True,
            )
        add("fullgrad", fullgrad(model, x, logit_t), method="fullgrad", layers=[], classes=classes)
        add("saliency", input_grad(model, x, classes), method="saliency", layers=[], classes=classes)
        add(
            "guided-backprop",
            input_grad(model, x, classes, GuidedReLU),
            method="guided-backprop",
            layers=[],
            classes=classes,
        )
        add(
            "deconvnet",
            input_grad(model, x, classes, DeconvReLU),
            method="deconvnet",
            layers=[],
            classes=classes,
        )
        ig = IntegratedGradients(model)
        for steps in [8, 50]:
            add(
                f"integrated-gradients.{steps}",
                ig.attribute(
                    x, target=classes, n_steps=steps, method="gausslegendre", internal_batch_size=16
                ).detach(),
                method="integrated-gradients",
                layers=[],
                classes=classes,
                steps=steps,
            )
        add(
            "occlusion",
            occlusion(model, x, classes, patch=7, stride=5),
            method="occlusion",
            layers=[],
            classes=classes,
            patch=7,
            stride=5,
        )
        out = out_root / name
        out.mkdir(parents=True, exist_ok=True)
        save_file(expected, str(out / "expected.safetensors"))
        (out / "manifest.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")
        print(f"{name}: {len(cases)} cases")


if __name__ == "__main__":
    main()
