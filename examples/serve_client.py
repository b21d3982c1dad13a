"""A short client of `gradcam serve` (standard library and numpy only): one image through the
Open Inference Protocol with binary tensors, and through KServe V1.

    gradcam serve --model seed=examples/seed-cnn-shapes.safetensors --port 8080 &
    python examples/serve_client.py --url http://127.0.0.1:8080 --model seed examples/shapes1.png
"""

import argparse
import base64
import http.client
import json
import struct
import urllib.parse

import numpy as np


def post(url, path, body, headers=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})
    r = conn.getresponse()
    data, headers = r.read(), {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {json.loads(data)['error']}")
    return data, headers


def infer_binary(url, model, image: bytes, **parameters):
    """Open Inference Protocol: the image as a binary BYTES element, every output binary."""
    element = struct.pack("<I", len(image)) + image
    header = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": len(element)}}],
        "parameters": {"binary_data_output": True, **parameters},
    }  # fmt: skip
    header = json.dumps(header).encode()
    length = {"Inference-Header-Content-Length": str(len(header))}
    data, headers = post(url, f"/v2/models/{model}/infer", header + element, length)
    n = int(headers["inference-header-content-length"])
    meta, binary = json.loads(data[:n]), data[n:]
    out, at = {}, 0
    for o in meta["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8"}[o["datatype"]]
        out[o["name"]] = np.frombuffer(binary[at : at + size], dtype=dtype).reshape(o["shape"])
        at += size
    return out


def explain_v1(url, model, image: bytes):
    """KServe V1 :explain, JSON with the image in base64."""
    body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]})
    data, _ = post(url, f"/v1/models/{model}:explain", body)
    e = json.loads(data)["explanations"][0]
    return e["class"], e["probability"], np.array(e["cam"], dtype=np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--model", default="seed")
    a = p.parse_args()
    image = open(a.image, "rb").read()
    out = infer_binary(a.url, a.model, image)
    print(f"OIP: class {out['class'][0]}, probability {out['probability'][0]:.3f}, cam {out['cam'].shape}")
    cls, prob, cam = explain_v1(a.url, a.model, image)
    print(f"KServe V1: class {cls}, probability {prob:.3f}, cam {cam.shape}")
    print("same map:", np.array_equal(cam, out["cam"][0]))


if __name__ == "__main__":
    main()
