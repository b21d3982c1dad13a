"""The parity fixtures (tests/fixtures/*) through the CLI on a chosen backend: logits and CAMs
of `gradcam explain --backend B` against PyTorch/pytorch-grad-cam's stored outputs, with the
tolerances of tests/parity.rs. Needs only numpy.

    python scripts/gpu_parity.py --bin target/release/gradcam --backend cuda
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}


def load_file(path):
    """A minimal safetensors reader (8-byte header length, JSON header, raw little-endian data),
    so the GPU machine needs no safetensors package."""
    raw = pathlib.Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=DTYPES[meta["dtype"]]).reshape(
            meta["shape"]
        )
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/gradcam")
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--fixtures", default="tests/fixtures")
    ap.add_argument("--conv-kernel", default=None, choices=["v1", "v2", "v3", "v4"])
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="print the errors but exit 0 (for the TF32 kernels, which are not exact)",
    )
    args = ap.parse_args()
    env = None
    if args.conv_kernel:
        import os

        env = dict(os.environ, GRADCAM_CONV_KERNEL=args.conv_kernel)
    tmp = pathlib.Path(tempfile.mkdtemp())
    failures, checked, worst_cam, worst_logits = 0, 0, 0.0, 0.0
    for d in sorted(pathlib.Path(args.fixtures).iterdir()):
        if not (d / "manifest.json").exists():
            continue
        manifest = json.loads((d / "manifest.json").read_text())
        expected = load_file(str(d / "expected.safetensors"))
        x = expected["input"].astype(np.float32)
        np.save(tmp / "x.npy", x)
        for case in manifest["cases"]:
            out = tmp / "out"
            cmd = [
                args.bin,
                "explain",
                "--weights",
                str(d / "model.safetensors"),
                "--input-tensor",
                str(tmp / "x.npy"),
                "--out",
                str(out),
                "--backend",
                args.backend,
                "--layer",
                case["layer"],
            ]
            if case["class"] is not None:
                cmd += ["--class", str(case["class"])]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                print(f"FAIL {d.name:26} {case['layer']:24} {r.stderr.strip()}")
                if checked == 0 and "error: backend" in r.stderr:
                    sys.exit(1)  # the backend cannot start: every case would say the same
                failures += 1
                continue
            classes = [json.loads(line)["class"] for line in r.stdout.splitlines()]
            cams = np.load(out / "cams.npy")
            logits = np.load(out / "logits.npy")
            ref_logits = expected["logits"]
            rel = float(np.linalg.norm(logits - ref_logits) / np.linalg.norm(ref_logits))
            cam_err = float(np.abs(cams - expected[case["cam"]]).max())
            ok = classes == case["classes"] and rel <= 1e-4 and cam_err <= 1e-3 and np.isfinite(cams).all()
            worst_cam, worst_logits = max(worst_cam, cam_err), max(worst_logits, rel)
            print(
                f"{'ok  ' if ok else 'FAIL'} {d.name:26} {case['layer']:24} logits rel L2 {rel:.2e}  "
                f"CAM max abs {cam_err:.2e}  classes {'match' if classes == case['classes'] else 'DIFFER'}"
            )
            failures += not ok
            checked += 1
    kernel = f", conv {args.conv_kernel}" if args.conv_kernel else ""
    print(
        f"parity ({args.backend}{kernel}): {checked} cases, {failures} beyond tolerance; worst CAM max abs "
        f"{worst_cam:.2e} (tol 1e-3), worst logits rel L2 {worst_logits:.2e} (tol 1e-4)"
        + (" [report only]" if args.report_only else "")
    )
    sys.exit(0 if args.report_only and checked else 1 if failures or checked == 0 else 0)


if __name__ == "__main__":
    main()
