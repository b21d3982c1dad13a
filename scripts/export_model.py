"""Exports a PyTorch CNN to one safetensors file that gradcam runs without Python (the weights and
the graph JSON in the metadata). The exporter lives in the Python package, python/gradcam/_export.py;
this script loads that file by path (no gradcam build needed, only torch and safetensors) and
re-exports its names, so that `from export_model import export_model` keeps working.

    python scripts/export_model.py package.module:factory [--kwargs JSON] [--input-shape 3,224,224] \
        --out W.safetensors
"""

import importlib.util
import pathlib
import sys

_PATH = pathlib.Path(__file__).resolve().parent.parent / "python" / "gradcam" / "_export.py"
_NAME = "_gradcam_export"


def _load():
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NAME]
        raise
    return module


_export = _load()
globals().update({k: v for k, v in vars(_export).items() if not k.startswith("__")})

if __name__ == "__main__":
    _export.main()
