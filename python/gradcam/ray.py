"""Explaining datasets on a Ray cluster (or Spark): `CamPredictor`, a callable class for
`ray.data.Dataset.map_batches`, and `predict_fn` for `pyspark.ml.functions.predict_batch_udf`.

    import ray, gradcam.ray
    ds = ray.data.from_items([{"path": p} for p in paths])
    out = ds.map_batches(gradcam.ray.CamPredictor, fn_constructor_kwargs={"weights": "m.safetensors"},
                         batch_size=32, concurrency=2)

This module needs only numpy and gradcam; Ray is not imported (it is only asked, when it is
already loaded, how many CPUs the worker was given).

Input batch: a dict of numpy arrays (a pandas DataFrame is taken too) with one of the columns

- "image": preprocessed float images, (N, 3, H, W), or an object array of (3, H, W) arrays (how
  Ray hands a column of tensors of different shapes);
- "bytes": encoded image files (PNG, JPEG, WebP, BMP, TIFF), as `ray.data.read_binary_files`
  gives them; decoded and preprocessed in the worker with the model's preprocessing;
- "path": image files that the worker can read, decoded and preprocessed the same way.

When several are present, "image" wins over "bytes", "bytes" over "path". An optional "target"
column gives the class to explain per row; -1 (or a missing value: None, NaN) is the top-1 class.

Output: the input batch (every column, see keep_input) plus

- "cam": (N, H, W) float32 in [0, 1], the first CAM method's map; "cam_<method>" for each further
  CAM method and "map_<method>" for the other methods (gradient maps (N, 3, H, W), occlusion's
  (N, h, w) grid), with the method's name written "-" -> "_" and "+" -> "p" (gradcam++ ->
  "cam_gradcampp"); `output_columns(method)` lists them;
- "class" (N,) int64: the class explained (-1 for a failed row);
- "probability" (N,) float32: its softmax probability (NaN for a failed row);
- "error" (N,) str: "" or why the row has no result;
- with rgb=True, "rgb" (N, H, W, 3) uint8: the network's view of each image, what an overlay is
  drawn on (zeros for a failed row; for an "image" column, the input mapped back through the
  model's mean and std).

Columns of the input with these names are replaced.

Failures: a row that cannot be explained never fails the batch: a file that cannot be read or
decoded, a non-finite image, an "image" row that is not a (3, H, W) float array or whose size the
network does not take (in an object column), a target out of range. Its "error" says why, its
maps are NaN, its class -1. A problem of the whole batch, which is the caller's, raises
gradcam.InputError: none of the input columns, an "image" column that is not float (raw uint8
pixels) or not (N, 3, H, W), a regular (N, 3, H, W) column whose size the network does not take
(every batch of the dataset would fail the same way), a batch whose columns differ in length.

Rows of different sizes (an object "image" column) are explained in one call per size; the
maps then come back as an object array of per-row arrays when their shapes differ. Rows with a
target and rows without are explained in two calls. On the cpu backend every row gets the same
bits as a direct `Explainer.explain` / `explain_images` call on a batch of the same rows. Mind
the engine's batch of one: when it runs exactly one image it takes another path, whose maps
differ from the same image's in a larger batch by f32 rounding (about 1e-6); batches of two and
more agree bit for bit whatever their size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np

from . import METHODS, Explainer, Explanation, InputError, OptionError

__all__ = ["CamPredictor", "output_columns", "spark_return_type"]

IMAGE, BYTES, PATH, TARGET = "image", "bytes", "path", "target"
_SCALARS = ("class", "probability", "error")


def _slug(method: str) -> str:
    return method.replace("+", "p").replace("-", "_")


def _columns(methods: Sequence[str]) -> dict[str, str]:
    cols: dict[str, str] = {}
    first_cam = True
    for m in methods:
        kind = METHODS.get(m)
        if kind is None:
            raise OptionError(f"unknown method {m!r}; one of: {', '.join(METHODS)}")
        if kind == "cam":
            cols["cam" if first_cam else "cam_" + _slug(m)] = m
            first_cam = False
        else:
            cols["map_" + _slug(m)] = m
    return cols


def output_columns(method: str | Sequence[str] = "gradcam") -> dict[str, str]:
    """The map columns a CamPredictor with these methods adds, column -> method, in order:
    output_columns(["gradcam", "gradcam++", "saliency"]) ==
    {"cam": "gradcam", "cam_gradcampp": "gradcam++", "map_saliency": "saliency"}.
    Besides these, every batch gets "class", "probability" and "error"."""
    methods = [method] if isinstance(method, str) else list(method)
    return _columns([m.lower() for m in methods])


def _ray_cpus() -> int | None:
    """The CPUs Ray gave this worker, when this runs in a Ray worker (Ray already imported)."""
    ray = __import__("sys").modules.get("ray")
    try:
        if ray is None or not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - an old or partial Ray: fall back to the engine's default
        return None
    return max(1, int(cpus)) if cpus else None


class CamPredictor:
    """Explains batches of a Ray dataset: `ds.map_batches(CamPredictor, fn_constructor_kwargs=
    {"weights": ..., "method": ...}, batch_size=..., concurrency=..., num_gpus=...)`.

    weights, layer, method, backend and the options (score, aug_smooth, arch, ...) are those of
    `gradcam.Explainer`; weights may be bytes (what Ray ships to every actor; no shared file
    system needed).
    threads: CPU threads of this worker's explainer; default: the CPUs Ray assigned to the actor
        (`num_cpus` of map_batches, 1 unless set) when it runs in a Ray worker, else every core.
    rgb: add the "rgb" column (the network's view, for overlays).
    keep_input: False drops the "image" and "bytes" columns from the output (they would travel
        back through the object store); the other input columns are always kept.

    See the module's docstring for the columns and what happens to rows that cannot be explained.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | bytes,
        layer: None | str | Sequence[str] = None,
        method: str | Sequence[str] = "gradcam",
        backend: str = "auto",
        *,
        threads: int | None = None,
        rgb: bool = False,
        keep_input: bool = True,
        **options: Any,
    ):
        if threads is None:
            threads = _ray_cpus()
        self.explainer = Explainer(weights, layer, method, backend, threads=threads, **options)
        self.columns: dict[str, str] = _columns(self.explainer.methods)
        self.rgb = rgb
        self.keep_input = keep_input
        pre = self.explainer.preprocessing
        self._mean = np.asarray(pre["mean"], dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(pre["std"], dtype=np.float32).reshape(3, 1, 1)

    def __repr__(self) -> str:
        return f"CamPredictor({self.explainer!r}, columns={list(self.columns)})"

    # -- the batch ------------------------------------------------------------------------------

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        batch = _as_dict(batch)
        n = _length(batch)
        targets, target_errors = self._targets(batch, n)
        if IMAGE in batch:
            rows = self._explain_images_column(batch[IMAGE], n, targets)
        elif BYTES in batch:
            rows = self._explain_bytes(batch[BYTES], batch.get(PATH), n, targets)
        elif PATH in batch:
            rows = self._explain_paths(batch[PATH], n, targets)
        else:
            raise InputError(
                f"the batch has none of the columns {IMAGE!r} (preprocessed float images), "
                f"{BYTES!r} (encoded image files) or {PATH!r} (image files); it has {sorted(batch)}"
            )
        for i, e in target_errors.items():
            rows.fail(i, e)
        out = dict(batch) if self.keep_input else {k: v for k, v in batch.items() if k not in (IMAGE, BYTES)}
        out.update(rows.columns(self, n))
        return out

    def _targets(self, batch: dict[str, Any], n: int) -> tuple[np.ndarray, dict[int, str]]:
        """Per row: the class to explain, -1 for the top-1 class, -2 for a row whose target is
        not a class of the model; and why for those rows."""
        t = np.full(n, -1, dtype=np.int64)
        errors: dict[int, str] = {}
        col = batch.get(TARGET)
        if col is None:
            return t, errors
        k = self.explainer.num_classes
        for i, v in enumerate(_object_array(col)):
            if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
                continue
            try:
                c = int(v)
                ok = c == v and not isinstance(v, (bool, np.bool_))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                errors[i] = f"target {v!r} is not a class index"
            elif c < -1 or c >= k:
                errors[i] = (
                    f"target {c} is out of range: the model has {k} classes "
                    f"(valid: 0..={k - 1}, or -1 for the top-1 class)"
                )
            else:
                t[i] = c
        for i in errors:
            t[i] = -2  # explained by no call
        return t, errors

    def _groups(self, idx: Sequence[int], targets: np.ndarray) -> list[tuple[list[int], Any]]:
        """The rows idx split into those explained for their top-1 class and those with a
        target, each with what Explainer takes as targets (rows with a bad target: neither)."""
        top = [i for i in idx if targets[i] == -1]
        given = [i for i in idx if targets[i] >= 0]
        groups: list[tuple[list[int], Any]] = []
        if top:
            groups.append((top, None))
        if given:
            groups.append((given, [int(targets[i]) for i in given]))
        return groups

    def _explain_images_column(self, col: Any, n: int, targets: np.ndarray) -> _Rows:
        rows = _Rows(n)
        if isinstance(col, np.ndarray):
            a = col
        elif _ragged(col):
            a = _object_array(col)
        else:
            a = np.asarray(col)
        if a.dtype != object:
            # A regular tensor column: its dtype and shape are the dataset's, not a row's.
            if a.dtype.kind != "f":
                raise InputError(
                    f"the {IMAGE!r} column must hold preprocessed float images (N, 3, H, W), not "
                    f"{a.dtype}; give raw image files as {PATH!r} or {BYTES!r} to have them decoded "
                    "and preprocessed with the model's preprocessing"
                )
            if a.ndim != 4 or a.shape[1] != 3:
                hint = (
                    " (channels last? transpose to (N, 3, H, W))" if a.ndim == 4 and a.shape[3] == 3 else ""
                )
                raise InputError(f"the {IMAGE!r} column must be (N, 3, H, W), not {a.shape}{hint}")
            for idx, t in self._groups(range(n), targets):  # one call unless targets are mixed
                x = a if len(idx) == n else a[idx]
                rows.put(idx, self.explainer.explain(x, t), self, x)
            return rows
        # An object column: each row on its own.
        imgs: list[np.ndarray | None] = [None] * n
        for i, v in enumerate(a):
            img, err = _image_row(v)
            if err:
                rows.fail(i, err)
            else:
                imgs[i] = img
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(imgs):
            if img is not None:
                by_size.setdefault(img.shape[1:], []).append(i)
        for members in by_size.values():
            for idx, t in self._groups(members, targets):
                x = np.stack([imgs[i] for i in idx])
                try:
                    res = self.explainer.explain(x, t)
                except InputError as e:  # this size does not fit the network: these rows only
                    for i in idx:
                        rows.fail(i, str(e))
                    continue
                rows.put(idx, res, self, x)
        return rows

    def _explain_paths(self, col: Any, n: int, targets: np.ndarray) -> _Rows:
        rows = _Rows(n)
        paths: list[str] = []
        good: list[int] = []
        for i, p in enumerate(_object_array(col)):
            if isinstance(p, bytes):
                p = os.fsdecode(p)
            if isinstance(p, (str, os.PathLike)) and os.fspath(p):
                paths.append(os.fspath(p))
                good.append(i)
            else:
                rows.fail(i, f"{PATH!r} is not a file path: {p!r}")
        at = dict(zip(good, paths))
        for idx, t in self._groups(good, targets):
            res = self.explainer.explain_images([at[i] for i in idx], t)
            rows.put(idx, res, self, None)
        return rows

    def _explain_bytes(self, col: Any, path_col: Any, n: int, targets: np.ndarray) -> _Rows:
        rows = _Rows(n)
        shown = (
            [str(p) for p in _object_array(path_col)]
            if path_col is not None
            else [f"row {i}" for i in range(n)]
        )
        blobs: dict[int, bytes] = {}
        for i, b in enumerate(_object_array(col)):
            if isinstance(b, (bytes, bytearray, memoryview, np.ndarray)) and len(b):
                blobs[i] = b.tobytes() if isinstance(b, np.ndarray) else bytes(b)
            else:
                rows.fail(i, f"{BYTES!r} of {shown[i]} is empty or not bytes")
        for idx, t in self._groups(list(blobs), targets):
            res = self.explainer.explain_encoded([blobs[i] for i in idx], [shown[i] for i in idx], t)
            rows.put(idx, res, self, None)
        return rows

    # -- helpers of _Rows ---------------------------------------------------------------------------

    def _template(self) -> Explanation:
        """An explanation of one zero image of the model's input size: the shapes a batch's maps
        take when none of its rows could be explained."""
        h, w = self.explainer.input_size
        return self.explainer.explain(np.zeros((1, 3, h, w), dtype=np.float32))

    def _to_rgb(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed images (N, 3, H, W) back to (N, H, W, 3) uint8 through mean and std."""
        v = (x * self._std + self._mean) * 255.0
        v = np.where(np.isfinite(v), v, 0.0)
        return np.clip(np.rint(v), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    # -- Spark ----------------------------------------------------------------------------------

    def predict_fn(self, input: str = IMAGE, target: bool = False) -> Callable[..., dict[str, np.ndarray]]:
        """A predict function for `pyspark.ml.functions.predict_batch_udf`: it takes the input
        column as a numpy array (and the target column when target=True) and returns a dict with
        the new columns only: every map flattened to (N, H*W) (or (N, 3*H*W)), "class",
        "probability", "error". Use `spark_return_type` for the struct it matches. input: "image"
        (float (N, 3, H, W), see input_tensor_shapes), "path" or "bytes"."""
        if input not in (IMAGE, PATH, BYTES):
            raise OptionError(f"input must be {IMAGE!r}, {PATH!r} or {BYTES!r}, not {input!r}")

        def flat(out: dict[str, Any]) -> dict[str, np.ndarray]:
            res: dict[str, np.ndarray] = {}
            for c in self.columns:
                m = out[c]
                if m.dtype == object:
                    raise InputError(
                        "rows of different sizes give maps of different sizes; a Spark array "
                        "column needs one size (give input_tensor_shapes)"
                    )
                res[c] = m.reshape(len(m), -1)
            for c in _SCALARS:
                res[c] = out[c]
            return res

        if target:

            def predict_with_target(x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
                return flat(self({input: x, TARGET: t}))

            return predict_with_target

        def predict(x: np.ndarray) -> dict[str, np.ndarray]:
            return flat(self({input: x}))

        return predict


def spark_return_type(method: str | Sequence[str] = "gradcam"):
    """The pyspark StructType that `CamPredictor.predict_fn` returns for these methods: an
    array<float> per map column, class bigint, probability float, error string. Needs pyspark."""
    from pyspark.sql.types import (
        ArrayType,
        FloatType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    fields = [StructField(c, ArrayType(FloatType())) for c in output_columns(method)]
    fields += [
        StructField("class", LongType()),
        StructField("probability", FloatType()),
        StructField("error", StringType()),
    ]
    return StructType(fields)


# -- internals ------------------------------------------------------------------------------------


def _as_dict(batch: Any) -> dict[str, Any]:
    if isinstance(batch, Mapping):
        return dict(batch)
    if hasattr(batch, "columns") and hasattr(batch, "__getitem__"):  # a pandas DataFrame
        return {c: _series(batch[c]) for c in batch.columns}
    raise InputError(f"a batch must be a dict of columns (numpy arrays), not {type(batch).__name__}")


def _series(s: Any) -> np.ndarray:
    a = s.to_numpy()
    if a.dtype == object and len(a) and all(isinstance(v, np.ndarray) for v in a):
        shapes = {v.shape for v in a}
        dtypes = {v.dtype for v in a}
        if len(shapes) == 1 and len(dtypes) == 1:
            return np.stack(list(a))
    return a


def _length(batch: dict[str, Any]) -> int:
    lengths = {k: len(v) for k, v in batch.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"the batch's columns differ in length: {lengths}")
    return next(iter(lengths.values()), 0)


def _object_array(seq: Any) -> np.ndarray:
    """A 1-D object array of the rows of seq, whatever their shapes (np.asarray would make a
    2-D array of equal-length rows, or fail on rows of different shapes)."""
    if isinstance(seq, np.ndarray) and seq.dtype == object and seq.ndim == 1:
        return seq
    out = np.empty(len(seq), dtype=object)
    for i, v in enumerate(seq):
        out[i] = v
    return out


def _ragged(col: Any) -> bool:
    """A list of per-row arrays that numpy cannot stack into one regular array."""
    if not isinstance(col, (list, tuple)):
        return False
    shapes = {np.shape(v) if v is not None else None for v in col}
    return len(shapes) > 1


def _image_row(v: Any) -> tuple[np.ndarray | None, str | None]:
    """A row of an object "image" column as a C-contiguous float32 (3, H, W), or why not."""
    if v is None:
        return None, "no image (None)"
    try:
        a = np.asarray(v)
    except Exception as e:  # noqa: BLE001 - anything numpy cannot read is a bad row
        return None, f"the image is not an array: {e}"
    if a.dtype.kind != "f":
        return None, f"the image must be a preprocessed float array (3, H, W), not {a.dtype}"
    if a.ndim != 3 or a.shape[0] != 3 or a.shape[1] == 0 or a.shape[2] == 0:
        return None, f"the image must be (3, H, W), not {a.shape}"
    return np.ascontiguousarray(a, dtype=np.float32), None


class _Rows:
    """The results of a batch, gathered row by row from one or more explainer calls."""

    def __init__(self, n: int):
        self.n = n
        self.maps: dict[str, list[np.ndarray | None]] = {}
        self.classes = np.full(n, -1, dtype=np.int64)
        self.probabilities = np.full(n, np.nan, dtype=np.float32)
        self.errors: list[str] = [""] * n
        self.rgb: list[np.ndarray | None] = [None] * n

    def fail(self, i: int, why: str) -> None:
        self.errors[i] = why
        self.classes[i] = -1
        self.probabilities[i] = np.nan
        for v in self.maps.values():
            v[i] = None
        self.rgb[i] = None

    def put(self, idx: Sequence[int], res: Explanation, p: CamPredictor, x: np.ndarray | None) -> None:
        rgb = None
        if p.rgb:
            rgb = res.images if res.images is not None else list(p._to_rgb(x))
        for j, i in enumerate(idx):
            if res.failures[j] is not None:
                self.fail(i, res.failures[j])
                continue
            for c, m in p.columns.items():
                self.maps.setdefault(c, [None] * self.n)[i] = res.maps[m][j]
            self.classes[i] = res.classes[j]
            self.probabilities[i] = res.probabilities[j]
            if rgb is not None:
                self.rgb[i] = rgb[j]

    def columns(self, p: CamPredictor, n: int) -> dict[str, np.ndarray]:
        template: Explanation | None = None
        out: dict[str, np.ndarray] = {}
        for c, m in p.columns.items():
            rows = self.maps.get(c, [None] * n)
            shapes = {r.shape for r in rows if r is not None}
            if len(shapes) > 1:  # maps of different sizes: one array per row
                col = np.empty(n, dtype=object)
                ref = next(r for r in rows if r is not None)
                for i, r in enumerate(rows):
                    col[i] = r if r is not None else np.full(ref.shape, np.nan, dtype=ref.dtype)
                out[c] = col
                continue
            if shapes:
                shape = shapes.pop()
            else:
                template = template or p._template()
                shape = template.maps[m].shape[1:]
            col = np.full((n,) + shape, np.nan, dtype=np.float32)
            for i, r in enumerate(rows):
                if r is not None:
                    col[i] = r
            out[c] = col
        out["class"] = self.classes
        out["probability"] = self.probabilities
        out["error"] = np.array(self.errors, dtype=object)
        if p.rgb:
            shapes = {r.shape for r in self.rgb if r is not None}
            if len(shapes) > 1:
                ref = next(r for r in self.rgb if r is not None)
                col = np.empty(n, dtype=object)
                for i, r in enumerate(self.rgb):
                    col[i] = r if r is not None else np.zeros_like(ref)
            else:
                if shapes:
                    shape = shapes.pop()
                else:  # no row explained: the size of the maps (a CAM's (H, W), a gradient's (3, H, W))
                    m = out[next(iter(p.columns))]
                    shape = (m.shape[-2], m.shape[-1], 3) if m.dtype != object else (0, 0, 3)
                col = np.zeros((n,) + tuple(shape), dtype=np.uint8)
                for i, r in enumerate(self.rgb):
                    if r is not None:
                        col[i] = r
            out["rgb"] = col
        return out
