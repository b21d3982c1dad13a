"""`gradcam serve` from the outside: every endpoint, tritonclient and curl as clients, results
against the command line's, and the behaviour under load and faults. Each test starts the
binary on a free loopback port (`--port 0`) and stops it with SIGTERM; load is bounded in count
and every wait has a timeout.

Tolerances: a request explained in a batch of the same images as the CLI's batch gives the
CLI's maps bit for bit; under concurrent load a request shares its batch with others, and the
CPU kernels' sums over a batch-sized GEMM may round differently, so maps agree to 1e-5 (CAMs
are in [0, 1]) and logits to 1e-5 relative."""

import base64
import concurrent.futures
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_binary

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed-cnn-shapes.safetensors"
SEED_INPUT = ROOT / "examples" / "seed_input.npy"
IMAGES = [ROOT / "examples" / n for n in ("shapes1.png", "shapes2.png", "shapes3.jpg")]
TIMEOUT = 60


class Server:
    def __init__(self, *args, model=f"seed={SEED}"):
        cmd = [
            str(cli_binary()),
            "serve",
            "--model",
            model,
            "--port",
            "0",
            "--backend",
            "cpu",
            "--test-hooks",
        ]
        self.proc = subprocess.Popen([*cmd, *map(str, args)], stderr=subprocess.PIPE, text=True)
        self.log = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        else:
            self.proc.kill()
        assert hasattr(self, "port"), "".join(self.log)
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def request(self, method, path, body=None, headers=None, timeout=TIMEOUT):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def json(self, method, path, body=None, **kw):
        status, headers, data = self.request(method, path, body, **kw)
        return status, json.loads(data) if data else None

    def metrics(self):
        return self.request("GET", "/metrics")[2].decode()

    def rss_kib(self):
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=TIMEOUT)


@pytest.fixture
def server():
    started = []

    def start(*args, **kw):
        s = Server(*args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def b64(path):
    return base64.b64encode(Path(path).read_bytes()).decode()


def images_request(paths, outputs=None, **parameters):
    req = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [len(paths)], "data": [b64(p) for p in paths]}
        ]
    }
    if outputs is not None:
        req["outputs"] = [{"name": n} for n in outputs]
    if parameters:
        req["parameters"] = parameters
    return req


def output(resp, name):
    (o,) = [o for o in resp["outputs"] if o["name"] == name]
    return np.array(o["data"]).reshape(o["shape"])


@pytest.fixture(scope="module")
def cli_maps(tmp_path_factory):
    """The CLI's maps of IMAGES (top class and class 1) and of SEED_INPUT."""
    out = {}
    for key, extra in (("top", []), ("class1", ["--class", "1"])):
        d = tmp_path_factory.mktemp(key)
        subprocess.run(
            [str(cli_binary()), "explain", "--weights", SEED, *IMAGES, "--backend", "cpu", "--save-raw",
             "--out", d, "-q", *extra],
            check=True, timeout=TIMEOUT,
        )  # fmt: skip
        out[key] = np.stack([np.load(next(d.glob(f"{p.stem}*.cam.npy"))) for p in IMAGES])
    d = tmp_path_factory.mktemp("tensor")
    subprocess.run(
        [str(cli_binary()), "explain", "--weights", SEED, "--input-tensor", SEED_INPUT, "--backend", "cpu",
         "--out", d, "-q"],
        check=True, timeout=TIMEOUT,
    )  # fmt: skip
    out["tensor"] = np.load(d / "cams.npy")
    out["tensor_logits"] = np.load(d / "logits.npy")
    return out


