"""Exports a PyTorch CNN to one safetensors file that gradcam runs without Python: the state_dict
(the tensors) and the graph that connects them, as JSON in the safetensors metadata
(key "gradcam.graph"; the schema is documented in docs/models.md, "The graph schema").

This module imports only torch and safetensors, never the rest of the gradcam package, so it
also loads by file path where the native module is not built: scripts/export_model.py is a
thin command line over it.

    python scripts/export_model.py package.module:factory [--kwargs JSON] [--input-shape 3,224,224] \
        --out W.safetensors

or, from Python:

    from gradcam._export import export_model, export_bytes
    export_model(model, "W.safetensors", input_shape=(3, 224, 224))
    data = export_bytes(model, input_shape=(3, 224, 224))  # the same file's bytes, nothing written

(`from export_model import export_model` still works with scripts/ on sys.path.)

How: torch.fx traces the model in eval mode with a leaf rule that keeps PyTorch's module paths.
Modules the exporter converts (nn.Conv2d, nn.BatchNorm2d, the activations, pools, nn.Linear, ...,
matched by exact class) and modules without children are leaves: one op each, named by their
path. Every other module (a block, a stage, an nn.Sequential, an nn.Conv2d subclass with a
padding child as TensorFlow ports have) is traced into, and the tracer records the value its
forward returns under its path, so blocks and stages are Grad-CAM targets too, and the
functional calls inside it (F.relu, torch.cat, x.mean((2, 3)), F.pad, ...) belong to it.
One eval forward on a random input of `input_shape` gives every value's shape (size() calls
become constants). The exported graph is run once more, here, by a small torch interpreter of
the schema, and must reproduce the model's logits before anything is written.

What cannot be exported fails with one ExportError naming the op, its module path and what is
supported.
"""

import argparse
import contextlib
import importlib
import json
import math
import operator
import sys

import torch
import torch.nn.functional as F
from torch import fx, nn

SCHEMA = 1
METADATA_KEY = "gradcam.graph"


def _error_base():
    """gradcam.ModelError (a gradcam.Error and a ValueError) when this module is loaded as
    gradcam._export, from the package's native-free gradcam/_errors.py; else, loaded by path
    (scripts/export_model.py, no gradcam build), Exception: importing the package from here would
    load the native module."""
    if not __package__:
        return Exception
    try:
        from ._errors import ModelError

        return ModelError
    except ImportError:
        package = sys.modules.get(__package__)
        base = getattr(package, "ModelError", None) or getattr(package, "Error", None)
        return base if isinstance(base, type) and issubclass(base, Exception) else Exception


class ExportError(_error_base()):
    """One unexportable thing: the op, its module path, what is supported."""


# ----------------------------------------------------------------------------------------------
# What the exporter knows.

# Activations: the schema's op name, and its parameters from a module or a functional call.
ACT_MODULES = {
    nn.ReLU: ("relu", lambda m: {}),
    nn.ReLU6: ("relu6", lambda m: {}),
    nn.Hardswish: ("hardswish", lambda m: {}),
    nn.Hardsigmoid: ("hardsigmoid", lambda m: {}),
    nn.SiLU: ("silu", lambda m: {}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.GELU: ("gelu", lambda m: _gelu(m.approximate)),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": float(m.negative_slope)}),
    nn.ELU: ("elu", lambda m: {"alpha": float(m.alpha)}),
    nn.Hardtanh: ("hardtanh", lambda m: {"min_val": float(m.min_val), "max_val": float(m.max_val)}),
}
ACT_FUNCTIONS = {
    F.relu: "relu",
    torch.relu: "relu",
    F.relu6: "relu6",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    F.silu: "silu",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    F.gelu: "gelu",
    F.leaky_relu: "leaky_relu",
    F.elu: "elu",
    F.hardtanh: "hardtanh",
}
ACT_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d)
EXACT_LEAVES = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.Linear,
    nn.LayerNorm,
    nn.Flatten,
    nn.ChannelShuffle,
    *ACT_MODULES,
    *IDENTITY_MODULES,
    *POOL_MODULES,
    *PAD_MODULES,
)


def _identity_classes():
    """Stochastic depth / drop path modules of torchvision and timm: the identity in eval."""
    out = []
    try:
        from torchvision.ops import StochasticDepth

        out.append(StochasticDepth)
    except ImportError:
        pass
    try:
        from timm.layers import DropPath

        out.append(DropPath)
    except ImportError:
        pass
    return tuple(out)


EXTRA_IDENTITY = _identity_classes()
SUPPORTED = (
    "modules: Conv2d (zero padding), BatchNorm2d, LayerNorm (last axis), Linear, ReLU, ReLU6, "
    "Hardswish, Hardsigmoid, SiLU, Sigmoid, Tanh, GELU (exact), LeakyReLU, ELU, Hardtanh, MaxPool2d, "
    "AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, ZeroPad2d (before a conv), Flatten, ChannelShuffle, "
    "Dropout, Identity, StochasticDepth, DropPath; functions: the same as F.*, torch.cat, +, *, - and / "
    "with a scalar, x.mean((2, 3)), flatten / view(N, -1), permute, chunk / split / slicing along "
    "channels, F.pad (zeros, before a conv), the view-transpose-view channel shuffle"
)


def _gelu(approximate):
    if approximate != "none":
        raise ExportError(f"GELU(approximate='{approximate}'): only the exact (erf) GELU is supported")
    return {}


def _pair(v):
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


# ----------------------------------------------------------------------------------------------
# Tracing.


