"""The core API (numpy only) against the command line and the committed fixtures.

Bit for bit: the package and `gradcam explain` run the same library code on the same backend
(cpu), so their maps are compared with np.array_equal, not a tolerance. The CLI binary is the one
`cargo test --profile suite` builds (target/suite/gradcam), or $GRADCAM_BIN."""

import subprocess
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_binary

import gradcam

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed-cnn-shapes.safetensors"
SEED_INPUT = ROOT / "examples" / "seed_input.npy"
IMAGES = [ROOT / "examples" / n for n in ("shapes1.png", "shapes2.png", "shapes3.jpg")]
CUSTOM = ROOT / "tests" / "fixtures" / "exported" / "custom_cnn" / "model.safetensors"


def run_cli(*args):
    out = subprocess.run([str(cli_binary()), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def seed():
    return gradcam.Explainer(SEED, backend="cpu")


def test_explain_matches_the_cli_input_tensor_bit_for_bit(tmp_path):
    x = np.load(SEED_INPUT)
    ex = gradcam.Explainer(SEED, layer=["conv2", "conv3"], method=["gradcam", "scorecam"], backend="cpu")
    res = ex.explain(x)
    run_cli(
        "explain", "--weights", SEED, "--input-tensor", SEED_INPUT, "--backend", "cpu",
        "--method", "gradcam,scorecam", "--layer", "conv2,conv3", "--out", tmp_path, "-q",
    )  # fmt: skip
    assert np.array_equal(res.cams["gradcam"], np.load(tmp_path / "cams.npy"))
    assert np.array_equal(res.cams["scorecam"], np.load(tmp_path / "scorecam.npy"))
    assert np.array_equal(res.logits, np.load(tmp_path / "logits.npy"))
    assert res.cams["gradcam"].shape == (4, 32, 32) and res.cams["gradcam"].dtype == np.float32
    assert res.classes.dtype == np.int64 and list(res.classes) == list(np.argmax(res.logits, axis=1))
    assert res.ok.all() and res.failures == [None] * 4
    assert 0.0 <= res.cams["gradcam"].min() and res.cams["gradcam"].max() <= 1.0


def test_explain_images_matches_the_cli_bit_for_bit(tmp_path, seed):
    res = seed.explain_images(IMAGES)
    out = run_cli("explain", "--weights", SEED, *IMAGES, "--backend", "cpu", "--save-raw", "--out", tmp_path)
    for i, p in enumerate(IMAGES):
        cli = np.load(tmp_path / f"{p.stem}.cam.npy")
        assert np.array_equal(res.cam[i], cli), p
    classes = [int(line.split('"class":')[1].split(",")[0]) for line in out.stdout.splitlines()]
    assert list(res.classes) == classes
    # The same preprocessing the CLI applies, and the network view to draw on.
    assert seed.preprocessing == {
        "resize": (32, 32), "crop": None, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
    }  # fmt: skip
    assert res.images[0].shape == (32, 32, 3) and res.images[0].dtype == np.uint8
    assert seed.input_size == (32, 32)


def test_explain_images_equals_explain_of_the_same_tensor(seed):
    """explain_images = decode + the model's transform + explain: the images' own tensor gives
    the same maps (checked against the CLI's tensor in the test above)."""
    res = seed.explain_images(IMAGES[:2])
    x = np.stack([(img.astype(np.float32) / 255 - 0.5) / 0.5 for img in res.images]).transpose(0, 3, 1, 2)
    again = seed.explain(np.ascontiguousarray(x))
    np.testing.assert_allclose(again.cam, res.cam, atol=1e-6)  # (v/255-0.5)/0.5 rounds like Rust's


def test_targets(seed):
    x = np.load(SEED_INPUT)
    top = seed.explain(x)
    one = seed.explain(x, targets=1)
    per = seed.explain(x, targets=[0, 1, 2, 1])
    assert list(one.classes) == [1] * 4 and list(per.classes) == [0, 1, 2, 1]
    assert np.array_equal(per.cam[1], one.cam[1])
    assert np.array_equal(seed.explain(x, targets=list(top.classes)).cam, top.cam)
    np.testing.assert_allclose(
        per.probabilities[2], np.exp(per.logits[2, 2]) / np.exp(per.logits[2]).sum(), rtol=1e-5
    )


def test_weights_from_bytes_equal_weights_from_a_path():
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    a = gradcam.Explainer(CUSTOM, layer=["down", "paths.b"], backend="cpu").explain(x)
    b = gradcam.Explainer(CUSTOM.read_bytes(), layer=("down", "paths.b"), backend="cpu", name="custom")
    b = b.explain(x)
    assert np.array_equal(a.cam, b.cam) and np.array_equal(a.logits, b.logits)


def test_inspect():
    info = gradcam.inspect(CUSTOM)
    assert info["default_layer"] == "down" and info["graph"].startswith("scripts/export_model.py")
    names = {layer["name"]: layer for layer in info["layers"]}
    assert "paths.b" in names and len(names["down"]["shape"]) == 4
    assert gradcam.inspect(SEED)["num_classes"] == 3
    assert gradcam.inspect(CUSTOM, size=(64, 48))["input"] == (3, 64, 48)
    with pytest.raises(gradcam.InputError, match="made for another input size"):
        gradcam.inspect(SEED, size=(64, 48))


def test_methods_and_options():
    assert gradcam.METHODS["gradcam++"] == "cam" and gradcam.METHODS["saliency"] == "gradient"
    x = np.load(SEED_INPUT)[:2]
    ex = gradcam.Explainer(SEED, method=["eigencam", "saliency"], backend="cpu", eigen_smooth=True, threads=1)
    res = ex.explain(x)
    assert set(res.cams) == {"eigencam"} and res.maps["saliency"].shape == (2, 3, 32, 32)
    soft = gradcam.Explainer(SEED, backend="cpu", score="softmax", aug_smooth=True).explain(x)
    assert soft.cam.shape == (2, 32, 32)
    assert ex.methods == ["eigencam", "saliency"] and ex.layers == ["conv3"] and ex.num_classes == 3


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(method="nope"), gradcam.OptionError, "unknown method 'nope'"),
        (dict(layer="conv9"), gradcam.OptionError, "unknown layer 'conv9'"),
        (dict(backend="tpu"), gradcam.OptionError, "unknown backend"),
        (dict(batch_size=0), gradcam.OptionError, "must be at least 1"),
        (dict(batch_size=-3), gradcam.OptionError, "`batch_size` must be in"),
        (dict(bogus=1), gradcam.OptionError, "unknown option `bogus`"),
        (dict(aug_smooth="yes"), gradcam.OptionError, "True or False"),
        (dict(noise=float("nan")), gradcam.OptionError, "finite"),
        (dict(threads=0), gradcam.OptionError, "`threads`"),
        (dict(method=["saliency"], aug_smooth=True), gradcam.OptionError, "aug_smooth"),
    ],
)
def test_bad_options_raise(kwargs, error, words):
    with pytest.raises(error, match=words):
        gradcam.Explainer(SEED, **{"backend": "cpu", **kwargs})


