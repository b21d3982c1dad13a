"""A drop-in for pytorch-grad-cam (PyPI `grad-cam` 1.5.x): the same classes, constructors and
calls, computed by gradcam's engine instead of PyTorch hooks. Switching is one import:

    from gradcam.torch import GradCAM                 # was: from pytorch_grad_cam import GradCAM
    from gradcam.torch.utils.model_targets import ClassifierOutputTarget
    from gradcam.torch.utils.image import show_cam_on_image

    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=[ClassifierOutputTarget(281)])
        model_outputs = cam.outputs

Classes: GradCAM, HiResCAM, GradCAMElementWise, GradCAMPlusPlus, XGradCAM, LayerCAM, EigenCAM,
EigenGradCAM, ScoreCAM, AblationCAM, FullGrad, FEM, RandomCAM. `cam(input_tensor, targets=None,
aug_smooth=False, eigen_smooth=False)` returns (N, H, W) float32 maps in [0, 1]; targets None
explains each image's top class; several target layers are aggregated as pytorch-grad-cam does.

How: the model is exported once per input shape (C, H, W) with torch.fx (gradcam._export) to the
bytes of a safetensors file, which the engine runs in this process (no file is written). Exports
and engines are cached per model (weakly: they go when the model goes) and shared by every CAM
object of that model; the model is exported again when any parameter, buffer or module changed
since (names, identities, storage, version counters, shapes, dtypes, a 64-bit digest of the contents,
each module's type and hyperparameters). `clear_cache()` frees them.

Every class also takes the keyword `backend` ("auto", "cpu", "wgpu", "cuda"); without it,
`gradcam.torch.default_backend` (default "auto") is used.

Where it differs from pytorch-grad-cam:
- Targets: ClassifierOutputTarget and ClassifierOutputSoftmaxTarget, pytorch-grad-cam's own or
  gradcam.torch.utils.model_targets'; one per image. Other targets raise ValueError.
- Eval mode only: the constructor sets model.eval() as pytorch-grad-cam's does; a call on a model
  put back in training mode raises gradcam.ModelError (the engine has no batch statistics).
- A model torch.fx cannot trace, or with an op the exporter does not know, raises ExportError
  (a gradcam.ModelError) with the exporter's message: the op, its module path, what is supported.
- A failed image (non-finite input, logits or map) raises gradcam.InputError naming the image and
  why: pytorch-grad-cam would return an array, and a map of NaN is no answer.
- CUDA: the engine runs on the host (or on its own GPU backend, see gradcam.Explainer's
  `backend`); an input on a CUDA device is copied to the host, a model with CUDA tensors is
  exported from a host copy, and `.outputs` (the engine's logits) is put on the input's device.
  (Not exercised by the test suite, which runs without a GPU.)
- EigenCAM, EigenGradCAM and eigen_smooth fix the SVD's arbitrary sign (the strongest response
  positive, pytorch-grad-cam's get_2d_projection_with_sign_correction); pytorch-grad-cam's plain
  projection can come out negative and be wiped out by its ReLU.
- AblationCAM ablates every channel to the same value and FullGrad pairs each bias with its own
  layer (both differ from pytorch-grad-cam only where it has artefacts: see docs/methods.md);
  RandomCAM's weights are seeded (`seed`, default 0) instead of drawn from numpy's global state.
- A target layer whose output a later op modifies in place (a BatchNorm2d before
  ReLU(inplace=True)) gives the module's own output's map; pytorch-grad-cam's hook sees the
  modified tensor. gradcam.torch warns when it sees this (one forward with hooks per engine).
- reshape_transform (transformers), pytorch-grad-cam's other classes (KPCA_CAM, ShapleyCAM, ...),
  AblationCAM's ratio_channels_to_ablate and custom ablation layers, FEM's k other than 2 are
  not supported and raise.
"""

import copy
import itertools
import operator
import threading
import warnings
import weakref
from collections import OrderedDict

import numpy as np
import torch

