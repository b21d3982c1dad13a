"""Load benchmark of `gradcam serve` (not a test; no thresholds): closed-loop clients against
our server, the same Grad-CAM batch in process (`gradcam bench`), and a pytorch-grad-cam
FastAPI server (scripts/pgc_server.py) with the same weights, threads and requests.

    cargo build --release && pip install fastapi uvicorn
    python scripts/bench_serve.py --threads 2 --duration 20 --concurrency 1 4 16
    python scripts/bench_serve.py --device cuda --gradcam-args="--backend cuda"  # GPU
    GRADCAM_BIN=/path/to/gradcam python scripts/bench_serve.py --skip-pgc

For each concurrency c, c threads each send one-image requests (POST /v1/models/NAME:explain,
KServe V1, PNG/JPEG 320x240) back to back on a keep-alive connection for --duration seconds,
after --warmup requests each. images/s: 200 responses / wall time; p50/p99: per-request
latency in ms; errors: non-200 answers or failed connections. `in-process` is `gradcam bench`'s
Grad-CAM images/s at batch --max-batch (the server's ceiling); `vs in-process` and `vs pgc`
are our images/s over that and over the pytorch-grad-cam server's. The load generator runs on
the same machine and takes CPU from the server (its CPU seconds are in the JSON).
"""

import argparse
import atexit
import base64
import http.client
import io
import json
import os
import pathlib
import queue
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy
import torch
import torchvision
from compare_speed import DEFAULT_LAYER, cpu_model
from models import save_weights
from PIL import Image

SCRIPTS = pathlib.Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)")
# gradcam serve options that `gradcam bench` also takes: passed to the in-process run too.
BENCH_SHARED = ("--backend", "--conv-kernel")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_images(n=4, size=(320, 240), seed=0):
    """Deterministic photo-like images (smooth gradients, a few blobs, sensor noise), encoded
    alternately as PNG and JPEG."""
    rng = numpy.random.default_rng(seed)
    w, h = size
    y, x = numpy.mgrid[0:h, 0:w].astype(numpy.float32)
    out = []
    for i in range(n):
        img = numpy.empty((h, w, 3), numpy.float32)
        for ch in range(3):
            a, b, c = rng.uniform(-1, 1, 3)
            img[..., ch] = 128 + 60 * (a * x / w + b * y / h) + 30 * numpy.sin(c * 6 * x / w + ch)
        for _ in range(5):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(15, 60)
            blob = numpy.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
            img += blob[..., None] * rng.uniform(-90, 90, 3)
        img += rng.normal(0, 8, img.shape)
        buf = io.BytesIO()
        fmt = "PNG" if i % 2 == 0 else "JPEG"
        Image.fromarray(img.clip(0, 255).astype(numpy.uint8)).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def request_bodies(images):
    return [
        json.dumps({"instances": [{"b64": base64.b64encode(im).decode("ascii")}]}).encode() for im in images
    ]


def tensor_requests(images):
    """Open Inference Protocol with binary tensors: each image preprocessed here (resize 256,
    crop 224, ImageNet normalization) as FP32 [1, 3, 224, 224]; class and cam back in binary.
    What the in-process bench computes, without decoding: the serving overhead alone."""
    t = torchvision.transforms
    prep = t.Compose(
        [t.Resize(256), t.CenterCrop(224), t.ToTensor(), t.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    out = []
    for im in images:
        x = prep(Image.open(io.BytesIO(im)).convert("RGB")).unsqueeze(0).numpy()
        header = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in ("class", "cam")],
        }  # fmt: skip
        h = json.dumps(header).encode()
        out.append((h + x.tobytes(), {"Inference-Header-Content-Length": str(len(h))}))
    return out