def test_health_metadata_and_unknown_paths(server):
    s = server()
    assert s.json("GET", "/v2")[1]["extensions"] == ["binary_tensor_data"]
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/seed/ready",
        "/v2/models/seed/versions/1/ready",
    ):
        assert s.request("GET", path)[0] == 200, path
    status, meta = s.json("GET", "/v2/models/seed")
    assert status == 200 and meta["name"] == "seed" and meta["platform"] == "gradcam"
    assert {o["name"] for o in meta["outputs"]} == {"logits", "class", "probability", "cam", "overlay"}
    assert meta["parameters"]["layer"] == ["conv3"] and meta["parameters"]["image_size"] == [32, 32]
    assert s.json("GET", "/v2/models/seed/versions/1")[1] == meta
    status, err = s.json("GET", "/v2/models/nope")
    assert status == 404 and "no model 'nope'; this server has: seed" in err["error"]
    assert s.request("GET", "/v2/models/seed/versions/2")[0] == 404
    assert s.request("GET", "/v2/nothing/here")[0] == 404
    assert s.json("GET", "/v1/models") == (200, {"models": ["seed"]})
    assert s.json("GET", "/v1/models/seed") == (200, {"name": "seed", "ready": True})
    assert s.request("POST", "/v1/models/seed:train", {})[0] == 404
    assert s.stop() == 0


def test_several_models(server):
    s = server("--model", f"second={SEED},method=hirescam,layer=conv2")
    assert s.json("GET", "/v1/models") == (200, {"models": ["second", "seed"]})
    assert s.json("GET", "/v2/models/second")[1]["parameters"]["method"] == "hirescam"
    a = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES))[1]
    b = s.json("POST", "/v2/models/second/infer", images_request(IMAGES))[1]
    c = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES, method="hirescam", layer="conv2"))[1]
    assert np.array_equal(output(b, "cam"), output(c, "cam"))
    assert not np.array_equal(output(a, "cam"), output(b, "cam"))
    assert any("model 'second'" in line for line in s.log)
    assert s.stop() == 0
    out = subprocess.run(
        [str(cli_binary()), "serve", "--model", f"m={SEED}", "--model", f"m={SEED}", "--port", "0"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert out.returncode != 0 and "two models are called 'm'" in out.stderr


def test_oip_json_equals_the_cli(server, cli_maps):
    s = server()
    status, resp = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES))
    assert status == 200, resp
    assert resp["model_name"] == "seed" and [o["name"] for o in resp["outputs"]] == [
        "logits", "class", "probability", "cam",
    ]  # fmt: skip
    cam = output(resp, "cam").astype(np.float32)
    assert cam.shape == (3, 32, 32)
    assert np.array_equal(cam, cli_maps["top"])  # the CLI's batch: bit for bit
    logits = output(resp, "logits")
    assert list(output(resp, "class")) == list(np.argmax(logits, axis=1))
    # A class for all images, as a parameter and as an INT64 input.
    status, one = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES, **{"class": 1}))
    assert status == 200 and np.array_equal(output(one, "cam").astype(np.float32), cli_maps["class1"])
    req = images_request(IMAGES)
    req["inputs"].append({"name": "class", "datatype": "INT64", "shape": [3], "data": [1, 1, 1]})
    assert np.array_equal(output(s.json("POST", "/v2/models/seed/infer", req)[1], "cam"), output(one, "cam"))
    # A preprocessed tensor (FP32 [N, 3, H, W]), nested data.
    x = np.load(SEED_INPUT)
    req = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}]}
    status, resp = s.json("POST", "/v2/models/seed/infer", req)
    assert status == 200, resp
    assert np.array_equal(output(resp, "cam").astype(np.float32), cli_maps["tensor"])
    assert np.array_equal(output(resp, "logits").astype(np.float32), cli_maps["tensor_logits"])
    # Only class and probability: the forward pass alone, the same numbers.
    status, pred = s.json(
        "POST", "/v2/models/seed/infer", images_request(IMAGES, outputs=["class", "probability"])
    )
    assert status == 200 and [o["name"] for o in pred["outputs"]] == ["class", "probability"]
    assert list(output(pred, "class")) == list(np.argmax(cli_logits(s), axis=1))
    assert s.stop() == 0


def cli_logits(s):
    status, resp = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES, outputs=["logits"]))
    return output(resp, "logits")