import gradcam
from gradcam import _export, _native

from .utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

__all__ = [
    "FEM",
    "AblationCAM",
    "AblationLayer",
    "EigenCAM",
    "EigenGradCAM",
    "ExportError",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "RandomCAM",
    "ScoreCAM",
    "XGradCAM",
    "clear_cache",
    "default_backend",
]

#: The engine's backend for CAM objects constructed without `backend`: "auto" (CUDA, else a GPU
#: through wgpu, else the CPU), "cpu", "wgpu" or "cuda" (see gradcam.Explainer). Setting it here
#: keeps the drop-in's constructor calls unchanged; it is read when an engine is first built.
default_backend = "auto"

if issubclass(_export.ExportError, gradcam.Error):
    ExportError = _export.ExportError
else:  # gradcam._export was loaded before the package's errors: wrap its errors

    class ExportError(gradcam.ModelError):
        """The model cannot be exported: the op, its module path, what is supported."""


# ----------------------------------------------------------------------------------------------
# Targets.

_PGC_TARGETS = "pytorch_grad_cam.utils.model_targets"
_SCORES = {"ClassifierOutputTarget": "logit", "ClassifierOutputSoftmaxTarget": "softmax"}
SUPPORTED_TARGETS = (
    "ClassifierOutputTarget (the class's logit) and ClassifierOutputSoftmaxTarget (its softmax "
    "probability), from pytorch_grad_cam.utils.model_targets or gradcam.torch.utils.model_targets"
)


def _score_of(target):
    """'logit' or 'softmax' for a supported target (matched by exact class: a subclass may
    compute something else), else None."""
    cls = type(target)
    if cls in (ClassifierOutputTarget, ClassifierOutputSoftmaxTarget) or (
        cls.__module__ == _PGC_TARGETS and cls.__qualname__ in _SCORES
    ):
        return _SCORES[cls.__qualname__]
    return None


def _category(i, target):
    c = getattr(target, "category", None)
    if (isinstance(c, torch.Tensor) and c.numel() == 1) or (isinstance(c, np.ndarray) and c.size == 1):
        c = c.item()
    try:
        c = operator.index(c)
    except TypeError:
        raise gradcam.InputError(f"targets[{i}]: category {c!r} is not an integer class index") from None
    if c < 0:
        raise gradcam.InputError(f"targets[{i}]: category {c} is negative; give the class index itself")
    return c


def _groups(targets, n):
    """[(score, indices or None for all, classes or None for top-1)], one entry per score."""
    if targets is None:
        return [("logit", None, None)]
    targets = list(targets)
    if len(targets) != n:
        raise gradcam.InputError(
            f"targets has {len(targets)} entries for a batch of {n} images: give one target per "
            "image, or None (each image's top class)"
        )
    by_score = OrderedDict()
    for i, t in enumerate(targets):
        score = _score_of(t)
        if score is None:
            raise ValueError(
                f"targets[{i}] is a {type(t).__module__}.{type(t).__qualname__}, which gradcam.torch does "
                f"not support; supported: {SUPPORTED_TARGETS}"
            )
        by_score.setdefault(score, []).append((i, _category(i, t)))
    if len(by_score) == 1:
        score, items = next(iter(by_score.items()))
        return [(score, None, [c for _, c in items])]
    return [(s, np.array([i for i, _ in items]), [c for _, c in items]) for s, items in by_score.items()]


# ----------------------------------------------------------------------------------------------
# The model: its layers' names, its fingerprint, its export and engines (cached per model).