def test_bad_weights_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        gradcam.Explainer(tmp_path / "nope.safetensors")
    with pytest.raises(gradcam.ModelError, match="not a valid safetensors file"):
        gradcam.Explainer(b"garbage", name="junk")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(SEED.read_bytes()[:-100])
    with pytest.raises(gradcam.ModelError, match="truncated.safetensors"):
        gradcam.Explainer(truncated)
    with pytest.raises(gradcam.OptionError, match="weights must be"):
        gradcam.Explainer(42)
    assert issubclass(gradcam.ModelError, ValueError) and issubclass(gradcam.ModelError, gradcam.Error)


@pytest.mark.parametrize(
    "x, targets, words",
    [
        (np.zeros((3, 32, 32), np.float32), None, "rank 4"),
        (np.zeros((2, 1, 32, 32), np.float32), None, "3 input channels"),
        (np.zeros((0, 3, 32, 32), np.float32), None, "at least 1"),
        (np.zeros((2, 3, 32, 32), np.uint8), None, "float array"),
        ([[1.0]], None, "numpy array"),
        (np.zeros((2, 3, 32, 32), np.float32), 3, "class 3 is out of range"),
        (np.zeros((2, 3, 32, 32), np.float32), -1, "negative"),
        (np.zeros((2, 3, 32, 32), np.float32), [0], "1 targets for 2 images"),
        (np.zeros((2, 3, 32, 32), np.float32), "cat", "targets must be"),
        (np.zeros((2, 3, 32, 32), np.float32), True, "not bool"),
        (np.zeros((1, 3, 1 << 15, 1 << 15), np.float32)[:, :, :1, :1], None, None),
    ],
)
def test_bad_input_raises(seed, x, targets, words):
    if words is None:  # a view of a huge array: converted once, explained (32x32 expected -> error)
        with pytest.raises(gradcam.InputError):
            seed.explain(x, targets)
        return
    with pytest.raises(gradcam.InputError, match=words):
        seed.explain(x, targets)