def test_overlay_and_other_methods(server, cli_maps):
    s = server()
    status, resp = s.json(
        "POST", "/v2/models/seed/infer",
        images_request(IMAGES[:1], outputs=["cam", "overlay"], method="hirescam", layer=["conv2", "conv3"]),
    )  # fmt: skip
    assert status == 200, resp
    png = base64.b64decode(output(resp, "overlay")[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    out = subprocess.run(
        [str(cli_binary()), "explain", "--weights", SEED, IMAGES[0], "--backend", "cpu",
         "--method", "hirescam",
         "--layer", "conv2,conv3", "--save-raw", "--out", s_tmp(s), "-q"],
        check=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert out.returncode == 0
    cli = np.load(next(Path(s_tmp(s)).glob("shapes1*.cam.npy")))
    assert np.array_equal(output(resp, "cam")[0].astype(np.float32), cli)
    status, err = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES[:1], method="nope"))
    assert status == 400 and "unknown method 'nope'" in err["error"]
    status, err = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES[:1], method="saliency"))
    assert status == 400 and "does not give a CAM" in err["error"]
    status, err = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES[:1], layer="conv9"))
    assert status == 400 and "conv9" in err["error"]
    # The server still answers the default after a failed variant.
    assert s.json("POST", "/v2/models/seed/infer", images_request(IMAGES))[0] == 200
    assert s.stop() == 0


def s_tmp(s):
    d = Path(f"/tmp/gradcam-serve-test-{s.port}")
    d.mkdir(exist_ok=True)
    return d