def check_tensor_response(status, body, size):
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    try:
        meta = json.loads(body[: body.index(b"}]}") + 3])
        cam = [o for o in meta["outputs"] if o["name"] == "cam"][0]
        if cam["shape"] != [1, size, size]:
            return f"cam of shape {cam['shape']}"
    except (ValueError, KeyError, IndexError) as err:
        return f"unexpected answer ({err!r}): {body[:200]!r}"
    return None


class Server:
    """A server process that prints `listening on http://HOST:PORT` to stderr when ready;
    stderr is drained by a thread (its last lines are kept for error messages)."""

    def __init__(self, cmd, label, timeout=300):
        self.label = label
        self.lines = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        found = queue.Queue()
        threading.Thread(target=self._drain, args=(found,), daemon=True).start()
        try:
            self.host, self.port = found.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"{label}: no 'listening on' line in {timeout} s:\n{self.tail()}") from None
        if self.host is None:
            raise RuntimeError(f"{label} exited with {self.proc.wait()}:\n{self.tail()}")
        self._wait_ready(timeout)

    def _drain(self, found):
        for line in self.proc.stderr:
            self.lines = self.lines[-50:] + [line.rstrip()]
            m = LISTENING.search(line)
            if m and found is not None:
                found.put((m.group(1), int(m.group(2))))
                found = None
        if found is not None:
            found.put((None, None))

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: /v2/health/ready never answered 200:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self):
        return "\n".join(self.lines[-20:])

    def stop(self):
        """SIGTERM, then the exit status (after the server drains its requests)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def check_response(status, body, size):
    """An error string, or None when the answer is one explanation with a class and a size x
    size map."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    try:
        (e,) = json.loads(body)["explanations"]
        cam = e["cam"]
        int(e["class"])
        if len(cam) != size or any(len(row) != size for row in cam):
            return f"cam of {len(cam)}x{len(cam[0]) if cam else 0}, expected {size}x{size}"
    except (ValueError, KeyError, TypeError) as err:
        return f"unexpected answer ({err!r}): {body[:200]!r}"
    return None


def client(host, port, proto, offset, warmup, start, deadline, size, out):
    """One closed-loop client: `warmup` checked requests, then (after the `start` barrier)
    requests back to back until `deadline`. Appends (latencies, end times, errors, messages)."""
    path, requests, check = proto
    conn = http.client.HTTPConnection(host, port, timeout=120)
    lat, ends, errors, messages = [], [], 0, []

    def send(request):
        nonlocal conn
        body, headers = request
        try:
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=120)
            return None, repr(e).encode()

    for i in range(warmup):
        status, data = send(requests[(offset + i) % len(requests)])
        err = check(status, data, size)
        if err:
            errors += 1
            messages.append(err)
    start.wait()
    i = 0
    while True:
        t = time.perf_counter()
        if t >= deadline[0]:
            break
        status, data = send(requests[(offset + i) % len(requests)])
        done = time.perf_counter()
        i += 1
        # A cheap check per request; the full one ran on the warm-up answers.
        if status == 200 and b'"cam"' in data:
            lat.append(done - t)
            ends.append(done)
        else:
            errors += 1
            if len(messages) < 3:
                messages.append(check(status, data, size) or f"HTTP {status}")
    conn.close()
    out.append((lat, ends, errors, messages))


def load(host, port, proto, concurrency, duration, warmup, size):
    """Runs `concurrency` clients for `duration` seconds; returns the level's numbers."""
    out = []
    deadline, t0, cpu0 = [0.0], [0.0], [0.0]

    def begin():  # once every client is warm, before any is released
        t0[0], cpu0[0] = time.perf_counter(), time.process_time()
        deadline[0] = t0[0] + duration

    start = threading.Barrier(concurrency + 1, action=begin)
    threads = [
        threading.Thread(target=client, args=(host, port, proto, k, warmup, start, deadline, size, out))
        for k in range(concurrency)
    ]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    lat = sorted(x for o in out for x in o[0])
    end = max((x for o in out for x in o[1]), default=t0[0])
    errors = sum(o[2] for o in out)
    messages = [m for o in out for m in o[3]][:5]
    wall = max(end - t0[0], 1e-9)
    p99 = statistics.quantiles(lat, n=100, method="inclusive")[98] if len(lat) > 1 else sum(lat)
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": errors,
        "error_messages": messages,
        "wall_s": wall,
        "images_per_s": len(lat) / wall,
        "p50_ms": statistics.median(lat) * 1e3 if lat else None,
        "p99_ms": p99 * 1e3 if lat else None,
        "client_cpu_s": time.process_time() - cpu0[0],
    }