def test_a_non_finite_image_fails_alone(seed):
    x = np.load(SEED_INPUT)
    bad = x.copy()
    bad[1, 2, 5, 7] = np.nan
    bad[3, 0, 0, 0] = np.inf
    res = seed.explain(bad)
    assert list(res.ok) == [True, False, True, False]
    assert "non-finite input value NaN at [1, 2, 5, 7]" in res.failures[1]
    assert np.isnan(res.cam[1]).all() and np.isnan(res.logits[3]).all() and res.classes[1] == -1
    alone = seed.explain(x[[0, 2]])
    assert np.array_equal(res.cam[[0, 2]], alone.cam)
    with pytest.raises(gradcam.InputError, match="image 1: non-finite"):
        res.raise_for_failures()


def test_a_bad_file_fails_its_row_only(seed, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(IMAGES[0].read_bytes()[:60])
    res = seed.explain_images([IMAGES[0], corrupt, tmp_path / "missing.jpg", IMAGES[2]])
    assert list(res.ok) == [True, False, False, True]
    assert "corrupt.png" in res.failures[1] and "missing.jpg" in res.failures[2]
    assert res.images[1] is None and np.isnan(res.cam[1]).all()
    alone = seed.explain_images([IMAGES[0], IMAGES[2]])
    assert np.array_equal(res.cam[[0, 3]], alone.cam)
    every = seed.explain_images([corrupt])
    assert not every.ok.any() and every.cam.shape == (1, 32, 32)
    with pytest.raises(gradcam.InputError, match="list of paths"):
        seed.explain_images(str(IMAGES[0]))


def test_c_contiguous_float32_is_not_converted(seed):
    x = np.ascontiguousarray(np.repeat(np.load(SEED_INPUT), 64, axis=0))  # 256 images, 3 MiB
    seed.explain(x[:2])
    before = gradcam._native.input_conversions()
    tracemalloc.start()
    seed.explain(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert gradcam._native.input_conversions() == before
    # numpy's allocations are traced: a copy of x would show as >= x.nbytes (the maps and logits
    # are allocated by Rust and handed to numpy, so they are not traced)
    assert peak < x.nbytes // 4, (peak, x.nbytes)
    seed.explain(x[:, :, ::-1])  # not contiguous: converted once
    seed.explain(x.astype(np.float64))  # another dtype: converted once
    assert gradcam._native.input_conversions() == before + 2


def test_the_gil_is_released_while_explaining():
    """While one thread explains, another runs Python code: it counts its loop iterations while
    the explaining thread is alive. With the GIL held it could not run at all until the end."""
    ex = gradcam.Explainer(SEED, method="scorecam", backend="cpu", batch_size=4)
    x = np.repeat(np.load(SEED_INPUT), 16, axis=0)  # 64 images x 128 masks: long enough to see
    started = threading.Event()

    def work():
        started.set()
        ex.explain(x)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    steps = 0
    while t.is_alive():
        steps += 1
    t.join()
    assert steps > 1000, steps


def test_two_threads_share_one_explainer(seed):
    x = np.load(SEED_INPUT)
    rng = np.random.default_rng(1)
    inputs = [x, (x + rng.standard_normal(x.shape).astype(np.float32) * 0.3)]
    expected = [seed.explain(inputs[0]), seed.explain(inputs[1], targets=[2, 1, 0, 2])]
    results = {}

    def run(k):
        for _ in range(5):
            r = seed.explain(inputs[k], targets=None if k == 0 else [2, 1, 0, 2])
            assert np.array_equal(r.cam, expected[k].cam)
        results[k] = True

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, 1: True}


def test_overlay_and_heatmap(seed):
    res = seed.explain_images(IMAGES[:1])
    over = gradcam.overlay(res.images[0], res.cam[0])
    assert over.shape == (32, 32, 3) and over.dtype == np.uint8
    heat = gradcam.heatmap(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32))
    assert tuple(heat[0, 0]) == (0, 0, 128)  # JET's first entry, as OpenCV (RGB)
    with pytest.raises(gradcam.OptionError, match="non-finite"):
        gradcam.overlay(res.images[0], np.full((32, 32), np.nan, np.float32))
    with pytest.raises(gradcam.InputError):
        gradcam.overlay(res.images[0], np.zeros((8, 8), np.float32))