class PathTracer(fx.Tracer):
    """Leaves: the classes the exporter converts, and modules without children. Every other module
    is traced into, and the value its forward returns is recorded under its path (first call)."""

    def __init__(self):
        super().__init__()
        self.outputs = {}

    def is_leaf_module(self, m, qualname):
        if type(m) in EXACT_LEAVES or isinstance(m, EXTRA_IDENTITY):
            return True
        if isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward:
            return True  # a subclass that only adds init code
        if len(list(m.children())) == 0:
            # a childless module of torch.nn is an op this exporter does not know (reported when
            # converted); a childless custom module (LayerNorm2d, Permute) is traced into
            return type(m).__module__.startswith("torch.nn")
        return False

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        name = self.path_of_module(m)
        if isinstance(out, fx.Proxy):
            self.outputs.setdefault(name, out.node)
        else:
            self.outputs.setdefault(name, None)
        return out


class Recorder(fx.Interpreter):
    """One forward that keeps every node's concrete value (tensors, and the ints of size())."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        v = super().run_node(n)
        self.values[n] = v
        return v


# ----------------------------------------------------------------------------------------------
# Converting fx nodes to the schema's ops.


class Pending:
    """A value that is not yet an op of the graph: a padding waiting for its conv, the 5-D view of a
    channel shuffle, a channel picked by an integer index (x[:, i], unsqueezed back)."""

    def __init__(self, kind, src, **kw):
        self.kind, self.src, self.kw = kind, src, kw


class Converter:
    def __init__(self, gm, values, param_names, module_of):
        self.gm = gm
        self.values = values  # fx node -> concrete value
        self.param_names = param_names  # id(tensor) -> state_dict key
        self.module_of = module_of  # fx node -> module path (or None)
        self.nodes = []
        self.extra = {}  # tensors computed from parameters alone (a reshaped gamma): key -> tensor
        self.env = {}  # fx node -> value name | Pending | ("param", key) | python constant | list
        self.used = set()

    # --- helpers
    def where(self, n):
        m = self.module_of(n)
        return f"'{n.target if isinstance(n.target, str) else getattr(n.target, '__name__', n.target)}'" + (
            f" at module path '{m}'" if m else " (no module path)"
        )

    def fail(self, n, what):
        raise ExportError(f"cannot export {self.where(n)}: {what}. Supported: {SUPPORTED}")

    def shape(self, n):
        v = self.values[n]
        return list(v.shape)

    def emit(self, n, op, inputs, params=None, tensors=None, module=None):
        name = n.name if not any(x["name"] == n.name for x in self.nodes) else f"{n.name}_{len(self.nodes)}"
        for t in (tensors or {}).values():
            self.used.add(t)
        self.nodes.append(
            {
                "name": name,
                "op": op,
                "inputs": inputs,
                "params": params or {},
                "tensors": tensors or {},
                "module": module if module is not None else self.module_of(n),
            }
        )
        return name

    def val(self, n, a):
        """The graph value name of argument `a` of node n (a tensor)."""
        v = self.env.get(a) if isinstance(a, fx.Node) else None
        if isinstance(v, str):
            return v
        if isinstance(v, Pending):
            if v.kind == "pad":
                self.fail(n, "F.pad / ZeroPad2d is supported only directly before a convolution")
            self.fail(n, f"a {v.kind} used other than as supported")
        self.fail(n, f"argument {a!r} is not a tensor computed by the graph")

    def const(self, a):
        if isinstance(a, fx.Node):
            v = self.env.get(a)
            if isinstance(v, (str, Pending)) or (isinstance(v, tuple) and v and v[0] == "param"):
                raise KeyError
            return v
        if isinstance(a, (list, tuple)):
            return type(a)(self.const(x) for x in a)
        return a

    def is_tensor(self, a):
        return isinstance(a, fx.Node) and isinstance(self.env.get(a), (str, Pending))

    def param_key(self, a):
        if isinstance(a, fx.Node):
            v = self.env.get(a)
            if isinstance(v, tuple) and v and v[0] == "param":
                return v[1]
        return None

    def arg(self, n, i, kw, default=None):
        if len(n.args) > i:
            return n.args[i]
        return n.kwargs.get(kw, default)

    # --- ops
    def conv(self, n, x, weight_key, bias_key, stride, padding, dilation, groups, kernel, module):
        pad = [0, 0, 0, 0]  # top, left, bottom, right
        v = self.env.get(x)
        if isinstance(v, Pending) and v.kind == "pad":
            pad = list(v.kw["pad"])
            x_name = v.src
        else:
            x_name = self.val(n, x)
        if isinstance(padding, str):
            if padding == "valid":
                p = [0, 0, 0, 0]
            else:  # 'same' (stride 1): torch puts the odd pixel at the end
                tot = [dilation[i] * (kernel[i] - 1) for i in range(2)]
                p = [tot[0] // 2, tot[1] // 2, tot[0] - tot[0] // 2, tot[1] - tot[1] // 2]
        else:
            ph, pw = _pair(padding)
            p = [ph, pw, ph, pw]
        pad = [a + b for a, b in zip(pad, p)]
        tensors = {"weight": weight_key}
        if bias_key:
            tensors["bias"] = bias_key
        return self.emit(
            n,
            "conv2d",
            [x_name],
            {
                "kernel": list(kernel),
                "stride": _pair(stride),
                "padding": pad,
                "dilation": _pair(dilation),
                "groups": int(groups),
            },
            tensors,
            module,
        )

    def binary(self, n, op, a, b):
        """a op b for op in add, mul, sub, truediv; tensor-tensor, tensor-param or tensor-scalar."""
        ta, tb = self.is_tensor(a), self.is_tensor(b)
        if not ta and not tb:
            pa, pb = self.param_key(a), self.param_key(b)
            if pa or pb:
                self.fail(n, "arithmetic between parameters alone")
            return {
                "add": operator.add,
                "mul": operator.mul,
                "sub": operator.sub,
                "truediv": operator.truediv,
            }[op](self.const(a), self.const(b))
        if ta and tb:
            if op in ("add", "mul"):
                return self.emit(n, op, [self.val(n, a), self.val(n, b)])
            self.fail(n, f"'{op}' of two tensors (supported: add, mul)")
        if op in ("sub", "truediv") and not ta:
            self.fail(n, f"a scalar or parameter {op} a tensor")
        x, other = (a, b) if ta else (b, a)
        key = self.param_key(other)
        if key is not None:
            if op not in ("add", "mul"):
                self.fail(n, f"'{op}' with a parameter (supported: add, mul)")
            return self.emit(n, op, [self.val(n, x)], tensors={"other": key})
        s = self.const(other)
        if not isinstance(s, (int, float)):
            self.fail(n, f"'{op}' with {type(s).__name__} {s!r}")
        s = float(s)
        if op == "sub":
            op, s = "add", -s
        elif op == "truediv":
            op, s = "mul", 1.0 / s
        return self.emit(n, op, [self.val(n, x)], {"scalar": s})

    def mean(self, n, x, dims, keepdim):
        rank = len(self.shape(x))
        dims = sorted(d % rank for d in ([dims] if isinstance(dims, int) else dims))
        if rank != 4 or dims != [2, 3]:
            self.fail(
                n, f"mean over dims {dims} of a rank-{rank} tensor (supported: the spatial axes (2, 3))"
            )
        v = self.emit(n, "adaptive_avg_pool2d", [self.val(n, x)], {"output_size": [1, 1]})
        if keepdim:
            return v
        return self.emit(n, "flatten", [v], {"start_dim": 1})

    def slices(self, n, x, sizes, axis):
        start, out = 0, []
        for s in sizes:
            out.append(self.emit(n, "slice", [self.val(n, x)], {"axis": axis, "start": start, "len": s}))
            start += s
        return out

    def act(self, n, name, x, params):
        if name == "gelu":
            params = _gelu(params.get("approximate", "none"))
        return self.emit(n, name, [self.val(n, x)], params)

    def reshape(self, n, x, shape):
        """view / reshape / flatten: a flatten to [N, -1], the second view of a channel shuffle,
        or a view that changes nothing."""
        src = self.shape(x)
        shape = list(self.shape(n))
        v = self.env.get(x)
        if isinstance(v, Pending) and v.kind == "shuffled" and len(shape) == 4:
            return self.emit(n, "channel_shuffle", [v.src], {"groups": v.kw["groups"]})
        if len(src) == 4 and len(shape) == 5 and shape[0] == src[0] and shape[3:] == src[2:]:
            return Pending("view5", self.val(n, x), groups=shape[1])
        if shape == src:
            return self.val(n, x)
        if len(shape) == 2 and shape[0] == src[0]:
            return self.emit(n, "flatten", [self.val(n, x)], {"start_dim": 1})
        self.fail(n, f"a reshape of {src} to {shape} (supported: flatten to [N, -1], the channel shuffle)")

    def derived(self, n):
        """A tensor computed from parameters and constants alone (gamma.reshape(1, -1, 1, 1), a
        standardized conv weight): stored in the file as a tensor of its own."""
        key = f"gradcam.const.{n.name}"
        self.extra[key] = self.values[n].detach().contiguous().clone()
        return ("param", key)

    def from_params_only(self, n):
        args = list(n.args) + list(n.kwargs.values())
        flat = []
        for a in args:
            flat.extend(a if isinstance(a, (list, tuple)) else [a])
        return (
            isinstance(self.values.get(n), torch.Tensor)
            and not any(self.is_tensor(a) for a in flat)
            and any(self.param_key(a) for a in flat)
        )

    def call_function(self, n):
        t, a = n.target, n.args
        if self.from_params_only(n):
            return self.derived(n)
        if t is getattr and isinstance(a[0], fx.Node) and self.is_tensor(a[0]):
            if a[1] in ("shape", "ndim", "dtype", "device", "is_cuda"):
                return getattr(self.values[a[0]], a[1])
            self.fail(n, f"attribute '{a[1]}' of a tensor")
        if getattr(t, "__name__", "") == "_assert":
            return None
        if t in (operator.add, torch.add, operator.iadd):
            return self.binary(n, "add", a[0], a[1])
        if t in (operator.mul, torch.mul, operator.imul):
            return self.binary(n, "mul", a[0], a[1])
        if t in (operator.sub, torch.sub):
            return self.binary(n, "sub", a[0], a[1])
        if t in (operator.truediv, torch.div):
            return self.binary(n, "truediv", a[0], a[1])
        if t in ACT_FUNCTIONS:
            name = ACT_FUNCTIONS[t]
            params = {}
            if name == "leaky_relu":
                params = {"negative_slope": float(self.const(self.arg(n, 1, "negative_slope", 0.01)))}
            elif name == "elu":
                params = {"alpha": float(self.const(self.arg(n, 1, "alpha", 1.0)))}
            elif name == "hardtanh":
                params = {
                    "min_val": float(self.const(self.arg(n, 1, "min_val", -1.0))),
                    "max_val": float(self.const(self.arg(n, 2, "max_val", 1.0))),
                }
            elif name == "gelu":
                params = {"approximate": self.const(n.kwargs.get("approximate", "none"))}
            return self.act(n, name, a[0], params)
        if t in (torch.cat, torch.concat):
            xs = self.const_list(n, a[0])
            rank = len(self.shape(n))
            axis = self.const(self.arg(n, 1, "dim", 0)) % rank
            return self.emit(n, "cat", [self.val(n, x) for x in xs], {"axis": axis})
        if t is torch.flatten:
            return self.flatten(
                n, a[0], self.const(self.arg(n, 1, "start_dim", 0)), self.const(self.arg(n, 2, "end_dim", -1))
            )
        if t is F.adaptive_avg_pool2d or t is F.adaptive_max_pool2d:
            out = self.const(self.arg(n, 1, "output_size"))
            out = _pair(out) if not (isinstance(out, (list, tuple)) and None in out) else None
            if out is None:
                self.fail(n, "adaptive pooling with a None output size")
            op = "adaptive_avg_pool2d" if t is F.adaptive_avg_pool2d else "adaptive_max_pool2d"
            return self.emit(n, op, [self.val(n, a[0])], {"output_size": out})
        if t is F.max_pool2d or t is F.avg_pool2d:
            return self.pool(
                n,
                t is F.max_pool2d,
                a[0],
                *[
                    self.const(self.arg(n, i, k, d))
                    for i, k, d in (
                        (1, "kernel_size", None),
                        (2, "stride", None),
                        (3, "padding", 0),
                        (
                            4,
                            "dilation" if t is F.max_pool2d else "ceil_mode",
                            1 if t is F.max_pool2d else False,
                        ),
                        (5, "ceil_mode" if t is F.max_pool2d else "count_include_pad", t is not F.max_pool2d),
                        (
                            6,
                            "return_indices" if t is F.max_pool2d else "divisor_override",
                            False if t is F.max_pool2d else None,
                        ),
                    )
                ],
            )
        if t is F.conv2d:
            w = self.param_key(self.arg(n, 1, "weight"))
            b = self.arg(n, 2, "bias")
            bk = self.param_key(b) if b is not None else None
            if w is None or (b is not None and bk is None):
                self.fail(n, "F.conv2d whose weight or bias is not a parameter of the model")
            kernel = list(self.values[self.arg(n, 1, "weight")].shape[2:])
            return self.conv(
                n,
                a[0],
                w,
                bk,
                self.const(self.arg(n, 3, "stride", 1)),
                self.const(self.arg(n, 4, "padding", 0)),
                _pair(self.const(self.arg(n, 5, "dilation", 1))),
                self.const(self.arg(n, 6, "groups", 1)),
                kernel,
                None,
            )
        if t is F.batch_norm:
            keys = [
                self.param_key(self.arg(n, i, k))
                for i, k in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))
            ]
            if None in keys or self.const(self.arg(n, 5, "training", False)):
                self.fail(n, "F.batch_norm in training mode or with statistics that are not model buffers")
            return self.emit(
                n,
                "batch_norm",
                [self.val(n, a[0])],
                {"eps": float(self.const(self.arg(n, 7, "eps", 1e-5)))},
                dict(zip(("running_mean", "running_var", "weight", "bias"), keys)),
            )
        if t is F.layer_norm:
            shape = self.const(self.arg(n, 1, "normalized_shape"))
            keys = [self.param_key(self.arg(n, i, k)) for i, k in ((2, "weight"), (3, "bias"))]
            return self.layer_norm(n, a[0], shape, keys, float(self.const(self.arg(n, 4, "eps", 1e-5))))
        if t is F.linear:
            w = self.param_key(self.arg(n, 1, "weight"))
            b = self.param_key(self.arg(n, 2, "bias"))
            if w is None or b is None:
                self.fail(n, "F.linear without a weight and bias of the model")
            return self.emit(n, "linear", [self.val(n, a[0])], tensors={"weight": w, "bias": b})
        if t is F.pad:
            return self.pad(
                n,
                a[0],
                self.const(self.arg(n, 1, "pad")),
                self.const(self.arg(n, 2, "mode", "constant")),
                self.const(self.arg(n, 3, "value", None)),
            )
        if t is torch.permute:
            return self.emit(n, "permute", [self.val(n, a[0])], {"perm": list(self.const(a[1]))})
        if t is torch.transpose:
            return self.transpose(n, a[0], self.const(a[1]), self.const(a[2]))
        if t is torch.unsqueeze:
            return self.unsqueeze(n, a[0], self.const(a[1]))
        if t in (torch.chunk, torch.split):
            return self.method(n, t.__name__, a[0], a[1:], n.kwargs)
        if t is F.dropout or getattr(t, "__name__", "") in ("stochastic_depth", "drop_path"):
            return self.val(n, a[0])
        if t is operator.getitem:
            return self.getitem(n, a[0], a[1])
        if t is F.channel_shuffle or t is torch.channel_shuffle:
            return self.emit(n, "channel_shuffle", [self.val(n, a[0])], {"groups": int(self.const(a[1]))})
        # arithmetic on constants (size() ints)
        if not any(self.is_tensor(x) for x in a) and not any(self.is_tensor(x) for x in n.kwargs.values()):
            try:
                return t(*self.const(tuple(a)), **{k: self.const(v) for k, v in n.kwargs.items()})
            except KeyError:
                pass
        self.fail(n, "an unsupported function")

    def const_list(self, n, xs):
        if isinstance(xs, fx.Node):
            v = self.env.get(xs)
            if isinstance(v, list):
                return v
        return list(xs)

    def flatten(self, n, x, start, end):
        rank = len(self.shape(x))
        if end % rank != rank - 1:
            self.fail(n, "flatten that stops before the last axis")
        if start % rank == 0:
            self.fail(n, "flatten of the batch axis")
        if rank - (start % rank) == 1:
            return self.val(n, x)
        return self.emit(n, "flatten", [self.val(n, x)], {"start_dim": start % rank})

    def pool(self, n, is_max, x, kernel, stride, padding, a4, a5, a6, module=None):
        if is_max:
            dilation, ceil, ret = a4, a5, a6
            if _pair(dilation) != [1, 1] or ret:
                self.fail(n, "max pooling with dilation or return_indices")
        else:
            ceil, cip, div = a4, a5, a6
            if div is not None:
                self.fail(n, "average pooling with divisor_override")
        stride = kernel if stride is None or stride == [] or stride == () else stride
        params = {
            "kernel": _pair(kernel),
            "stride": _pair(stride),
            "padding": _pair(padding),
            "ceil_mode": bool(ceil),
        }
        if not is_max:
            params["count_include_pad"] = bool(cip)
        return self.emit(n, "max_pool2d" if is_max else "avg_pool2d", [self.val(n, x)], params, module=module)

    def layer_norm(self, n, x, shape, keys, eps, module=None):
        rank = len(self.shape(x))
        if len(shape) != 1 or None in keys:
            self.fail(n, "layer_norm over more than the last axis, or without an affine weight and bias")
        return self.emit(
            n,
            "layer_norm",
            [self.val(n, x)],
            {"eps": eps, "axis": rank - 1},
            {"weight": keys[0], "bias": keys[1]},
            module,
        )

    def pad(self, n, x, pad, mode, value):
        if mode != "constant" or (value not in (None, 0, 0.0)) or len(pad) != 4 or min(pad) < 0:
            self.fail(
                n,
                f"padding {list(pad)} mode '{mode}' value {value} (supported: zero padding of H and W, "
                "non-negative, before a convolution)",
            )
        left, right, top, bottom = (int(p) for p in pad)
        v = self.env.get(x)
        base = [0, 0, 0, 0]
        if isinstance(v, Pending) and v.kind == "pad":
            base, src = v.kw["pad"], v.src
        else:
            src = self.val(n, x)
        return Pending("pad", src, pad=[base[0] + top, base[1] + left, base[2] + bottom, base[3] + right])

    def transpose(self, n, x, d0, d1):
        v = self.env.get(x)
        if isinstance(v, Pending) and v.kind == "view5" and sorted((d0 % 5, d1 % 5)) == [1, 2]:
            return Pending("shuffled", v.src, groups=v.kw["groups"])
        rank = len(self.shape(x))
        perm = list(range(rank))
        perm[d0 % rank], perm[d1 % rank] = perm[d1 % rank], perm[d0 % rank]
        return self.emit(n, "permute", [self.val(n, x)], {"perm": perm})

    def unsqueeze(self, n, x, dim):
        v = self.env.get(x)
        if isinstance(v, Pending) and v.kind == "picked" and dim % (len(self.shape(n))) == v.kw["axis"]:
            return v.src
        self.fail(n, "unsqueeze other than of a channel picked by x[:, i]")

    def getitem(self, n, x, idx):
        v = self.env.get(x) if isinstance(x, fx.Node) else None
        if isinstance(v, list):
            return v[self.const(idx)]
        if not self.is_tensor(x):
            return self.const(x)[self.const(idx)]
        idx = self.const(idx)
        idx = idx if isinstance(idx, tuple) else (idx,)
        shape = self.shape(x)
        while len(idx) > 2 and idx[-1] == slice(None):
            idx = idx[:-1]
        if len(idx) == 2 and idx[0] == slice(None):
            c = shape[1]
            if isinstance(idx[1], int):
                i = idx[1] % c
                return Pending(
                    "picked",
                    self.emit(n, "slice", [self.val(n, x)], {"axis": 1, "start": i, "len": 1}),
                    axis=1,
                )
            if isinstance(idx[1], slice) and idx[1].step in (None, 1):
                start, stop, _ = idx[1].indices(c)
                return self.emit(
                    n, "slice", [self.val(n, x)], {"axis": 1, "start": start, "len": stop - start}
                )
        self.fail(n, f"indexing a tensor with {idx} (supported: x[:, i] and x[:, a:b])")

    def method(self, n, name, x, args, kwargs):
        if self.from_params_only(n):
            return self.derived(n)
        if name == "size":
            s = self.values[x].shape if isinstance(x, fx.Node) else None
            return tuple(s) if not args else s[self.const(args[0])]
        if not self.is_tensor(x):
            try:
                return getattr(self.const(x), name)(*self.const(tuple(args)), **kwargs)
            except (KeyError, AttributeError):
                self.fail(n, f"method '{name}' on a non-tensor")
        if name in ("contiguous", "clone", "detach"):
            return self.val(n, x) if not isinstance(self.env.get(x), Pending) else self.env[x]
        if name in ACT_METHODS:
            return self.act(n, ACT_METHODS[name], x, {})
        if name == "mean":
            dims = self.const(args[0] if args else kwargs.get("dim"))
            keep = self.const(args[1] if len(args) > 1 else kwargs.get("keepdim", False))
            return self.mean(n, x, dims, keep)
        if name in ("view", "reshape"):
            return self.reshape(n, x, None)
        if name == "flatten":
            return self.flatten(
                n,
                x,
                self.const(args[0] if args else kwargs.get("start_dim", 0)),
                self.const(args[1] if len(args) > 1 else kwargs.get("end_dim", -1)),
            )
        if name == "permute":
            perm = self.const(
                args[0] if len(args) == 1 and isinstance(args[0], (list, tuple, fx.Node)) else args
            )
            return self.emit(n, "permute", [self.val(n, x)], {"perm": list(perm)})
        if name == "transpose":
            return self.transpose(n, x, self.const(args[0]), self.const(args[1]))
        if name == "unsqueeze":
            return self.unsqueeze(n, x, self.const(args[0]))
        if name in ("chunk", "split"):
            rank = len(self.shape(x))
            axis = self.const(args[1] if len(args) > 1 else kwargs.get("dim", 0)) % rank
            if axis != 1:
                self.fail(n, f"{name} along axis {axis} (supported: channels)")
            parts = self.values[n]
            return self.slices(n, x, [p.shape[1] for p in parts], axis)
        if name in ("add", "mul", "sub", "div"):
            return self.binary(n, {"div": "truediv"}.get(name, name), x, args[0])
        self.fail(n, f"an unsupported method '{name}'")

    def call_module(self, n):
        m = self.gm.get_submodule(n.target)
        path = n.target
        x = n.args[0]
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                self.fail(n, f"Conv2d with padding_mode '{m.padding_mode}' (supported: zeros)")

            def key(f):
                return f"{path}.{f}"

            return self.conv(
                n,
                x,
                key("weight"),
                key("bias") if m.bias is not None else None,
                m.stride,
                m.padding,
                _pair(m.dilation),
                m.groups,
                list(m.kernel_size),
                path,
            )
        if type(m) is nn.BatchNorm2d:
            if not m.track_running_stats or not m.affine:
                self.fail(n, "BatchNorm2d without running statistics or affine parameters")
            return self.emit(
                n,
                "batch_norm",
                [self.val(n, x)],
                {"eps": float(m.eps)},
                {f: f"{path}.{f}" for f in ("running_mean", "running_var", "weight", "bias")},
                path,
            )
        if type(m) is nn.Linear:
            if m.bias is None:
                self.fail(n, "Linear without a bias")
            return self.emit(
                n,
                "linear",
                [self.val(n, x)],
                tensors={"weight": f"{path}.weight", "bias": f"{path}.bias"},
                module=path,
            )
        if type(m) is nn.LayerNorm:
            keys = (
                [f"{path}.weight", f"{path}.bias"]
                if m.elementwise_affine and m.bias is not None
                else [None, None]
            )
            return self.layer_norm(n, x, list(m.normalized_shape), keys, float(m.eps), path)
        if type(m) in ACT_MODULES:
            name, params = ACT_MODULES[type(m)]
            try:
                p = params(m)
            except ExportError as e:
                self.fail(n, str(e))
            return self.emit(n, name, [self.val(n, x)], p, module=path)
        if type(m) is nn.MaxPool2d:
            return self.pool(
                n,
                True,
                x,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                m.ceil_mode,
                m.return_indices,
                path,
            )
        if type(m) is nn.AvgPool2d:
            return self.pool(
                n,
                False,
                x,
                m.kernel_size,
                m.stride,
                m.padding,
                m.ceil_mode,
                m.count_include_pad,
                m.divisor_override,
                path,
            )
        if type(m) in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
            if m.output_size is None or (isinstance(m.output_size, tuple) and None in m.output_size):
                self.fail(n, "adaptive pooling with a None output size")
            op = "adaptive_avg_pool2d" if type(m) is nn.AdaptiveAvgPool2d else "adaptive_max_pool2d"
            return self.emit(n, op, [self.val(n, x)], {"output_size": _pair(m.output_size)}, module=path)
        if type(m) in PAD_MODULES:
            left, right, top, bottom = m.padding
            return self.pad(n, x, [left, right, top, bottom], "constant", getattr(m, "value", 0))
        if type(m) is nn.Flatten:
            return self.flatten(n, x, m.start_dim, m.end_dim)
        if type(m) is nn.ChannelShuffle:
            return self.emit(n, "channel_shuffle", [self.val(n, x)], {"groups": int(m.groups)}, module=path)
        if isinstance(m, IDENTITY_MODULES + EXTRA_IDENTITY) or (type(m) is nn.Sequential and len(m) == 0):
            return self.emit(n, "identity", [self.val(n, x)], module=path)
        self.fail(n, f"an unsupported module {type(m).__module__}.{type(m).__name__}")

    def run(self, graph):
        out = None
        for n in graph.nodes:
            if n.op == "placeholder":
                if self.nodes or "input" in self.env.values():
                    raise ExportError(
                        f"the model takes a second input '{n.target}'; supported: one image tensor"
                    )
                self.env[n] = "input"
            elif n.op == "get_attr":
                t = self.values[n]
                key = self.param_names.get(id(t))
                if key is None:
                    self.env[n] = t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t
                    if isinstance(self.env[n], torch.Tensor):
                        raise ExportError(
                            f"cannot export get_attr '{n.target}': a tensor that is not in the "
                            f"state_dict (a non-persistent buffer or a constant). Supported: {SUPPORTED}"
                        )
                else:
                    self.env[n] = ("param", key)
            elif n.op == "call_function":
                self.env[n] = self.call_function(n)
            elif n.op == "call_method":
                self.env[n] = self.method(n, n.target, n.args[0], n.args[1:], n.kwargs)
            elif n.op == "call_module":
                self.env[n] = self.call_module(n)
            elif n.op == "output":
                res = n.args[0]
                if not isinstance(res, fx.Node):
                    raise ExportError(f"the model returns {type(res).__name__}; supported: one logits tensor")
                out = self.val(n, res)
                if self.values[res].dim() != 2:
                    raise ExportError(
                        f"the model returns a tensor of shape {list(self.values[res].shape)}; "
                        "supported: logits [N, classes]"
                    )
        return out


# ----------------------------------------------------------------------------------------------
# The export.


def trace(model):
    tracer = PathTracer()
    try:
        graph = tracer.trace(model)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001  fx: data-dependent control flow, a Python-level branch on a tensor
        stack = [name for name, _ in tracer.module_stack.values()] if tracer.module_stack else []
        where = f" at module path '{stack[-1]}'" if stack and stack[-1] else ""
        raise ExportError(
            f"torch.fx cannot trace the model{where}: {type(e).__name__}: {str(e).splitlines()[0]} "
            "(data-dependent control flow or a Python-level branch on a tensor cannot be "
            "exported; supported: a forward whose ops do not depend on the values)"
        ) from None
    gm = fx.GraphModule(model, graph)
    return gm, tracer.outputs


def timm_preprocess(model):
    """The evaluation transform of a timm model's pretrained config, when it has one that gradcam's
    transform expresses (resize the shorter side, center crop, bilinear or bicubic)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size, crop_pct = cfg.get("input_size"), cfg.get("crop_pct")
    interp = cfg.get("interpolation")
    if (
        not size
        or size[1] != size[2]
        or not crop_pct
        or interp not in ("bilinear", "bicubic")
        or cfg.get("crop_mode", "center") != "center"
    ):
        return None
    return {
        "resize": math.floor(size[1] / crop_pct),
        "crop": int(size[1]),
        "interpolation": interp,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
    }


