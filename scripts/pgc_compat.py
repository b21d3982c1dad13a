"""Import pytorch-grad-cam on a machine that lacks some of its optional dependencies (the GPU
machines have PyTorch but maybe not OpenCV, matplotlib, SciPy, scikit-learn or tqdm, and no
network). Its package __init__ imports every method; GradCAM itself needs only cv2.resize,
which is replaced here by PyTorch's bilinear interpolation with half-pixel centers (the same
definition as OpenCV's INTER_LINEAR when upsampling). Every stand-in is reported."""

import importlib
import importlib.machinery
import sys
import types


class _Stub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


class _Anything:
    def __call__(self, *a, **k):
        return _Anything()

    def __getattr__(self, name):
        return _Anything()

    def __mro_entries__(self, bases):
        return (object,)


def _cv2_resize(img, size, *a, **k):
    import torch
    import torch.nn.functional as F

    w, h = size
    t = torch.from_numpy(img.astype("float32"))[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()


def import_gradcam():
    """Returns (GradCAM, list of stand-ins used)."""
    used = []
    for name in [
        "cv2",
        "tqdm",
        "matplotlib",
        "matplotlib.pyplot",
        "matplotlib.lines",
        "scipy",
        "scipy.ndimage",
        "scipy.sparse",
        "scipy.sparse.linalg",
        "sklearn",
        "sklearn.decomposition",
    ]:
        try:
            importlib.import_module(name)
        except ImportError:
            mod = _Stub(name)
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
            if name == "cv2":
                mod.resize = _cv2_resize
            sys.modules[name] = mod
            used.append(name)
    from pytorch_grad_cam import GradCAM

    return GradCAM, used