def drive(server, proto, args, inprocess=None):
    """The load levels against `server`; with `inprocess`, the in-process bench is run right
    before and right after each level, and the level is compared with their mean (a shared
    machine's speed drifts between minutes, so ratios use neighbours)."""
    levels = []
    try:
        for c in args.concurrency:
            before = inprocess() if inprocess else None
            r = load(server.host, server.port, proto, c, args.duration, args.warmup, 224)
            ref = (before + inprocess()) / 2 if inprocess else None
            if ref:
                r["inprocess_images_per_s"] = ref
                r["vs_inprocess"] = r["images_per_s"] / ref
            print(
                f"  {server.label} c={c}: {r['images_per_s']:.2f} images/s, p50 {fmt(r['p50_ms'])} "
                f"ms, p99 {fmt(r['p99_ms'])} ms, {r['errors']} errors"
                + (
                    f"; in-process before and after: {ref:.2f} images/s ({r['vs_inprocess']:.2f}x)"
                    if ref
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
            for m in r["error_messages"]:
                print(f"    {m}", file=sys.stderr)
            levels.append(r)
    finally:
        status = server.stop()
    if status != 0:
        print(f"  {server.label} exited with {status}:\n{server.tail()}", file=sys.stderr)
    return {"levels": levels, "exit_status": status}


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet18", help="torchvision model name (seeded random weights)")
    ap.add_argument("--name", default=None, help="model name in the URL (default: --arch)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--duration", type=float, default=20, help="seconds per concurrency level")
    ap.add_argument("--warmup", type=int, default=3, help="checked requests per client before timing")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-delay-ms", type=int, default=5)
    ap.add_argument("--bench-iters", type=int, default=5, help="`gradcam bench --iters`")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the pgc server's device")
    ap.add_argument(
        "--gradcam-args",
        default="",
        help="extra `gradcam serve` arguments, one string (--backend and --conv-kernel also go "
        "to `gradcam bench`)",
    )
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-pgc", action="store_true")
    ap.add_argument("--skip-tensor", action="store_true", help="skip our OIP binary-tensor levels")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench_serve.json"))
    args = ap.parse_args()
    name = args.name or args.arch
    binary = os.environ.get("GRADCAM_BIN", str(ROOT / "target" / "release" / "gradcam"))
    extra = shlex.split(args.gradcam_args)
    bench_extra = []
    for i, a in enumerate(extra):
        flag = a.split("=", 1)[0]
        if flag in BENCH_SHARED:
            bench_extra += extra[i : i + (1 if "=" in a else 2)]

    machine = {
        "cpu": cpu_model(),
        "nproc": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg()[0],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
    }
    print(
        f"machine: {machine['cpu']}, nproc {machine['nproc']}, load average "
        f"{machine['load_average']:.1f}; {args.arch}; threads {args.threads}; max batch "
        f"{args.max_batch}, max delay {args.max_delay_ms} ms; {args.duration:g} s per level",
        flush=True,
    )
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_serve."))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    torch.manual_seed(0)
    weights = tmp / f"{args.arch}.safetensors"
    save_weights(getattr(torchvision.models, args.arch)(weights=None).eval(), weights)
    images = make_images()
    json_header = {"Content-Type": "application/json"}
    v1 = (f"/v1/models/{name}:explain", [(b, json_header) for b in request_bodies(images)], check_response)
    result = {"machine": machine, "args": vars(args), "binary": binary, "inprocess": None}

    if not args.skip_ours:
        cmd = [binary, "--threads", str(args.threads), "bench", "--weights", str(weights)]
        cmd += ["--batch", str(args.max_batch), "--iters", str(args.bench_iters), "--json", *bench_extra]
        print(f"in-process: {shlex.join(cmd)}", file=sys.stderr, flush=True)

        def inprocess():
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"`gradcam bench` exited with {run.returncode}:\n{run.stderr}")
            result["inprocess"] = json.loads(run.stdout)
            result["inprocess"].pop("kernels", None)
            return result["inprocess"]["gradcam_images_per_s"]

        serve = [binary, "serve", "--model", f"{name}={weights}", "--port", "0"]
        serve += ["--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms)]
        serve += ["--threads", str(args.threads), *extra]
        print(f"ours: {shlex.join(serve)}", file=sys.stderr, flush=True)
        result["ours"] = drive(Server(serve, "gradcam serve"), v1, args, inprocess)
        if not args.skip_tensor:
            oip = (f"/v2/models/{name}/infer", tensor_requests(images), check_tensor_response)
            result["ours_tensor"] = drive(
                Server(serve, "gradcam serve, OIP FP32 binary"), oip, args, inprocess
            )
    if not args.skip_pgc:
        cmd = [sys.executable, str(SCRIPTS / "pgc_server.py"), "--arch", args.arch]
        cmd += ["--weights", str(weights), "--layer", DEFAULT_LAYER[args.arch], "--name", name]
        cmd += ["--port", "0", "--threads", str(args.threads), "--device", args.device]
        print(f"pgc: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        result["pgc"] = drive(Server(cmd, "pgc server"), v1, args)

    print(
        f"{'c':>3} {'ours img/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} {'vs in-proc':>10} "
        f"{'pgc img/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} {'vs pgc':>7}"
    )
    for i, c in enumerate(args.concurrency):
        o = result["ours"]["levels"][i] if "ours" in result else None
        p = result["pgc"]["levels"][i] if "pgc" in result else None
        row = f"{c:3}"
        row += (
            f" {o['images_per_s']:10.2f} {fmt(o['p50_ms']):>8} {fmt(o['p99_ms']):>8} {o['errors']:4}"
            f" {fmt(o.get('vs_inprocess'), '.2f') + 'x':>10}"
            if o
            else f" {'-':>10} {'-':>8} {'-':>8} {'-':>4} {'-':>10}"
        )
        row += (
            f" {p['images_per_s']:10.2f} {fmt(p['p50_ms']):>8} {fmt(p['p99_ms']):>8} {p['errors']:4}"
            if p
            else f" {'-':>10} {'-':>8} {'-':>8} {'-':>4}"
        )
        ratio = o["images_per_s"] / p["images_per_s"] if o and p and p["images_per_s"] else None
        row += f" {fmt(ratio, '.2f') + 'x' if ratio else '-':>7}"
        if o and p:
            o["vs_pgc"] = ratio
        print(row)
    for i, c in enumerate(args.concurrency):
        t = result["ours_tensor"]["levels"][i] if "ours_tensor" in result else None
        if t:
            print(
                f"{c:3} OIP FP32 binary: {t['images_per_s']:.2f} images/s, p50 {fmt(t['p50_ms'])} ms, p99 "
                f"{fmt(t['p99_ms'])} ms, {t['errors']} errors, "
                f"{fmt(t.get('vs_inprocess'), '.2f')}x in-process"
            )
    print(
        "(c: concurrent clients, one 320x240 image per request (KServe V1 JSON, decoded by the "
        f"server), or one preprocessed FP32 tensor (OIP binary); vs in-proc: against `gradcam bench` "
        f"at batch {args.max_batch}, the mean of a run just before and one just after the level)"
    )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