PRODUCER = "scripts/export_model.py"


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


@contextlib.contextmanager
def hooks_off(model):
    """The modules' hooks (pytorch-grad-cam's activation hooks, a profiler's) are the caller's
    instruments, not the model: torch.fx would trace into them (a hook that branches on
    `output.requires_grad` cannot be traced) and they would record proxies. They are set aside
    while the model is exported and put back, in order, afterwards."""
    saved = []
    for m in model.modules():
        for attr in _HOOK_DICTS:
            d = getattr(m, attr, None)
            if d:
                saved.append((d, list(d.items())))
                d.clear()
    try:
        yield
    finally:
        for d, items in saved:
            d.update(items)


def export_graph(model, input_shape=(3, 224, 224), batch=2, seed=0, preprocess=None, producer=PRODUCER):
    """The graph of `model` as the schema's dict, and the tensors it adds to the state_dict
    (computed from parameters alone; usually none). `producer` names the writer in the graph's
    "producer" field (followed by the torch version). Puts `model` in eval mode; its hooks do
    not run (see hooks_off)."""
    with hooks_off(model):
        return _export_graph(model.eval(), input_shape, batch, seed, preprocess, producer)


def _export_graph(model, input_shape, batch, seed, preprocess, producer):
    gm, outputs = trace(model)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_shape, generator=g)
    rec = Recorder(gm)
    try:
        with torch.no_grad():
            logits = rec.run(x)
    except Exception as e:  # noqa: BLE001  whatever the model's forward raises, named in the message
        raise ExportError(
            f"the model's forward fails on a random input of shape {list(x.shape)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    if not isinstance(logits, torch.Tensor):
        raise ExportError(f"the model returns {type(logits).__name__}; supported: one logits tensor")
    state = model.state_dict(keep_vars=True)
    param_names = {}
    for k, v in state.items():
        param_names.setdefault(id(v), k)

    def module_of(n):
        if n.op == "call_module":
            return n.target
        stack = n.meta.get("nn_module_stack")
        if stack:
            return list(stack.values())[-1][0] or None
        return None

    conv = Converter(gm, rec.values, param_names, module_of)
    output = conv.run(gm.graph)
    state = {**{k: v.detach() for k, v in state.items()}, **conv.extra}
    names = {n["name"] for n in conv.nodes}
    modules, shapes = [], {}
    for name, m in model.named_modules():
        if not name:
            continue
        node = outputs.get(name)
        v = conv.env.get(node) if node is not None else None
        value = v if isinstance(v, str) and (v in names or v == "input") else None
        if value is not None:
            shapes[value] = list(rec.values[node].shape)
        modules.append({"name": name, "kind": type(m).__name__, "output": value})
    graph = {
        "schema": SCHEMA,
        "producer": f"{producer} (torch {torch.__version__})",
        "model": type(model).__name__,
        "input": {"name": "input", "shape": list(input_shape)},
        "output": output,
        "default_layer": default_layer(modules, conv.nodes, shapes, logits.shape[1]),
        "preprocess": preprocess or timm_preprocess(model),
        "nodes": conv.nodes,
        "modules": modules,
    }
    check(graph, state, x, logits)
    return graph, conv.extra


NOT_DEFAULT = {
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "MaxPool2d",
    "Dropout",
    "Identity",
    "Flatten",
}


def default_layer(modules, nodes, shapes, num_classes):
    """The outermost module whose output is the last spatial (H, W > 1) 4-D value, other than a
    pool or dropout or a classifier's class map (num_classes channels): layer4, features."""
    order = {n["name"]: i for i, n in enumerate(nodes)}
    order["input"] = -1
    best = None
    for m in modules:
        v = m["output"]
        s = shapes.get(v)
        if v is None or s is None or len(s) != 4 or s[2] * s[3] <= 1 or s[1] == num_classes:
            continue
        if m["kind"] in NOT_DEFAULT:
            continue
        if best is None or order[v] > order[best["output"]]:
            best = m
    return best["name"] if best else None


def check(graph, state, x, logits):
    """Runs the exported graph with torch ops and compares it with the model's own forward."""
    y = run_graph(graph, state, x)
    err = float((y - logits).norm() / logits.norm().clamp_min(1e-30))
    if not err < 1e-5:
        raise ExportError(
            f"internal error: the exported graph's logits differ from the model's (relative L2 {err:.2e})"
        )


def run_graph(graph, tensors, x, values=None):
    """A torch interpreter of the schema (the exporter's own check); `values`, if given, receives
    every value by name."""
    env = {graph.get("input", {}).get("name", "input"): x}
    for n in graph["nodes"]:
        ins = [env[i] for i in n["inputs"]]
        p, t = n["params"], {k: tensors[v] for k, v in n["tensors"].items()}
        op = n["op"]
        if op == "conv2d":
            top, left, bottom, right = p["padding"]
            xi = F.pad(ins[0], (left, right, top, bottom))
            y = F.conv2d(xi, t["weight"], t.get("bias"), p["stride"], 0, p["dilation"], p["groups"])
        elif op == "batch_norm":
            y = F.batch_norm(
                ins[0], t["running_mean"], t["running_var"], t["weight"], t["bias"], False, 0.0, p["eps"]
            )
        elif op == "layer_norm":
            xi = ins[0].movedim(p["axis"], -1)
            y = F.layer_norm(xi, xi.shape[-1:], t["weight"], t["bias"], p["eps"]).movedim(-1, p["axis"])
        elif op == "linear":
            y = F.linear(ins[0], t["weight"], t["bias"])
        elif op in ("add", "mul"):
            b = ins[1] if len(ins) > 1 else t["other"] if "other" in t else p["scalar"]
            y = ins[0] + b if op == "add" else ins[0] * b
        elif op == "max_pool2d":
            y = F.max_pool2d(ins[0], p["kernel"], p["stride"], p["padding"], ceil_mode=p["ceil_mode"])
        elif op == "avg_pool2d":
            y = F.avg_pool2d(
                ins[0], p["kernel"], p["stride"], p["padding"], p["ceil_mode"], p["count_include_pad"]
            )
        elif op == "adaptive_avg_pool2d":
            y = F.adaptive_avg_pool2d(ins[0], p["output_size"])
        elif op == "adaptive_max_pool2d":
            y = F.adaptive_max_pool2d(ins[0], p["output_size"])
        elif op == "cat":
            y = torch.cat(ins, p["axis"])
        elif op == "slice":
            y = ins[0].narrow(p["axis"], p["start"], p["len"])
        elif op == "channel_shuffle":
            y = F.channel_shuffle(ins[0], p["groups"])
        elif op == "permute":
            y = ins[0].permute(p["perm"])
        elif op == "flatten":
            y = ins[0].flatten(p["start_dim"])
        elif op == "identity":
            y = ins[0]
        else:
            fn = {
                "relu": F.relu,
                "relu6": F.relu6,
                "hardswish": F.hardswish,
                "hardsigmoid": F.hardsigmoid,
                "silu": F.silu,
                "sigmoid": torch.sigmoid,
                "tanh": torch.tanh,
                "gelu": F.gelu,
                "leaky_relu": F.leaky_relu,
                "elu": F.elu,
                "hardtanh": F.hardtanh,
            }[op]
            y = fn(ins[0], **p)
        env[n["name"]] = y
    if values is not None:
        values.update(env)
    return env[graph["output"]]


def _tensors(model, extra, dtype):
    """The tensors of the file: the state_dict and the derived tensors, on the host, contiguous,
    each its own copy (safetensors refuses tensors that share memory, as tied weights do)."""
    tensors = {}
    for k, v in {**model.state_dict(), **extra}.items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.clone()
    return tensors


def export_model(model, path, input_shape=(3, 224, 224), dtype=None, preprocess=None):
    """Writes `model`'s state_dict and graph to the safetensors file `path`; returns the graph.
    dtype: store float tensors as this dtype (float16, bfloat16); default as they are.
    preprocess: the evaluation transform {"resize", "crop", "interpolation", "mean", "std"}
    (default: a timm model's pretrained config, else none: gradcam then uses ImageNet's)."""
    from safetensors.torch import save_file

    graph, extra = export_graph(model, input_shape, preprocess=preprocess)
    save_file(
        _tensors(model, extra, dtype),
        str(path),
        metadata={METADATA_KEY: json.dumps(graph, separators=(",", ":"))},
    )
    return graph


def export_bytes(model, input_shape=(3, 224, 224), preprocess=None, dtype=None, producer=PRODUCER):
    """What export_model writes, as the bytes of a safetensors file (nothing is written):
    gradcam.Explainer(export_bytes(model), ...) runs it in process."""
    from safetensors.torch import save

    graph, extra = export_graph(model, input_shape, preprocess=preprocess, producer=producer)
    return save(
        _tensors(model, extra, dtype), metadata={METADATA_KEY: json.dumps(graph, separators=(",", ":"))}
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("factory", help="package.module:callable that returns the model (weights loaded)")
    ap.add_argument("--kwargs", default="{}", help="JSON keyword arguments of the factory")
    ap.add_argument(
        "--input-shape", default="3,224,224", help="C,H,W of the example input (default 3,224,224)"
    )
    ap.add_argument(
        "--preprocess",
        default=None,
        help='JSON {"resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [...], "std": [...]}',
    )
    ap.add_argument("--out", required=True, help="the safetensors file to write")
    a = ap.parse_args()
    mod, _, fn = a.factory.partition(":")
    if not fn:
        sys.exit("error: the factory must be package.module:callable")
    try:
        model = getattr(importlib.import_module(mod), fn)(**json.loads(a.kwargs))
    except Exception as e:  # noqa: BLE001  whatever the factory raises, named in the message
        sys.exit(f"error: cannot build the model with {a.factory}(**{a.kwargs}): {type(e).__name__}: {e}")
    if not isinstance(model, nn.Module):
        sys.exit(f"error: {a.factory} returned {type(model).__name__}, not a torch.nn.Module")
    try:
        graph = export_model(
            model,
            a.out,
            tuple(int(s) for s in a.input_shape.split(",")),
            preprocess=json.loads(a.preprocess) if a.preprocess else None,
        )
    except ExportError as e:
        sys.exit(f"error: {e}")
    targets = sum(1 for m in graph["modules"] if m["output"])
    print(
        f"{a.out}: {len(graph['nodes'])} ops, {targets} named layers, default layer {graph['default_layer']}"
    )


if __name__ == "__main__":
    main()
