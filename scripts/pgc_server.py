"""A minimal pytorch-grad-cam explanation server: the baseline that scripts/bench_serve.py drives
with the same requests as `gradcam serve`. FastAPI + uvicorn, one request at a time through the
model (no batching across requests), KServe V1 shape:

    python scripts/pgc_server.py --arch resnet18 --weights W.safetensors --layer layer4 --port 8080

    POST /v1/models/NAME:explain  {"instances": [{"b64": "<base64 PNG/JPEG>"}, ...]}
      -> {"explanations": [{"class": int, "probability": float, "cam": [[H rows of W floats]]}]}
    GET /v2/health/ready          -> 200

Images are decoded with PIL (.convert("RGB")) and preprocessed as torchvision's ImageNet eval
transform; the request's instances form one batch; GradCAM explains each image's top class;
`probability` is that class's softmax. Prints `listening on http://127.0.0.1:PORT` to stderr
once it serves (--port 0 picks a free port).
"""

import argparse
import base64
import binascii
import io
import signal
import socket
import sys
import threading
from contextlib import asynccontextmanager

import torch
import torchvision
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pgc_compat import import_gradcam
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from safetensors.torch import load_file
from torchvision import transforms


class Instance(BaseModel):
    b64: str


class ExplainRequest(BaseModel):
    instances: list[Instance]


PREPROCESS = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)


def decode(instance):
    try:
        image = Image.open(io.BytesIO(base64.b64decode(instance.b64, validate=True)))
        return PREPROCESS(image.convert("RGB"))
    except (binascii.Error, UnidentifiedImageError, OSError) as e:
        raise HTTPException(status_code=400, detail=f"cannot decode the image: {e}") from e


def make_app(name, model, layer, device):
    GradCAM, _ = import_gradcam()
    cam = GradCAM(model=model, target_layers=[layer])
    # The hooks of a GradCAM (and of the model) see every forward pass: one request at a time.
    lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app):
        print(f"listening on http://{app.state.address}", file=sys.stderr, flush=True)
        yield
        cam.activations_and_grads.release()

    app = FastAPI(lifespan=lifespan)

    @app.get("/v2/health/ready")
    def ready():
        return {}

    # A sync endpoint: FastAPI runs it in its thread pool, so decoding overlaps other requests.
    @app.post("/v1/models/{target}")
    def explain(target: str, body: ExplainRequest):
        model_name, _, verb = target.rpartition(":")
        if model_name != name or verb != "explain":
            raise HTTPException(status_code=404, detail=f"no route {target}")
        if not body.instances:
            raise HTTPException(status_code=400, detail="no instances")
        x = torch.stack([decode(i) for i in body.instances]).to(device)
        with lock:
            cams = cam(input_tensor=x, targets=None)
            probs = torch.softmax(cam.outputs.detach(), dim=1)
        top = probs.argmax(dim=1)
        explanations = [
            {"class": int(c), "probability": float(p[c]), "cam": m.tolist()}
            for c, p, m in zip(top.tolist(), probs.cpu(), cams)
        ]
        # JSONResponse directly: FastAPI's jsonable_encoder would walk the 50k floats of a map.
        return JSONResponse({"explanations": explanations})

    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet18", help="torchvision model name")
    ap.add_argument("--weights", required=True, help="safetensors state dict of --arch")
    ap.add_argument("--layer", default="layer4", help="target layer (module name)")
    ap.add_argument("--name", default=None, help="model name in the URL (default: --arch)")
    ap.add_argument("--port", type=int, default=8080, help="0: a free port")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = getattr(torchvision.models, args.arch)(weights=None)
    model.load_state_dict(load_file(args.weights))
    model.eval().to(device)
    app = make_app(args.name or args.arch, model, model.get_submodule(args.layer), device)

    # Bound here so that --port 0's port is known before the line is printed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    host, port = sock.getsockname()
    app.state.address = f"{host}:{port}"
    # uvicorn shuts down gracefully on SIGTERM, then raises it again: exit 0 then, as `gradcam serve`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
