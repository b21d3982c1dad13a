"""Grad-CAM and its relatives for CNN image classifiers, computed by a Rust engine (CPU, or a GPU
through wgpu or CUDA) without libtorch.

    import gradcam
    ex = gradcam.Explainer("resnet50.safetensors")             # Grad-CAM of the default layer
    res = ex.explain_images(["cat.jpg", "dog.png"])            # the model's own preprocessing
    res.cams["gradcam"]                                        # (2, 224, 224) float32 in [0, 1]

`gradcam.torch` is a drop-in for pytorch-grad-cam (needs torch); `gradcam.ray` explains datasets
on a Ray cluster. Only numpy is needed here.

Failed images: an image whose input, logits or maps are not finite, or a file that cannot be
decoded, is not a result. Its entry of `Explanation.failures` says why, `Explanation.ok` is False
for it, its rows of the maps, logits and probabilities are NaN and its class is -1; the rest of
the batch is explained as usual. `Explanation.raise_for_failures()` turns any failure into an
InputError. Everything that concerns the whole call (a shape the network does not take, a class
out of range, an unknown option) raises.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import numpy as np

# Mesa's Vulkan device-select layer connects to the display server to rank GPUs and, on a
# headless machine, prints "XDG_RUNTIME_DIR is invalid" each time a wgpu instance starts. The
# engine ranks adapters itself; the gradcam binary turns the layer off the same way. Set before
# the native module can create an instance; a value the user set is kept.
os.environ.setdefault("NODEVICE_SELECT", "1")

from . import _native  # noqa: E402
from ._errors import BackendError, Error, InputError, ModelError, OptionError

__all__ = [
    "Explainer",
    "Explanation",
    "inspect",
    "overlay",
    "heatmap",
    "METHODS",
    "Error",
    "InputError",
    "ModelError",
    "OptionError",
    "BackendError",
]
__version__ = _native.__version__

#: Every method name: the CAM methods give (N, H, W) maps in [0, 1]; the gradient methods
#: (saliency, guided-backprop, deconvnet, guided-gradcam, integrated-gradients) (N, 3, H, W)
#: signed maps; occlusion (N, h, w) score differences on its grid.
METHODS: dict[str, str] = {name: kind for name, kind, _ in _native.methods()}

Weights = Union[str, "os.PathLike[str]", bytes]


class Explanation:
    """What `Explainer.explain` returns for a batch of N images.

    - `cams`: method name -> (N, H, W) float32 CAM in [0, 1] (every CAM method asked for; several
      layers are aggregated as pytorch-grad-cam aggregates `target_layers`; with per_layer=True
      the keys are (method, layer), one map per method and layer);
    - `maps`: method name -> map, for every method (the CAMs, and the gradient maps, occlusion);
    - `logits` (N, classes) float32, `classes` (N,) int64 (the class each map explains),
      `probabilities` (N,) float32 (its softmax probability);
    - `failures`: per image, None or why it has no result; `ok`: (N,) bool, failures is None;
    - `images` (explain_images only): per image the network's view, (H, W, 3) uint8 RGB (what
      an overlay is drawn on), or None for a file that could not be read.
    """

    __slots__ = ("maps", "cams", "logits", "classes", "probabilities", "failures", "ok", "images")

    def __init__(self, raw: dict):
        self.maps: dict[str, np.ndarray] = {name: a for name, _, a in raw["maps"]}
        self.cams: dict[str, np.ndarray] = {name: a for name, kind, a in raw["maps"] if kind == "cam"}
        self.logits: np.ndarray = raw["logits"]
        self.probabilities: np.ndarray = raw["probabilities"]
        self.failures: list[str | None] = raw["failures"]
        self.ok: np.ndarray = np.array([f is None for f in self.failures], dtype=bool)
        classes = raw["classes"]
        classes[~self.ok] = -1
        self.classes: np.ndarray = classes
        self.images: list[np.ndarray | None] | None = None
        if "rgb" in raw:
            n = len(self.failures)
            h, w = next(iter(self.maps.values())).shape[-2:] if self.maps else (0, 0)
            self.images = [
                np.frombuffer(b, dtype=np.uint8).reshape(h, w, 3) if len(b) else None for b in raw["rgb"]
            ]
            assert len(self.images) == n

    @property
    def cam(self) -> np.ndarray:
        """The CAM when the explainer computes exactly one CAM method."""
        if len(self.cams) != 1:
            raise OptionError(f"`cam` needs exactly one CAM method; this explanation has {list(self.cams)}")
        return next(iter(self.cams.values()))

    def raise_for_failures(self) -> Explanation:
        """Raises InputError naming every failed image; returns self when none failed."""
        bad = [(i, f) for i, f in enumerate(self.failures) if f is not None]
        if bad:
            raise InputError("; ".join(f"image {i}: {f}" for i, f in bad))
        return self

    def __len__(self) -> int:
        return len(self.failures)

    def __repr__(self) -> str:
        return f"Explanation({len(self)} images, maps={list(self.maps)}, failed={int((~self.ok).sum())})"


class Explainer:
    """A model on a backend, with its methods and layers, ready to explain batches.

    weights: a safetensors file (a torchvision state_dict of a recognised family, or a file
        written by scripts/export_model.py with its graph), as a path or as bytes (`name` then
        stands for it in messages).
    layer: None (the model's default, see `gradcam.inspect`), a module path such as "layer4", or
        a list of them, aggregated as pytorch-grad-cam aggregates `target_layers`; with
        per_layer=True, each layer's maps instead, keyed (method, layer) (one engine and one
        forward pass per layer).
    method: a name of `gradcam.METHODS` or a list of them (one forward pass serves them all).
    backend: "auto" (CUDA, else a GPU through wgpu, else the CPU), "cpu", "wgpu" or "cuda".
    options: score ("logit" or "softmax"), aug_smooth, eigen_smooth, batch_size (perturbed inputs
        per pass: ScoreCAM's masks, AblationCAM's ablations, occlusion's patches), patch, stride,
        fill (occlusion), steps (integrated gradients), smooth, noise (SmoothGrad), seed.
    threads: CPU threads (default: every core). arch, transform_input: what the weights cannot
        say (a variant to insist on; GoogLeNet's and Inception v3's transform_input).

    Thread-safe: any number of threads may share one explainer; requests run one at a time, with
    the GIL released while they run.
    """

    def __init__(
        self,
        weights: Weights,
        layer: None | str | Sequence[str] = None,
        method: str | Sequence[str] = "gradcam",
        backend: str = "auto",
        *,
        threads: int | None = None,
        arch: str | None = None,
        transform_input: bool | None = None,
        name: str | None = None,
        per_layer: bool = False,
        **options,
    ):
        if not isinstance(weights, (bytes, str, os.PathLike)):
            raise OptionError(
                f"weights must be a path or the bytes of a safetensors file, not {type(weights).__name__}"
            )
        if isinstance(weights, os.PathLike):
            weights = os.fspath(weights)
        if isinstance(layer, tuple):
            layer = list(layer)
        if isinstance(method, tuple):
            method = list(method)
        common = dict(
            methods=method,
            backend=backend,
            options=options,
            threads=threads,
            arch=arch,
            transform_input=transform_input,
            name=name,
        )
        self._native = _native.Explainer(weights, layers=layer, **common)
        # per_layer: one engine per layer, each explaining its layer alone
        self._per_layer = None
        if per_layer is not False and per_layer is not True:
            raise OptionError(f"per_layer must be True or False, not {per_layer!r}")
        if per_layer and len(self._native.layers) > 1:
            self._per_layer = [
                (one, _native.Explainer(weights, layers=[one], **common)) for one in self._native.layers
            ]

    def explain(self, x: np.ndarray, targets: None | int | Sequence[int] = None) -> Explanation:
        """Explains x, a preprocessed float32 (N, 3, H, W) array. targets: None (each image's
        top-1 class), one class for all, or one class per image.

        A C-contiguous float32 array is read in place (copied once, into the engine's request);
        any other float array is converted once by numpy."""
        return self._run(lambda ex: ex.explain(x, targets))

    def explain_images(
        self, paths: Sequence[str | os.PathLike[str]], targets: None | int | Sequence[int] = None
    ) -> Explanation:
        """Decodes the image files (PNG, JPEG, WebP, BMP, TIFF) and preprocesses them with the
        model's preprocessing (`.preprocessing`), giving the same input as the command line, bit
        for bit; then explains them. A file that cannot be read or decoded fails its row only."""
        if isinstance(paths, (str, os.PathLike)):
            raise InputError("paths must be a list of paths; wrap a single path in a list")
        paths = [os.fspath(p) for p in paths]
        return self._run(lambda ex: ex.explain_images(paths, targets))

    def explain_encoded(
        self,
        data: Sequence[bytes],
        names: Sequence[str] | None = None,
        targets: None | int | Sequence[int] = None,
    ) -> Explanation:
        """`explain_images` of encoded image files held in memory (bytes); `names` (default
        "image 0", "image 1", …) stand for them in the failures."""
        if isinstance(data, (bytes, bytearray)):
            raise InputError("data must be a list of encoded images; wrap a single one in a list")
        blobs = [bytes(b) if isinstance(b, (bytearray, memoryview)) else b for b in data]
        if names is None:
            names = [f"image {i}" for i in range(len(blobs))]
        names = [str(n) for n in names]
        return self._run(lambda ex: ex.explain_encoded(blobs, names, targets))

    def _run(self, call) -> Explanation:
        """call(native explainer) -> its raw result; with per_layer, each layer's engine's maps
        under (method, layer), an image failed in any of them failed in all."""
        if self._per_layer is None:
            return Explanation(call(self._native))
        parts = [(layer, call(ex)) for layer, ex in self._per_layer]
        raw = dict(parts[0][1])
        raw["maps"] = [((m, layer), kind, a) for layer, r in parts for m, kind, a in r["maps"]]
        n = len(raw["failures"])
        raw["failures"] = [
            next((r["failures"][i] for _, r in parts if r["failures"][i]), None) for i in range(n)
        ]
        failed = [i for i, f in enumerate(raw["failures"]) if f is not None]
        for _, _, a in raw["maps"]:
            a[failed] = np.nan
        raw["logits"][failed] = np.nan
        raw["probabilities"][failed] = np.nan
        return Explanation(raw)

    @property
    def preprocessing(self) -> dict:
        """The model's evaluation transform, what explain_images applies: torchvision's
        Resize(resize) with Pillow's `interpolation` filter (antialiased), CenterCrop(crop),
        ToTensor, Normalize(mean, std). `resize` is an int (the shorter side) or (h, w)."""
        return self._native.preprocessing

    @property
    def input_size(self) -> tuple[int, int]:
        """The network input's (height, width) that `explain_images` makes: the preprocessing's
        crop or exact size."""
        return self._native.input_size

    @property
    def backend(self) -> str:
        """The backend it runs on: "cpu" or the GPU's name."""
        return self._native.backend

    @property
    def methods(self) -> list[str]:
        return self._native.methods

    @property
    def layers(self) -> list[str]:
        """The target layers (the model's default when none was given)."""
        return self._native.layers

    @property
    def num_classes(self) -> int:
        return self._native.num_classes

    def __repr__(self) -> str:
        return f"gradcam.Explainer(methods={self.methods}, layers={self.layers}, backend={self.backend!r})"


def inspect(
    weights: Weights,
    *,
    arch: str | None = None,
    transform_input: bool | None = None,
    name: str | None = None,
    size: Sequence[int] | None = None,
) -> dict:
    """What `gradcam inspect` prints, as a dict: the architecture, where the graph comes from,
    the classes, the input, the preprocessing, the default layer, and every named layer with its
    output shape for a batch of one at `size` (h, w) (default: the preprocessing's crop); layers
    with a 4-D output can be CAM targets."""
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    return _native.inspect(
        weights, arch=arch, transform_input=transform_input, name=name, size=tuple(size) if size else None
    )


def heatmap(cam: np.ndarray) -> np.ndarray:
    """An (H, W) CAM in [0, 1] as OpenCV's JET heatmap, (H, W, 3) uint8 RGB."""
    return _native.heatmap(np.ascontiguousarray(cam, dtype=np.float32))


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """pytorch-grad-cam's show_cam_on_image(image / 255, cam, use_rgb=True, image_weight): the
    JET heatmap of cam (H, W) blended onto image (H, W, 3) uint8 RGB; (H, W, 3) uint8."""
    return _native.overlay(
        np.ascontiguousarray(image, dtype=np.uint8), np.ascontiguousarray(cam, dtype=np.float32), image_weight
    )
