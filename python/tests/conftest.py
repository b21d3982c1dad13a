"""What several test files share."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli_binary():
    """The command line's binary: $GRADCAM_BIN, or what cargo built (`scripts/test.sh` builds
    target/suite/gradcam)."""
    env = os.environ.get("GRADCAM_BIN")
    candidates = [Path(env)] if env else []
    candidates += [ROOT / "target" / p / "gradcam" for p in ("suite", "release", "debug")]
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail("no gradcam binary: run `cargo build --profile suite` or set GRADCAM_BIN")
