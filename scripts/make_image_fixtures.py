"""Writes the image fixtures under tests/fixtures/images/ and the sample images under examples/:
small test images (PNG RGB at odd sizes, JPEG, grayscale, alpha, a directory tree with a name
collision, corrupt files), and what PIL, torchvision, pytorch-grad-cam and PyTorch make of them.

    pip install torch torchvision grad-cam safetensors pillow
    python scripts/make_image_fixtures.py

tests/images.rs compares the tool against these files:
  expected/preprocess.safetensors  torchvision Resize + CenterCrop + ToTensor + Normalize outputs
  expected/golden/                 seed-cnn Grad-CAM heatmaps and show_cam_on_image overlays
  expected/guided.safetensors      guided backpropagation gradients (kazuto1011's guided ReLU hooks)
"""

import json
import pathlib

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from models import NarrowResNet, SeedCNN, prepare
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision import transforms as T
from torchvision.models.resnet import BasicBlock

REPO = pathlib.Path(__file__).resolve().parent.parent
ROOT = REPO / "tests" / "fixtures" / "images"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def scene(h, w, seed):
    """A smooth picture (gradients, a disc, a bar) that compresses to a few KB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c = rng.uniform(0, 1, (3, 3))
    img = np.stack([c[i, 0] * 255 * x / w + c[i, 1] * 255 * y / h + c[i, 2] * 40 for i in range(3)], -1)
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * min(h, w)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    y0 = int(rng.uniform(0.1, 0.8) * h)
    img[y0 : y0 + max(1, h // 10), w // 5 :] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_inputs():
    inputs = ROOT / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(37, 45, 1)).save(inputs / "rgb_odd.png")
    Image.fromarray(scene(30, 40, 2)).save(inputs / "photo.jpg", quality=90)
    Image.fromarray(scene(29, 33, 3)).convert("L").save(inputs / "gray.png")
    rgba = np.dstack([scene(36, 36, 4), np.linspace(0, 255, 36 * 36).reshape(36, 36).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(inputs / "alpha.png")
    Image.fromarray(scene(64, 23, 5)).save(inputs / "tall.bmp")

    tree = ROOT / "tree"
    for d in ["a", "b/c"]:
        (tree / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(20, 24, 6)).save(tree / "a" / "cat.png")
    Image.fromarray(scene(20, 24, 7)).save(tree / "b" / "c" / "cat.png")
    Image.fromarray(scene(20, 24, 8)).save(tree / "a" / "cat.jpg", quality=90)
    (tree / "notes.txt").write_text("not an image\n")

    bad = ROOT / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    png = (ROOT / "tree" / "a" / "cat.png").read_bytes()
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad / "garbage.jpg").write_bytes(b"this is not a JPEG file\n" * 4)
    (bad / "empty.png").write_bytes(b"")
    (ROOT / "empty_dir").mkdir(exist_ok=True)
    (ROOT / "empty_dir" / ".keep").write_text("")


# name, image, torchvision transform pieces (resize arg, crop or None), mean/std[, filter]
PREPROCESS = [
    ("down_crop", "rgb_odd.png", 24, 20, IMAGENET),
    ("exact_hw", "rgb_odd.png", (13, 29), None, IMAGENET),
    ("strong_down", "rgb_odd.png", 8, None, IMAGENET),
    ("up_crop_gray", "gray.png", 40, 32, IMAGENET),
    ("alpha", "alpha.png", 17, 16, ([0.5] * 3, [0.5] * 3)),
    ("tall_odd_crop", "tall.bmp", 21, 15, IMAGENET),
    ("pad_crop", "rgb_odd.png", 10, 12, IMAGENET),
    ("jpeg", "photo.jpg", 24, 24, IMAGENET),
    # Pillow's bicubic (EfficientNet's weights): its negative lobes overshoot, so the 8-bit
    # clipping of each pass is exercised too.
    ("bicubic_down_crop", "rgb_odd.png", 24, 20, IMAGENET, "bicubic"),
    ("bicubic_strong_down", "rgb_odd.png", 8, None, IMAGENET, "bicubic"),
    ("bicubic_up_crop", "gray.png", 40, 32, IMAGENET, "bicubic"),
    ("bicubic_exact_hw", "rgb_odd.png", (13, 29), None, IMAGENET, "bicubic"),
    ("bicubic_jpeg", "photo.jpg", 24, 24, IMAGENET, "bicubic"),
]
FILTERS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def make_preprocess():
    tensors, manifest = {}, []
    for name, file, resize, crop, (mean, std), *filt in PREPROCESS:
        filt = filt[0] if filt else "bilinear"
        img = Image.open(ROOT / "inputs" / file).convert("RGB")
        steps = [T.Resize(resize, interpolation=FILTERS[filt])]
        if crop is not None:
            steps.append(T.CenterCrop(crop))
        steps += [T.ToTensor(), T.Normalize(mean, std)]
        tensors[name] = T.Compose(steps)(img).contiguous()
        manifest.append(
            {
                "name": name,
                "file": file,
                "resize": list(resize) if isinstance(resize, tuple) else resize,
                "crop": crop,
                "mean": mean,
                "std": std,
                "filter": filt,
            }
        )
    save_file(tensors, str(ROOT / "expected" / "preprocess.safetensors"))
    (ROOT / "expected" / "preprocess.json").write_text(json.dumps(manifest, indent=1) + "\n")


def seed_model():
    model = SeedCNN(10)
    model.load_state_dict(load_file(str(REPO / "tests" / "fixtures" / "seed_cnn" / "model.safetensors")))
    return model.eval()


def seed_input(path):
    """The seed-cnn defaults: Resize((32, 32)), Normalize(0.5, 0.5)."""
    img = T.Resize((32, 32))(Image.open(path).convert("RGB"))
    x = T.Normalize([0.5] * 3, [0.5] * 3)(T.ToTensor()(img))
    return img, x


def make_golden():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = seed_model()
    out = ROOT / "expected" / "golden"
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for path in sorted((ROOT / "inputs").iterdir()):
        img, x = seed_input(path)
        with torch.no_grad():
            logits = model(x[None])[0]
        cls = int(logits.argmax())
        with GradCAM(model=model, target_layers=[model.conv3]) as cam:
            g = cam(input_tensor=x[None], targets=[ClassifierOutputTarget(cls)])[0]
        rgb = np.float32(np.asarray(img)) / 255
        heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * g), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        Image.fromarray(heat).save(out / f"{path.stem}.cam.png")
        Image.fromarray(show_cam_on_image(rgb, g, use_rgb=True)).save(out / f"{path.stem}.overlay.png")
        prob = float(torch.softmax(logits, 0)[cls])
        manifest.append({"file": path.name, "class": cls, "probability": prob})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def guided_backprop(model, x, classes):
    """kazuto1011/grad-cam-pytorch's BackPropagation with guided ReLU hooks."""

    def hook(module, grad_in, grad_out):
        return (F.relu(grad_in[0]),)

    handles = [m.register_full_backward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    x = x.clone().requires_grad_(True)
    logits = model(x)
    one_hot = torch.zeros_like(logits)
    one_hot[torch.arange(len(x)), classes] = 1.0
    logits.backward(gradient=one_hot)
    for h in handles:
        h.remove()
    return x.grad.detach()


def make_guided():
    model = seed_model()
    xs = torch.stack([seed_input(ROOT / "inputs" / f)[1] for f in ["rgb_odd.png", "photo.jpg"]])
    with torch.no_grad():
        classes = model(xs).argmax(1)
    tensors = {
        "seed_cnn.input": xs,
        "seed_cnn.grad": guided_backprop(model, xs, classes),
        "seed_cnn.classes": classes.to(torch.int64),
    }
    # A residual network: guided ReLUs on both branches, BatchNorm, the shared ReLU module.
    res = prepare(NarrowResNet(BasicBlock, [2, 1, 1, 2]), 0)
    sd = load_file(str(REPO / "tests" / "fixtures" / "resnet_basic_narrow" / "model.safetensors"))
    res.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    res.eval()
    torch.manual_seed(7)
    xr = torch.randn(2, 3, 32, 24)
    cls_r = torch.tensor([3, 8])
    tensors.update(
        {"resnet.input": xr, "resnet.grad": guided_backprop(res, xr, cls_r), "resnet.classes": cls_r}
    )
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(ROOT / "expected" / "guided.safetensors"))


def make_examples():
    ex = REPO / "examples"
    ex.mkdir(exist_ok=True)
    for i, name in enumerate(["shapes1.png", "shapes2.png", "shapes3.jpg"]):
        Image.fromarray(scene(96, 128, 20 + i)).save(
            ex / name, **({"quality": 90} if name.endswith("jpg") else {})
        )


def main():
    (ROOT / "expected").mkdir(parents=True, exist_ok=True)
    make_inputs()
    make_preprocess()
    make_golden()
    make_guided()
    make_examples()
    size = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"tests/fixtures/images: {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