def _layer_names(model, target_layers):
    paths = {}
    for name, m in model.named_modules():
        paths.setdefault(id(m), name)
    names = []
    for i, layer in enumerate(target_layers):
        if isinstance(layer, str):
            try:
                model.get_submodule(layer)
            except AttributeError:
                raise ValueError(f"target_layers[{i}]: the model has no module '{layer}'") from None
            name = layer
        else:
            name = paths.get(id(layer))
            if name is None:
                first = repr(layer).splitlines()[0] if isinstance(layer, torch.nn.Module) else repr(layer)
                raise ValueError(
                    f"target_layers[{i}] ({type(layer).__name__}: {first[:80]}) is not a module of the model "
                    "(model.named_modules() does not contain it)"
                )
        if name == "":
            raise ValueError(
                f"target_layers[{i}] is the model itself; a target layer is a submodule whose output is "
                "a spatial map [N, C, h, w]"
            )
        names.append(name)
    return names


def _checksum(t):
    """A digest of a tensor's bytes (gradcam._native.digest, parallel, memory-bound): catches
    in-place edits through `.data`, which bypass the version counter. A tensor on a GPU is copied
    to the host for it."""
    try:
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        return _native.digest(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    except (RuntimeError, TypeError):  # a dtype numpy cannot view: the rest of the fingerprint
        return None


def _fingerprint(model):
    """What the export depends on: every module (path, identity, class, its forward, its
    hyperparameters as extra_repr shows them) and every parameter and buffer (name, identity,
    storage, version counter, shape, strides, dtype, device, contents' digest)."""
    parts = []
    for name, m in model.named_modules():
        own = m.__dict__.get("forward")
        parts.append(
            (
                name,
                id(m),
                id(type(m)),
                id(getattr(type(m), "forward", None)),
                id(own) if own else 0,
                m.extra_repr(),
            )
        )
    for kind, named in (("p", model.named_parameters()), ("b", model.named_buffers())):
        for name, t in named:
            parts.append(
                (kind, name, id(t), t.data_ptr(), t._version, tuple(t.shape), t.stride(), str(t.dtype),
                 str(t.device), _checksum(t))
            )  # fmt: skip
    return tuple(parts)


def _export_bytes(model, shape):
    """The model's export at input shape (C, H, W), from a host copy when it has tensors elsewhere."""
    if any(t.device.type != "cpu" for t in itertools.chain(model.parameters(), model.buffers())):
        try:
            model = copy.deepcopy(model).to("cpu")
        except Exception as e:  # noqa: BLE001  whatever deepcopy raises, named in the message
            raise ExportError(
                f"the model has tensors on a device other than the CPU and cannot be copied to the host "
                f"for its export: {type(e).__name__}: {e}"
            ) from None
    try:
        return _export.export_bytes(model, tuple(shape), producer="gradcam.torch")
    except _export.ExportError as e:
        if ExportError is _export.ExportError:
            raise
        raise ExportError(str(e)) from None


def _modified_in_place(model, names, shape):
    """The target layers whose output a later op of the forward modifies in place (a BatchNorm2d
    followed by ReLU(inplace=True), torchvision's BasicBlock.bn2 followed by `out += identity`):
    pytorch-grad-cam's hook keeps that tensor and sees the modified values, the engine the
    module's own output. One forward of a batch of zeros, with forward hooks."""
    seen = {}
    handles = []
    for name in names:

        def hook(module, args, output, name=name):
            if isinstance(output, torch.Tensor):
                seen[name] = (output, output._version)

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    params = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = params.device if params is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    except Exception:  # noqa: BLE001  only a diagnostic: the export reports a forward that fails
        return []
    finally:
        for h in handles:
            h.remove()
    return [name for name, (t, version) in seen.items() if t._version != version]


class _ModelCache:
    """A model's fingerprint, its exports (per input shape) and engines (per configuration)."""

    MAX_EXPORTS = 2
    MAX_EXPLAINERS = 16

    def __init__(self):
        self.lock = threading.Lock()
        self.fingerprint = None
        self.exports = OrderedDict()
        self.explainers = OrderedDict()
        self.export_count = 0  # how many times this model was exported (tests, diagnostics)


_CACHE = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def _cache_of(model):
    with _CACHE_LOCK:
        entry = _CACHE.get(model)
        if entry is None:
            entry = _CACHE[model] = _ModelCache()
        return entry


def _put(cache, key, value, limit):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def clear_cache(model=None):
    """Drops the cached exports and engines of `model`, or of every model."""
    with _CACHE_LOCK:
        if model is None:
            _CACHE.clear()
        else:
            _CACHE.pop(model, None)


# ----------------------------------------------------------------------------------------------
# The CAM classes.


class _BaseCAM:
    """What every class shares: pytorch-grad-cam's BaseCAM interface over the engine."""

    _method = None  # the engine's method name
    _perturbs = False  # batch_size matters (ScoreCAM, AblationCAM)
    _uses_layers = True

    def __init__(self, model, target_layers, reshape_transform=None, *, backend=None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        if reshape_transform is not None:
            raise gradcam.OptionError(
                "reshape_transform is not supported: gradcam's engine explains CNNs whose target layers "
                "give [N, C, h, w] maps (vision transformers and other token layouts are not exported yet)"
            )
        self.model = model
        self.model.eval()
        self.target_layers = list(target_layers) if target_layers is not None else []
        self.reshape_transform = None
        params = next(iter(model.parameters()), None)
        self.device = params.device if params is not None else torch.device("cpu")
        self.batch_size = 16
        self.outputs = None
        self.backend = backend
        if self._uses_layers:
            if not self.target_layers:
                raise ValueError(
                    "target_layers is empty: give the modules to explain, e.g. [model.layer4[-1]]"
                )
            self._layers = _layer_names(model, self.target_layers)
        else:
            self._layers = None

    # --- pytorch-grad-cam's interface

    def __call__(self, input_tensor, targets=None, aug_smooth=False, eigen_smooth=False):
        """The maps of input_tensor (N, C, H, W): (N, H, W) float32 in [0, 1]."""
        return self._run(input_tensor, targets, bool(aug_smooth), bool(eigen_smooth))

    def forward(self, input_tensor, targets=None, eigen_smooth=False):
        """The maps without test-time augmentation (pytorch-grad-cam's BaseCAM.forward)."""
        return self._run(input_tensor, targets, False, bool(eigen_smooth))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        # Nothing to release (no hooks). The cached export stays for the model's other CAMs
        # (clear_cache frees it); unlike pytorch-grad-cam, no exception is swallowed.
        return None

    def __repr__(self):
        return f"gradcam.torch.{type(self).__name__}(layers={self._layers}, backend={self.backend!r})"

    # --- the engine

    def _options(self):
        opts = {}
        if self._perturbs:
            opts["batch_size"] = int(self.batch_size)
        return opts

    def _explainer(self, shape, score, aug_smooth, eigen_smooth):
        model = self.model
        entry = _cache_of(model)
        opts = self._options()
        backend = self.backend if self.backend is not None else default_backend
        key = (shape, self._method, tuple(self._layers or ()), score, aug_smooth, eigen_smooth, backend,
               tuple(sorted(opts.items())))  # fmt: skip
        with entry.lock:
            fp = _fingerprint(model)
            if fp != entry.fingerprint:
                entry.exports.clear()
                entry.explainers.clear()
                entry.fingerprint = fp
            ex = entry.explainers.get(key)
            if ex is not None:
                entry.explainers.move_to_end(key)
                return ex
            data = entry.exports.get(shape)
            if data is None:
                data = _export_bytes(model, shape)
                entry.export_count += 1
            _put(entry.exports, shape, data, entry.MAX_EXPORTS)
            changed = _modified_in_place(model, self._layers, shape) if self._layers else []
            if changed:
                warnings.warn(
                    f"target layer(s) {', '.join(changed)}: a later op modifies the output in place "
                    "(e.g. ReLU(inplace=True) or `out += identity` after it); pytorch-grad-cam's hook then "
                    "sees the modified tensor and gradcam.torch the module's own output, so the maps "
                    "differ. Target the block or the activation after it to get the same maps.",
                    stacklevel=4,
                )
            ex = gradcam.Explainer(
                data,
                layer=list(self._layers) if self._layers else None,
                method=self._method,
                backend=backend,
                name=f"{type(model).__name__} (exported by gradcam.torch)",
                score=score,
                aug_smooth=aug_smooth,
                eigen_smooth=eigen_smooth,
                **opts,
            )
            _put(entry.explainers, key, ex, entry.MAX_EXPLAINERS)
            return ex

    def _run(self, input_tensor, targets, aug_smooth, eigen_smooth):
        if not isinstance(input_tensor, torch.Tensor):
            raise gradcam.InputError(
                f"input_tensor must be a torch.Tensor, not {type(input_tensor).__name__}"
            )
        if input_tensor.dim() != 4 or input_tensor.shape[0] == 0:
            raise gradcam.InputError(
                "input_tensor must be a batch of images (N, C, H, W), N >= 1; got shape "
                f"{list(input_tensor.shape)}"
            )
        training = [name or "(the model)" for name, m in self.model.named_modules() if m.training]
        if training:
            more = ", ..." if len(training) > 3 else ""
            raise gradcam.ModelError(
                f"the model is in training mode ({', '.join(training[:3])}{more}); "
                "gradcam.torch explains the eval-mode model, as pytorch-grad-cam's constructor sets it: call "
                "model.eval() first"
            )
        n = input_tensor.shape[0]
        groups = _groups(targets, n)
        x = input_tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        shape = tuple(int(s) for s in x.shape[1:])
        cams = np.empty((n, shape[1], shape[2]), dtype=np.float32)
        logits = None
        failures = [None] * n
        for score, idx, classes in groups:
            ex = self._explainer(shape, score, aug_smooth, eigen_smooth)
            res = ex.explain(x if idx is None else np.ascontiguousarray(x[idx]), classes)
            cam = res.cams[self._method] if self._method in res.cams else next(iter(res.cams.values()))
            rows = np.arange(n) if idx is None else idx
            if logits is None:
                logits = np.empty((n, res.logits.shape[1]), dtype=np.float32)
            cams[rows] = cam
            logits[rows] = res.logits
            for j, f in enumerate(res.failures):
                if f is not None:
                    failures[int(rows[j])] = f
        self.outputs = torch.from_numpy(logits).to(input_tensor.device)
        bad = [(i, f) for i, f in enumerate(failures) if f is not None]
        if bad:
            raise gradcam.InputError(
                "; ".join(f"image {i}: {f}" for i, f in bad)
                + " (gradcam.torch returns no map for an image without one)"
            )
        return cams


class GradCAM(_BaseCAM):
    """Grad-CAM: Σ_c w_c·A_c, w_c the spatial mean of the gradient."""

    _method = "gradcam"


class HiResCAM(_BaseCAM):
    """HiResCAM: Σ_c g ⊙ A."""

    _method = "hirescam"


class GradCAMElementWise(_BaseCAM):
    """Grad-CAM element-wise: Σ_c ReLU(g ⊙ A)."""

    _method = "gradcam-elementwise"


class GradCAMPlusPlus(_BaseCAM):
    """Grad-CAM++."""

    _method = "gradcam++"


class XGradCAM(_BaseCAM):
    """XGrad-CAM: w_c = Σ g·A / (Σ A + 1e-7)."""

    _method = "xgradcam"


class LayerCAM(_BaseCAM):
    """LayerCAM: Σ_c ReLU(g) ⊙ A."""

    _method = "layercam"


class EigenCAM(_BaseCAM):
    """EigenCAM: the first principal component of the activations (sign-corrected)."""

    _method = "eigencam"


class EigenGradCAM(_BaseCAM):
    """EigenGradCAM: the first principal component of g ⊙ A (sign-corrected)."""

    _method = "eigengradcam"


class ScoreCAM(_BaseCAM):
    """Score-CAM: the softmax over channels of the scores of the input masked by each upsampled,
    normalized channel. `batch_size` (default 16) masked inputs per forward pass."""

    _method = "scorecam"
    _perturbs = True


class AblationLayer:
    """Stands for pytorch-grad-cam's default AblationLayer (AblationCAM's `ablation_layer`): the
    engine ablates a channel by setting it to 0, or to its minimum - 1e7 when the layer's minimum
    is not 0 (docs/methods.md)."""


class AblationCAM(_BaseCAM):
    """Ablation-CAM: w_c = (s - s_c) / s, s_c the score with channel c ablated. `batch_size`
    (default 32) ablations per forward pass; only the network above the layer is rerun."""

    _method = "ablationcam"
    _perturbs = True

    def __init__(
        self,
        model,
        target_layers,
        reshape_transform=None,
        ablation_layer=None,
        batch_size=32,
        ratio_channels_to_ablate=1.0,
        *,
        backend=None,
    ):
        if ablation_layer is not None and not (
            type(ablation_layer) is AblationLayer
            or (type(ablation_layer).__module__, type(ablation_layer).__qualname__)
            == ("pytorch_grad_cam.ablation_layer", "AblationLayer")
        ):
            raise gradcam.OptionError(
                f"ablation_layer {type(ablation_layer).__name__} is not supported: the engine ablates CNN "
                "channels as pytorch-grad-cam's default AblationLayer does (pass None or AblationLayer())"
            )
        if ratio_channels_to_ablate != 1.0:
            raise gradcam.OptionError(
                f"ratio_channels_to_ablate={ratio_channels_to_ablate} is not supported: the engine ablates "
                "every channel (1.0)"
            )
        super().__init__(model, target_layers, reshape_transform, backend=backend)
        self.ablation_layer = ablation_layer if ablation_layer is not None else AblationLayer()
        self.ratio_channels_to_ablate = 1.0
        self.batch_size = batch_size


class FullGrad(_BaseCAM):
    """FullGrad: |x ⊙ ∂x| plus |b ⊙ ∂layer| of every Conv2d with a bias and every BatchNorm2d.
    target_layers is ignored, as in pytorch-grad-cam."""

    _method = "fullgrad"
    _uses_layers = False

    def __init__(self, model, target_layers, reshape_transform=None, *, backend=None):
        if target_layers:
            warnings.warn(
                "target_layers is ignored in FullGrad. All bias layers will be used instead", stacklevel=2
            )
        super().__init__(model, target_layers, reshape_transform, backend=backend)


class FEM(_BaseCAM):
    """FEM: w_c the share of pixels with A_c > mean + k·std (no gradient); k = 2 only."""

    _method = "fem"

    def __init__(self, model, target_layers, reshape_transform=None, k=2, *, backend=None):
        if k != 2:
            raise gradcam.OptionError(f"FEM with k={k} is not supported: the engine's FEM uses k = 2")
        super().__init__(model, target_layers, reshape_transform, backend=backend)
        self.k = 2


class RandomCAM(_BaseCAM):
    """The random baseline: Σ_c w_c·A_c, w ~ U(-1, 1), seeded by `seed` (pytorch-grad-cam draws
    from numpy's global state)."""

    _method = "random"

    def __init__(self, model, target_layers, reshape_transform=None, *, seed=0, backend=None):
        super().__init__(model, target_layers, reshape_transform, backend=backend)
        self.seed = seed

    def _options(self):
        return {"seed": int(self.seed)}


_NOT_OFFERED = {
    "KPCA_CAM",
    "ShapleyCAM",
    "FinerCAM",
    "SegEigenCAM",
    "RefineCAM",
    "SESS",
    "DeepFeatureFactorization",
    "GuidedBackpropReLUModel",
    "AblationLayerVit",
    "AblationLayerFasterRCNN",
    "ActivationsAndGradients",
    "run_dff_on_image",
}


def __getattr__(name):
    if name in _NOT_OFFERED:
        raise AttributeError(
            f"gradcam.torch has no {name}: gradcam's engine does not compute it; use pytorch_grad_cam.{name}"
        )
    raise AttributeError(f"module 'gradcam.torch' has no attribute {name!r}")