def test_tritonclient(server, cli_maps):
    import tritonclient.http as httpclient  # the unmodified standard OIP client, from PyPI

    s = server()
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{s.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("seed")
    assert client.get_model_metadata("seed")["name"] == "seed"
    # Encoded images as binary BYTES; every output binary (tritonclient's default).
    images = httpclient.InferInput("image", [3], "BYTES")
    images.set_data_from_numpy(np.array([p.read_bytes() for p in IMAGES], dtype=np.object_), binary_data=True)
    result = client.infer("seed", [images])
    assert np.array_equal(result.as_numpy("cam"), cli_maps["top"])
    assert result.as_numpy("class").dtype == np.int64 and result.as_numpy("class").shape == (3,)
    # A tensor in binary, a class input, outputs chosen: the cam in JSON, the overlay in binary.
    x = np.load(SEED_INPUT)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result = client.infer(
        "seed", [tensor], outputs=[httpclient.InferRequestedOutput("cam", binary_data=False)]
    )
    assert np.array_equal(result.as_numpy("cam"), cli_maps["tensor"])
    cls = httpclient.InferInput("class", [3], "INT64")
    cls.set_data_from_numpy(np.array([1, 1, 1], dtype=np.int64), binary_data=False)
    result = client.infer(
        "seed", [images, cls],
        outputs=[httpclient.InferRequestedOutput("cam"), httpclient.InferRequestedOutput("overlay")],
    )  # fmt: skip
    assert np.array_equal(result.as_numpy("cam"), cli_maps["class1"])
    assert all(bytes(p).startswith(b"\x89PNG") for p in result.as_numpy("overlay"))
    with pytest.raises(Exception, match="no model 'nope'"):
        client.infer("nope", [images])
    client.close()
    assert s.stop() == 0


def test_curl(server, tmp_path):
    s = server()
    body = tmp_path / "req.json"
    body.write_text(json.dumps(images_request(IMAGES[:1], outputs=["class", "probability"])))
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json",
         "--data-binary", f"@{body}",
         f"http://127.0.0.1:{s.port}/v2/models/seed/infer"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + out.stdout
    assert [o["name"] for o in json.loads(out.stdout)["outputs"]] == ["class", "probability"]
    assert s.stop() == 0


def test_the_example_client(server):
    s = server()
    out = subprocess.run(
        [sys.executable, ROOT / "examples" / "serve_client.py",
         "--url", f"http://127.0.0.1:{s.port}", "--model", "seed", IMAGES[0]],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "OIP: class" in out.stdout and "same map: True" in out.stdout, out.stdout
    assert s.stop() == 0


def test_kserve_v1(server, cli_maps):
    s = server()
    status, resp = s.json("POST", "/v1/models/seed:explain", {"instances": [{"b64": b64(p)} for p in IMAGES]})
    assert status == 200, resp
    cams = np.array([e["cam"] for e in resp["explanations"]], dtype=np.float32)
    assert np.array_equal(cams, cli_maps["top"])
    status, pred = s.json(
        "POST", "/v1/models/seed:predict", {"instances": [{"image_bytes": {"b64": b64(p)}} for p in IMAGES]}
    )
    assert status == 200 and [p["class"] for p in pred["predictions"]] == [
        e["class"] for e in resp["explanations"]
    ]
    assert all(len(p["logits"]) == 3 and 0 < p["probability"] <= 1 for p in pred["predictions"])
    # Per-instance classes, overlays, and [C][H][W] arrays.
    body = {"instances": [{"b64": b64(p), "class": 1} for p in IMAGES], "parameters": {"overlay": True}}
    status, resp = s.json("POST", "/v1/models/seed:explain", body)
    assert status == 200
    assert np.array_equal(
        np.array([e["cam"] for e in resp["explanations"]], dtype=np.float32), cli_maps["class1"]
    )
    assert all(base64.b64decode(e["overlay"]).startswith(b"\x89PNG") for e in resp["explanations"])
    x = np.load(SEED_INPUT)
    status, resp = s.json("POST", "/v1/models/seed:explain", {"instances": x.tolist()})
    assert np.array_equal(
        np.array([e["cam"] for e in resp["explanations"]], dtype=np.float32), cli_maps["tensor"]
    )
    for bad in ({}, {"instances": []}, {"instances": [{"b64": "@@"}]}, {"instances": [[[1, 2], [3]]]},
                {"instances": [{"b64": b64(IMAGES[0])}, x[0].tolist()]}):  # fmt: skip
        status, err = s.json("POST", "/v1/models/seed:explain", bad)
        assert status == 400 and err["error"], bad
    assert s.stop() == 0


def test_concurrent_load_equals_the_cli(server, cli_maps):
    """48 requests from 8 threads, each one image with the top class or class 1: each answer is
    the CLI's map of that image, whatever batch it shared."""
    s = server("--max-batch", "8", "--max-delay-ms", "50")
    jobs = [(i % 3, (i // 3) % 2) for i in range(48)]

    def one(job):
        img, fixed = job
        params = {"class": 1} if fixed else {}
        status, resp = s.json("POST", "/v2/models/seed/infer", images_request([IMAGES[img]], **params))
        assert status == 200, resp
        return output(resp, "cam")[0].astype(np.float32)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        cams = list(pool.map(one, jobs, timeout=TIMEOUT))
    for (img, fixed), cam in zip(jobs, cams):
        np.testing.assert_allclose(cam, cli_maps["class1" if fixed else "top"][img], atol=1e-5, rtol=0)
    m = s.metrics()
    batches = int(re.search(r'gradcam_batch_images_count\{model="seed"\} (\d+)', m).group(1))
    assert batches < len(jobs), "no two requests shared a batch"
    assert f'gradcam_requests_total{{model="seed",endpoint="v2_infer",code="200"}} {len(jobs)}' in m
    assert s.stop() == 0


def test_a_full_queue_answers_503_and_memory_stays_steady(server):
    s = server("--max-batch", "1", "--max-queue", "2")
    slow = images_request(IMAGES[:1], test_sleep_ms=300)

    def hit(_):
        return s.request("POST", "/v2/models/seed/infer", json.dumps(slow))

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(hit, range(12), timeout=TIMEOUT))
    codes = [r[0] for r in results]
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    assert set(codes) <= {200, 503}
    busy = [r for r in results if r[0] == 503][0]
    assert busy[1]["retry-after"] == "1" and b"--max-queue 2" in busy[2]
    # A flood of refused requests does not grow the server.
    # One request running and two queued fill it.
    hold = concurrent.futures.ThreadPoolExecutor(3)
    held = [hold.submit(hit, 0) for _ in range(3)]
    time.sleep(0.1)
    before = s.rss_kib()
    body = json.dumps(images_request(IMAGES[:1]))
    refused = 0
    for _ in range(200):
        refused += s.request("POST", "/v2/models/seed/infer", body)[0] == 503
        if all(h.done() for h in held):
            held = [hold.submit(hit, 0) for _ in range(3)]
            time.sleep(0.1)
    after = s.rss_kib()
    hold.shutdown(wait=True)
    assert refused > 100
    assert after - before < 16 * 1024, (before, after)
    assert 'gradcam_dropped_requests_total{model="seed",reason="queue_full"}' in s.metrics()
    assert s.stop() == 0


def png_header(width, height):
    """A PNG whose header declares width x height (its pixel data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_bad_inputs_fail_their_request_only(server):
    s = server("--max-body-bytes", "200000", "--max-image-pixels", "1000000")
    infer = "/v2/models/seed/infer"
    truncated = IMAGES[0].read_bytes()[:200]
    x = np.load(SEED_INPUT)

    def tensor(shape, datatype="FP32", data=None):
        return {"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data or [0.0]}]}

    cases = [
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                      "data": [base64.b64encode(truncated).decode()]}]}, 400, "image 0"),
        (tensor([1, 3, 2, 2], "FP64"), 400, "datatype FP64"),
        (tensor([1, 1, 4, 4], data=[0.0] * 16), 400, "channels"),
        (tensor([1, 3, 4, 4], data=[0.0] * 47), 400, "holds 48 values"),
        (tensor([1, 3, 100000, 100000]), 413, "--max-image-pixels"),
        (tensor([4096, 3, 32, 32]), 413, "--max-batch"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                      "data": [base64.b64encode(png_header(5000, 5000)).decode()]}]},
         413, "--max-image-pixels"),
        ({"inputs": []}, 400, "no image input"),
        ({"inputs": [{"name": "x", "shape": [1]}]}, 400, "not a valid inference request"),
        (images_request(IMAGES[:1], **{"class": 7}), 400, "class 7 is out of range"),
        (images_request(IMAGES[:1], outputs=["heatmap"]), 400, "unknown output 'heatmap'"),
        (tensor(list(x[:1].shape), data=x[:1].ravel().tolist()) | {"outputs": [{"name": "overlay"}]},
         400, "overlay"),
    ]  # fmt: skip
    for body, code, words in cases:
        status, err = s.json("POST", infer, body)
        assert (status, words in err["error"]) == (code, True), (body if len(str(body)) < 300 else words, err)
    status, err = s.json("POST", infer, "{not json")
    assert status == 400 and "not a valid inference request" in err["error"]
    status, err = s.json("POST", infer, "x" * 300_000)
    assert status == 413 and "--max-body-bytes" in err["error"]
    # A NaN pixel (binary data: JSON has no NaN).
    bad = x[:1].copy()
    bad[0, 1, 2, 3] = np.nan
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(bad.shape),
                                     "parameters": {"binary_data_size": bad.nbytes}}]}).encode()  # fmt: skip
    status, _, data = s.request(
        "POST", infer, header + bad.tobytes(), {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400 and b"non-finite input value NaN at [0, 1, 2, 3]" in data
    status, _, data = s.request(
        "POST", infer, header + bad.tobytes()[:-4], {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400 and b"binary data" in data
    # Finite input whose result is not (the network overflows f32): an error, never a map.
    huge = np.full_like(x[:1], 3e38)
    length = {"Inference-Header-Content-Length": str(len(header))}
    status, _, data = s.request("POST", infer, header + huge.tobytes(), length)
    assert status == 422 and b"image 0: the network's logit" in data and b"not finite" in data, data
    # Bad requests sent while good ones run do not touch the good ones' batches.
    good = json.dumps(images_request(IMAGES))
    bad_body = json.dumps(cases[0][0])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(s.request, "POST", infer, good if i % 2 else bad_body) for i in range(16)]
        codes = [f.result(timeout=TIMEOUT)[0] for f in futures]
    assert codes == [400, 200] * 8
    assert s.stop() == 0


def test_timeouts(server):
    s = server("--max-batch", "1")
    status, err = s.json(
        "POST", "/v2/models/seed/infer", images_request(IMAGES[:1], test_sleep_ms=1500, timeout_ms=200)
    )
    assert status == 504 and "200 ms" in err["error"]
    assert s.json("POST", "/v2/models/seed/infer", images_request(IMAGES[:1]))[0] == 200
    assert s.stop() == 0


def test_a_client_that_leaves_costs_only_its_slot(server):
    s = server("--max-batch", "1")
    busy = threading.Thread(
        target=s.request,
        args=("POST", "/v2/models/seed/infer", json.dumps(images_request(IMAGES[:1], test_sleep_ms=800))),
    )
    busy.start()
    time.sleep(0.2)
    body = json.dumps(images_request(IMAGES[:1])).encode()
    with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /v2/models/seed/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.1)
    busy.join(TIMEOUT)
    assert s.json("POST", "/v2/models/seed/infer", images_request(IMAGES[:1]))[0] == 200
    deadline = time.monotonic() + 10
    while 'reason="cancelled"} 1' not in s.metrics():
        assert time.monotonic() < deadline, s.metrics()
        time.sleep(0.05)
    assert s.stop() == 0


def test_a_failing_batch_answers_500_and_the_worker_restarts(server):
    s = server()
    status, err = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES[:1], test_panic=True))
    assert status == 500 and "test_panic" in err["error"] and "restarted" in err["error"]
    status, resp = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES))
    assert status == 200 and output(resp, "cam").shape == (3, 32, 32)
    assert 'gradcam_worker_restarts_total{model="seed"} 1' in s.metrics()
    # A panic in the HTTP handler (outside any batch) is a 500 too, and the server goes on.
    status, err = s.json("POST", "/v2/models/seed/infer", images_request(IMAGES[:1], test_panic_handler=True))
    assert status == 500 and "test_panic_handler" in err["error"]
    assert s.json("POST", "/v1/models/seed:explain", {"instances": [{"b64": b64(IMAGES[0])}]})[0] == 200
    assert s.stop() == 0


def test_sigterm_drains_the_queue_then_exits_0(server):
    s = server("--max-batch", "1")
    body = json.dumps(images_request(IMAGES[:1], test_sleep_ms=200))
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(s.request, "POST", "/v2/models/seed/infer", body) for _ in range(5)]
        deadline = time.monotonic() + 10
        while 'gradcam_queue_images{model="seed"} 4' not in s.metrics():
            assert time.monotonic() < deadline, s.metrics()
            time.sleep(0.02)
        s.proc.send_signal(signal.SIGTERM)
        codes = [f.result(timeout=TIMEOUT)[0] for f in futures]
    assert codes == [200] * 5
    assert s.proc.wait(timeout=TIMEOUT) == 0
    assert any("draining" in line for line in s.log), s.log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()


def test_metrics_and_startup_errors(server, tmp_path):
    s = server()
    s.json("POST", "/v2/models/seed/infer", images_request(IMAGES))
    m = s.metrics()
    for name in ("gradcam_requests_total", "gradcam_request_duration_seconds_bucket",
                 "gradcam_batch_images_bucket", "gradcam_batch_duration_seconds_bucket",
                 "gradcam_queue_images"):  # fmt: skip
        assert name in m, name
    assert m.rstrip().endswith("# EOF")
    assert s.stop() == 0
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    for model, words in (
        (f"m={bad}", "model 'm'"),
        (f"m={SEED},layer=conv9", "conv9"),
        ("m", "NAME=WEIGHTS"),
    ):
        out = subprocess.run(
            [str(cli_binary()), "serve", "--model", model, "--port", "0"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert out.returncode != 0 and "error" in out.stderr and words in out.stderr, out.stderr
