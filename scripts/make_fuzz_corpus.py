"""Writes the seed corpus of tests/fuzz.rs under tests/fixtures/fuzz/: small valid files of
every kind the tool parses from untrusted bytes, plus a few known-bad ones. The fuzz targets
mutate these (and a few fixtures) at random. Needs numpy and Pillow; deterministic.

    python scripts/make_fuzz_corpus.py
"""

import io
import json
import os
import struct

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "fuzz")


def put(kind, name, data):
    os.makedirs(os.path.join(ROOT, kind), exist_ok=True)
    with open(os.path.join(ROOT, kind, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def f32(a):
    return np.asarray(a, dtype="<f4").tobytes()


rng = np.random.default_rng(17)
# A seed-cnn-shaped model too small to be useful, but with every tensor name and rank.
seed = {
    "conv1.weight": ("F32", [2, 3, 5, 5], f32(rng.standard_normal((2, 3, 5, 5)) * 0.1)),
    "conv1.bias": ("F32", [2], f32([0.1, -0.1])),
    "conv2.weight": ("F32", [64, 2, 5, 5], f32(rng.standard_normal((64, 2, 5, 5)) * 0.1)),
    "conv2.bias": ("F16", [64], np.zeros(64, "<f2").tobytes()),
    "conv3.weight": (
        "BF16",
        [16, 64, 3, 3],
        (np.ones((16, 64, 3, 3), "<f4").view("<u4") >> 16).astype("<u2").tobytes(),
    ),
    "conv3.bias": ("F32", [16], f32(np.zeros(16))),
    "fc1.weight": ("F32", [4, 16], f32(rng.standard_normal((4, 16)))),
    "fc1.bias": ("F32", [4], f32(np.zeros(4))),
    "fc2.weight": ("F32", [3, 4], f32(rng.standard_normal((3, 4)))),
    "fc2.bias": ("F32", [3], f32(np.zeros(3))),
}
put("safetensors", "tiny_seed_cnn.safetensors", safetensors(seed, {"format": "pt"}))
put("safetensors", "empty.safetensors", safetensors({}))
put(
    "safetensors",
    "integers.safetensors",
    safetensors(
        {
            "bn.num_batches_tracked": ("I64", [], struct.pack("<q", 7)),
            "mask": ("BOOL", [3], b"\x01\x00\x01"),
            "w": ("F32", [2, 2], f32([1, 2, 3, 4])),
        }
    ),
)
put("safetensors", "f64.safetensors", safetensors({"w": ("F64", [2], np.ones(2, "<f8").tobytes())}))
put("safetensors", "nan.safetensors", safetensors({"w": ("F32", [3], f32([1, float("nan"), 2]))}))
put(
    "safetensors",
    "scalar_and_zero.safetensors",
    safetensors(
        {
            "s": ("F32", [], f32([1.5])),
            "z": ("F32", [0, 4], b""),
        }
    ),
)


def npy(arr, version=(1, 0), fortran=False):
    b = io.BytesIO()
    np.lib.format.write_array(b, np.asfortranarray(arr) if fortran else arr, version=version)
    return b.getvalue()


put("npy", "x_1_3_4_4.npy", npy(rng.standard_normal((1, 3, 4, 4)).astype("<f4")))
put("npy", "v2.npy", npy(np.arange(6, dtype="<f4").reshape(2, 3), version=(2, 0)))
put("npy", "v3.npy", npy(np.arange(4, dtype="<f4"), version=(3, 0)))
put("npy", "scalar.npy", npy(np.float32(3.5)))
put("npy", "empty.npy", npy(np.zeros((0, 3, 2, 2), "<f4")))
put("npy", "fortran.npy", npy(np.arange(6, dtype="<f4").reshape(2, 3), fortran=True))
put("npy", "f8.npy", npy(np.arange(3, dtype="<f8")))

y, x = np.mgrid[0:12, 0:16]
rgb = np.stack([x * 16, y * 20, (x + y) * 9], -1).astype("uint8")


def save(name, img, **kw):
    b = io.BytesIO()
    img.save(b, **kw)
    put("images", name, b.getvalue())


save("rgb.png", Image.fromarray(rgb), format="PNG")
save("gray.png", Image.fromarray(rgb[..., 0]), format="PNG")
save("rgba.png", Image.fromarray(np.dstack([rgb, rgb[..., :1]])), format="PNG")
save("palette.png", Image.fromarray(rgb).convert("P"), format="PNG")
save("gray16.png", Image.fromarray(rgb[..., 0].astype("uint16") * 257), format="PNG")
save("baseline.jpg", Image.fromarray(rgb), format="JPEG", quality=80)
save("gray.jpg", Image.fromarray(rgb[..., 1]), format="JPEG", quality=80)
save("bmp24.bmp", Image.fromarray(rgb), format="BMP")
save("tiff.tif", Image.fromarray(rgb), format="TIFF")
yy, xx = np.mgrid[0:24, 0:32]
prog = np.stack([(xx * 8) % 256, (yy * 10) % 256, ((xx + yy) * 5) % 256], -1).astype("uint8")
# tests/robustness.rs cuts this one in half (the image crate writes no progressive JPEGs).
save("progressive.jpg", Image.fromarray(prog), format="JPEG", quality=85, progressive=True)
save("lossless.webp", Image.fromarray(rgb), format="WEBP", lossless=True)

put("labels", "cifar10.txt", b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
put("labels", "crlf_bom.txt", "\ufeffa\r\nb\r\nc\r\n\r\n".encode())
put("labels", "gap.txt", b"a\n\nb\n")
put("labels", "latin1.txt", b"caf\xe9\nb\nc\n")
