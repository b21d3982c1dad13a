"""gradcam.ray: CamPredictor on dict batches (numpy only), then on a local Ray cluster.

Bit for bit: CamPredictor calls the same Explainer on the cpu backend, so its rows are compared
with np.array_equal against a direct `Explainer.explain` / `explain_images` call on the same rows
(never a tolerance). One caveat, the engine's: a call of exactly one image takes another path
(batch 1) and differs from the same image in a larger batch by f32 rounding, so every call here,
direct or through CamPredictor, explains at least two images.

The Ray tests share one local cluster (ray.init(num_cpus=2), module scope); they are skipped
when Ray is not installed. The predictor's own tests need only numpy."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradcam
from gradcam.ray import CamPredictor, output_columns

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed-cnn-shapes.safetensors"
SEED_INPUT = ROOT / "examples" / "seed_input.npy"
SHAPES = sorted((ROOT / "examples" / "shapes").glob("*.png"))
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own DataContext

IMAGES = [ROOT / "examples" / n for n in ("shapes1.png", "shapes2.png", "shapes3.jpg")] + SHAPES


@pytest.fixture(scope="module")
def predictor():
    return CamPredictor(SEED, backend="cpu", rgb=True)


@pytest.fixture(scope="module")
def direct():
    return gradcam.Explainer(SEED, backend="cpu")


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(7)
    return np.concatenate([np.load(SEED_INPUT), rng.standard_normal((4, 3, 32, 32)).astype(np.float32)])


def corrupt_png(tmp_path):
    bad = tmp_path / "truncated.png"
    bad.write_bytes(IMAGES[0].read_bytes()[:200])
    return bad


def assert_rows_equal(out, rows, ref, ref_rows=None):
    """out's rows `rows` are ref's rows `ref_rows` (all of ref by default), bit for bit."""
    ref_rows = list(range(len(ref))) if ref_rows is None else ref_rows
    assert np.array_equal(out["cam"][rows], ref.cam[ref_rows])
    assert np.array_equal(out["class"][rows], ref.classes[ref_rows])
    assert np.array_equal(out["probability"][rows], ref.probabilities[ref_rows])
    assert all(e == "" for e in out["error"][rows])


def assert_failed(out, i, *words):
    assert np.isnan(out["cam"][i]).all() and out["class"][i] == -1 and np.isnan(out["probability"][i])
    assert all(w in out["error"][i] for w in words), out["error"][i]


# -- CamPredictor on dict batches, without Ray --------------------------------------------------


def test_importing_gradcam_ray_does_not_import_ray():
    code = "import sys, gradcam.ray; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_image_column_is_explain_bit_for_bit(predictor, direct, x):
    ids = np.arange(len(x)) * 10
    out = predictor({"image": x, "id": ids})
    ref = direct.explain(x)
    assert_rows_equal(out, slice(None), ref)
    assert out["cam"].shape == (8, 32, 32) and out["cam"].dtype == np.float32
    assert out["class"].dtype == np.int64 and out["probability"].dtype == np.float32
    assert out["image"] is x and np.array_equal(out["id"], ids)  # the input columns pass through
    # rgb: the input mapped back through mean 0.5, std 0.5
    assert out["rgb"].shape == (8, 32, 32, 3) and out["rgb"].dtype == np.uint8
    want = np.clip(np.rint((x * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(out["rgb"], want)
    assert "image" not in CamPredictor(SEED, backend="cpu", keep_input=False)({"image": x})


def test_non_finite_image_row_fails_alone(predictor, direct, x):
    y = x.copy()
    y[2, 1, 5, 5] = np.inf
    out = predictor({"image": y})
    assert_failed(out, 2, "non-finite")
    good = [i for i in range(8) if i != 2]
    assert_rows_equal(out, good, direct.explain(x[good]))
    assert (out["rgb"][2] == 0).all()


def test_path_column_is_explain_images_bit_for_bit_and_a_corrupt_file_fails_alone(
    predictor, direct, tmp_path
):
    paths = [str(p) for p in IMAGES[:3]] + [str(corrupt_png(tmp_path))] + [str(p) for p in IMAGES[3:6]]
    out = predictor({"path": np.array(paths, dtype=object)})
    assert_failed(out, 3, "truncated.png", "cannot decode")
    good = [i for i in range(len(paths)) if i != 3]
    ref = direct.explain_images([paths[i] for i in good])
    assert_rows_equal(out, good, ref)
    assert np.array_equal(out["rgb"][good], np.stack(ref.images))
    assert (out["rgb"][3] == 0).all()


def test_bytes_column_is_decoded_like_files_and_names_the_row_by_its_path(predictor, direct, tmp_path):
    data = [p.read_bytes() for p in IMAGES[:3]] + [corrupt_png(tmp_path).read_bytes(), b""]
    names = ["s3://bucket/a.png", "s3://bucket/b.png", "s3://bucket/c.jpg", "s3://bucket/d.png", "e"]
    out = predictor({"bytes": np.array(data, dtype=object), "path": np.array(names, dtype=object)})
    assert_rows_equal(out, [0, 1, 2], direct.explain_images(IMAGES[:3]))
    assert_failed(out, 3, "s3://bucket/d.png", "cannot decode")
    assert_failed(out, 4, "empty")
    assert "gradcam-" not in "".join(out["error"])  # not the temporary file's name


def test_targets_column_mixes_top1_and_given_classes(predictor, direct, x):
    t = np.array([-1, 0, 1, -1, 2, 0, -1, 1])
    out = predictor({"image": x, "target": t})
    top, given = [0, 3, 6], [1, 2, 4, 5, 7]
    assert_rows_equal(out, top, direct.explain(x[top]))
    assert_rows_equal(out, given, direct.explain(x[given], targets=list(t[given])))
    assert list(out["class"][given]) == list(t[given])
    # a missing target (None, NaN) is the top-1 class; one out of range fails its row only
    t = np.array([None, 1, 3, np.nan, 1.5, 0, -4, 2], dtype=object)
    out = predictor({"image": x, "target": t})
    for i, word in ((2, "out of range"), (4, "not a class"), (6, "out of range")):
        assert_failed(out, i, word)
    assert_rows_equal(out, [0, 3], direct.explain(x[[0, 3]]))
    assert_rows_equal(out, [1, 5, 7], direct.explain(x[[1, 5, 7]], targets=[1, 0, 2]))


def test_object_image_column_explains_each_size_and_fails_bad_rows(predictor, direct, x):
    big = np.random.default_rng(1).standard_normal((2, 3, 40, 36)).astype(np.float32)
    rows = [x[0], big[0], None, x[1].astype(np.float64), (x[2] * 100).astype(np.uint8), x[3][:2], big[1]]
    rows += [np.zeros((3, 8, 8), np.float32), np.zeros((3, 9, 9), np.float32)]
    col = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        col[i] = r
    out = predictor({"image": col})
    assert out["cam"].dtype == object  # maps of different sizes: one array per row
    small = direct.explain(x[:2])
    large = direct.explain(big)
    for i, (ref, j) in {0: (small, 0), 3: (small, 1), 1: (large, 0), 6: (large, 1)}.items():
        assert np.array_equal(out["cam"][i], ref.cam[j]) and out["class"][i] == ref.classes[j]
        assert out["error"][i] == ""
    assert_failed(out, 2, "None")
    assert_failed(out, 4, "float", "uint8")
    assert_failed(out, 5, "(3, H, W)")
    assert_failed(out, 7, "does not fit")  # a size the network does not take: these rows only
    assert_failed(out, 8, "does not fit")
    assert out["rgb"][1].shape == (40, 36, 3) and out["cam"][2].shape == (32, 32)


def test_whole_batch_problems_raise(predictor, x):
    cases = [
        ({"x": x}, "none of the columns"),
        ({"image": (x * 100).astype(np.uint8)}, "float"),
        ({"image": x.transpose(0, 2, 3, 1)}, "channels last"),
        ({"image": np.zeros((2, 3, 8, 8), np.float32)}, "does not fit"),
        ({"image": x, "id": np.arange(3)}, "differ in length"),
    ]
    for batch, words in cases:
        with pytest.raises(gradcam.InputError, match=words):
            predictor(batch)


def test_a_batch_without_any_explainable_row_keeps_the_shapes(predictor):
    out = predictor({"path": np.array([None, "/nonexistent.png"], dtype=object)})
    assert out["cam"].shape == (2, 32, 32) and np.isnan(out["cam"]).all()
    assert list(out["class"]) == [-1, -1] and out["rgb"].shape == (2, 32, 32, 3)
    col = np.empty(1, dtype=object)
    col[0] = None
    assert predictor({"image": col})["cam"].shape == (1, 32, 32)
    out = predictor({"image": np.zeros((0, 3, 32, 32), np.float32)})
    assert out["cam"].shape == (0, 32, 32) and out["error"].shape == (0,)


def test_several_methods_name_their_columns(direct, x):
    methods = ["gradcam", "GradCAM++", "saliency"]
    p = CamPredictor(SEED, method=methods, backend="cpu")
    assert output_columns(methods) == p.columns
    assert list(p.columns) == ["cam", "cam_gradcampp", "map_saliency"]
    out = p({"image": x})
    ref = gradcam.Explainer(SEED, method=methods, backend="cpu").explain(x)
    for c, m in p.columns.items():
        assert np.array_equal(out[c], ref.maps[m])
    assert out["map_saliency"].shape == (8, 3, 32, 32)


def test_predict_fn_returns_what_spark_takes(direct, x):
    p = CamPredictor(SEED, method=["gradcam", "saliency"], backend="cpu")
    res = p.predict_fn()(x)
    assert set(res) == {"cam", "map_saliency", "class", "probability", "error"}
    assert res["cam"].shape == (8, 32 * 32) and res["map_saliency"].shape == (8, 3 * 32 * 32)
    assert np.array_equal(res["cam"].reshape(8, 32, 32), direct.explain(x).cam)
    res = p.predict_fn(target=True)(x, np.array([1] * 8))
    assert list(res["class"]) == [1] * 8
    res = p.predict_fn("path")(np.array([str(p) for p in IMAGES[:2]], dtype=object))
    assert res["cam"].shape == (2, 1024) and list(res["error"]) == ["", ""]


def test_pandas_batch(predictor, direct):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"path": [str(p) for p in IMAGES[:3]], "target": [None, 1, None]})
    out = predictor(df)
    assert_rows_equal(out, [0, 2], direct.explain_images([IMAGES[0], IMAGES[2]]))
    assert out["class"][1] == 1


# -- on a local Ray cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    ray.shutdown()


def run(ray, items, batch_size=4, concurrency=1, **kwargs):
    ds = ray.data.from_items(items)
    out = ds.map_batches(
        CamPredictor,
        fn_constructor_kwargs={"weights": str(SEED), "backend": "cpu", **kwargs},
        batch_size=batch_size,
        concurrency=concurrency,
    )
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [it["id"] for it in items]
    return rows


def column(rows, name):
    if name == "error":
        return np.array([r[name] for r in rows], dtype=object)
    return np.stack([r[name] for r in rows])


def test_ray_image_column_with_a_non_finite_row(ray, direct, x):
    y = x.copy()
    y[5, 0, 0, 0] = np.nan
    rows = run(ray, [{"id": i, "image": y[i]} for i in range(8)])
    out = {c: column(rows, c) for c in ("cam", "class", "probability", "error")}
    assert_failed(out, 5, "non-finite")
    good = [i for i in range(8) if i != 5]
    assert_rows_equal(out, good, direct.explain(x[good]))


def test_ray_path_column_with_a_corrupt_file_on_two_actors(ray, direct, tmp_path):
    paths = [str(p) for p in IMAGES[:5]] + [str(corrupt_png(tmp_path))] + [str(p) for p in IMAGES[5:7]]
    rows = run(ray, [{"id": i, "path": p} for i, p in enumerate(paths)], concurrency=2)
    out = {c: column(rows, c) for c in ("cam", "class", "probability", "error")}
    assert_failed(out, 5, "truncated.png")
    good = [i for i in range(8) if i != 5]
    assert_rows_equal(out, good, direct.explain_images([paths[i] for i in good]))


def test_ray_ragged_image_column(ray, direct, x):
    big = np.random.default_rng(2).standard_normal((4, 3, 40, 36)).astype(np.float32)
    items = [{"id": i, "image": x[i] if i % 2 else big[i // 2]} for i in range(8)]
    rows = run(ray, items)
    small, large = direct.explain(x[1::2]), direct.explain(big)
    for i, r in enumerate(rows):
        ref = small if i % 2 else large
        assert r["error"] == "" and np.array_equal(r["cam"], ref.cam[i // 2])


def test_ray_workers_get_threads_from_their_cpus(ray):
    from gradcam.ray import _ray_cpus

    assert _ray_cpus() is None  # the driver: the engine's default, every core
    assert ray.get(ray.remote(num_cpus=2)(_ray_cpus).remote()) == 2
    assert ray.get(ray.remote(_ray_cpus).remote()) == 1


def test_ray_read_binary_files_bytes_column(ray, direct, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, p in enumerate(IMAGES[:4]):
        (folder / f"{i}{p.suffix}").write_bytes(p.read_bytes())
    (folder / "4.png").write_bytes(IMAGES[0].read_bytes()[:200])
    ds = ray.data.read_binary_files(str(folder), include_paths=True)
    out = ds.map_batches(
        CamPredictor,
        fn_constructor_kwargs={"weights": SEED.read_bytes(), "backend": "cpu", "keep_input": False},
        batch_size=5,
        concurrency=1,
    )
    rows = sorted(out.take_all(), key=lambda r: Path(r["path"]).name)
    assert "bytes" not in rows[0]
    out = {c: column(rows, c) for c in ("cam", "class", "probability", "error")}
    assert_failed(out, 4, "4.png", "cannot decode")
    assert_rows_equal(out, [0, 1, 2, 3], direct.explain_images(IMAGES[:4]))