def test_array_like_inputs(seed):
    x = np.load(SEED_INPUT)
    torch = pytest.importorskip("torch")
    expected = seed.explain(x)
    assert np.array_equal(seed.explain(torch.from_numpy(x)).cam, expected.cam)
    assert np.array_equal(seed.explain(x, targets=np.array(expected.classes)).cam, expected.cam)
    big_endian = x.astype(">f4")
    assert np.array_equal(seed.explain(big_endian).cam, expected.cam)
    with pytest.raises(gradcam.InputError, match="cannot be read as a numpy array"):
        seed.explain(torch.from_numpy(x).requires_grad_())


def test_encoded_images_equal_files(seed):
    files = seed.explain_images(IMAGES)
    blobs = [p.read_bytes() for p in IMAGES]
    res = seed.explain_encoded(blobs[:1] + [b"not an image"] + blobs[1:], names=["a", "junk", "b", "c"])
    assert list(res.ok) == [True, False, True, True] and "input junk:" in res.failures[1]
    assert np.array_equal(res.cam[[0, 2, 3]], files.cam)
    assert seed.explain_encoded(blobs).failures == [None] * 3
    with pytest.raises(gradcam.InputError, match="list of encoded images"):
        seed.explain_encoded(blobs[0])


def test_digest_tells_every_byte():
    """gradcam._native.digest (the drop-in's check of a model's weights): any one byte changed,
    anywhere, in a buffer of several chunks, changes it; the same bytes give the same digest."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (3 << 20) + 37, dtype=np.uint8)
    d = gradcam._native.digest(data)
    assert d == gradcam._native.digest(data.copy())
    seen = {d}
    for pos in [0, 1, 31, 32, 1 << 20, (1 << 20) + 5, len(data) - 1]:
        changed = data.copy()
        changed[pos] ^= 1
        seen.add(gradcam._native.digest(changed))
    assert len(seen) == 8
    assert gradcam._native.digest(data[:-1]) != d
    swapped = data.copy()
    swapped[[0, 8]] = swapped[[8, 0]]
    assert swapped[0] == data[0] or gradcam._native.digest(swapped) != d


def test_per_layer_maps_equal_one_explainer_per_layer():
    x = np.load(SEED_INPUT)
    bad = x.copy()
    bad[2, 0, 0, 0] = np.nan
    ex = gradcam.Explainer(
        SEED, layer=["conv2", "conv3"], method=["gradcam", "layercam"], backend="cpu", per_layer=True
    )
    res = ex.explain(bad)
    assert set(res.cams) == {(m, layer) for m in ("gradcam", "layercam") for layer in ("conv2", "conv3")}
    for layer in ("conv2", "conv3"):
        alone = gradcam.Explainer(SEED, layer=layer, method=["gradcam", "layercam"], backend="cpu").explain(
            bad
        )
        for m in ("gradcam", "layercam"):
            assert np.array_equal(res.cams[(m, layer)], alone.cams[m], equal_nan=True)
    assert list(res.ok) == [True, True, False, True] and np.isnan(res.logits[2]).all()
    assert np.array_equal(res.logits, alone.logits, equal_nan=True)
    one = gradcam.Explainer(SEED, method="gradcam", backend="cpu", per_layer=True).explain(x)
    assert set(one.cams) == {"gradcam"}  # one layer: keyed by method as usual
