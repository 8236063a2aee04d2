"""Canonical op table shared by capture (spelling -> canonical op), the
reference interpreter (canonical op -> torch call) and the runtime.

Contract (docs/CONTRACTS.md §1): every traced spelling of an op maps to one
canonical name; a node's tensor-valued arguments become its `inputs` (in the
signature order below), its other arguments become `attrs` by name. An
optional tensor argument that is absent is written as `attrs[name] = null`, so
a reader can walk the signature and know which inputs are present.
"""
from __future__ import annotations

import operator

# Argument kinds in a canonical signature.
T = "tensor"            # tensor (or absent when optional) -> inputs
TS = "tensor_or_scalar"  # tensor, or a python scalar written as a const tensor -> inputs
A = "attr"              # non-tensor argument -> attrs[name]
VAR = "varargs_attr"    # *args collected into one list attr (permute dims, view shape)

_NO_DEFAULT = object()

# canonical op -> [(name, kind, default)]; defaults are written into attrs so a
# reader never needs PyTorch's defaults. _NO_DEFAULT = required / not written.
SIGNATURES: dict[str, list[tuple[str, str, object]]] = {
    "mm": [("input", T, _NO_DEFAULT), ("mat2", T, _NO_DEFAULT)],
    "bmm": [("input", T, _NO_DEFAULT), ("mat2", T, _NO_DEFAULT)],
    "matmul": [("input", T, _NO_DEFAULT), ("other", T, _NO_DEFAULT)],
    "linear": [("input", T, _NO_DEFAULT), ("weight", T, _NO_DEFAULT), ("bias", T, None)],
    "addmm": [("input", TS, _NO_DEFAULT), ("mat1", T, _NO_DEFAULT), ("mat2", T, _NO_DEFAULT),
              ("beta", A, 1), ("alpha", A, 1)],
    "baddbmm": [("input", TS, _NO_DEFAULT), ("batch1", T, _NO_DEFAULT), ("batch2", T, _NO_DEFAULT),
                ("beta", A, 1), ("alpha", A, 1)],
    "t": [("input", T, _NO_DEFAULT)],
    "transpose": [("input", T, _NO_DEFAULT), ("dim0", A, _NO_DEFAULT), ("dim1", A, _NO_DEFAULT)],
    "permute": [("input", T, _NO_DEFAULT), ("dims", VAR, _NO_DEFAULT)],
    "view": [("input", T, _NO_DEFAULT), ("shape", VAR, _NO_DEFAULT)],
    "reshape": [("input", T, _NO_DEFAULT), ("shape", VAR, _NO_DEFAULT)],
    "contiguous": [("input", T, _NO_DEFAULT), ("memory_format", A, _NO_DEFAULT)],
    "add": [("input", TS, _NO_DEFAULT), ("other", TS, _NO_DEFAULT), ("alpha", A, 1)],
    "sub": [("input", TS, _NO_DEFAULT), ("other", TS, _NO_DEFAULT), ("alpha", A, 1)],
    "mul": [("input", TS, _NO_DEFAULT), ("other", TS, _NO_DEFAULT)],
    "div": [("input", TS, _NO_DEFAULT), ("other", TS, _NO_DEFAULT), ("rounding_mode", A, None)],
    "neg": [("input", T, _NO_DEFAULT)],
    "relu": [("input", T, _NO_DEFAULT), ("inplace", A, False)],
    "gelu": [("input", T, _NO_DEFAULT), ("approximate", A, "none")],
    "tanh": [("input", T, _NO_DEFAULT)],
    "sigmoid": [("input", T, _NO_DEFAULT)],
    "silu": [("input", T, _NO_DEFAULT), ("inplace", A, False)],
    "exp": [("input", T, _NO_DEFAULT)],
    "pow": [("input", TS, _NO_DEFAULT), ("exponent", TS, _NO_DEFAULT)],
    "softmax": [("input", T, _NO_DEFAULT), ("dim", A, _NO_DEFAULT), ("dtype", A, None)],
    "layer_norm": [("input", T, _NO_DEFAULT), ("normalized_shape", A, _NO_DEFAULT),
                   ("weight", T, None), ("bias", T, None), ("eps", A, 1e-5)],
    # eps None (torch's default: the input dtype's epsilon) is written out by capture.
    "rms_norm": [("input", T, _NO_DEFAULT), ("normalized_shape", A, _NO_DEFAULT),
                 ("weight", T, None), ("eps", A, None)],
    "getitem": [("input", T, _NO_DEFAULT), ("index", A, _NO_DEFAULT)],
    "split": [("input", T, _NO_DEFAULT), ("split_size_or_sections", A, _NO_DEFAULT), ("dim", A, 0)],
    "chunk": [("input", T, _NO_DEFAULT), ("chunks", A, _NO_DEFAULT), ("dim", A, 0)],
    "masked_fill": [("input", T, _NO_DEFAULT), ("mask", T, _NO_DEFAULT), ("value", TS, _NO_DEFAULT)],
}

# Keyword spellings that differ from the canonical argument name.
KWARG_ALIASES = {"self": "input", "tensor": "input", "split_size": "split_size_or_sections",
                 "size": "shape", "approximation": "approximate"}

# Spellings whose positional order differs from the canonical signature:
# (canonical op, positional names). Names starting with "_" are dropped.
_SOFTMAX_F = ["input", "dim", "_stacklevel", "dtype"]


def has_default(default) -> bool:
    return default is not _NO_DEFAULT


def _function_table():
    """call_function targets -> (canonical op, positional names or None)."""
    import torch
    import torch.nn.functional as F

    table = {}

    def put(fn, op, positional=None):
        if fn is not None:
            table[fn] = (op, positional)

    for op in ("mm", "bmm", "matmul", "addmm", "baddbmm", "t", "transpose", "permute", "reshape",
               "add", "sub", "mul", "div", "neg", "relu", "tanh", "sigmoid", "exp", "pow",
               "softmax", "split", "chunk", "masked_fill"):
        put(getattr(torch, op, None), op)
    put(getattr(torch, "subtract", None), "sub")
    put(getattr(torch, "multiply", None), "mul")
    put(getattr(torch, "divide", None), "div")
    put(getattr(torch, "true_divide", None), "div")
    put(getattr(torch, "negative", None), "neg")
    put(getattr(torch, "swapaxes", None), "transpose")
    put(getattr(torch, "swapdims", None), "transpose")
    put(getattr(torch, "layer_norm", None), "layer_norm")
    put(getattr(torch, "rms_norm", None), "rms_norm")
    put(operator.matmul, "matmul")
    put(operator.add, "add")
    put(operator.sub, "sub")
    put(operator.mul, "mul")
    put(operator.truediv, "div")
    put(operator.neg, "neg")
    put(operator.pow, "pow")
    put(operator.getitem, "getitem")
    put(F.linear, "linear")
    put(F.relu, "relu")
    put(F.gelu, "gelu")
    put(F.tanh, "tanh")
    put(F.sigmoid, "sigmoid")
    put(F.silu, "silu")
    put(F.softmax, "softmax", _SOFTMAX_F)
    put(F.layer_norm, "layer_norm")
    put(getattr(F, "rms_norm", None), "rms_norm")
    if hasattr(torch, "special") and hasattr(torch.special, "softmax"):
        put(torch.special.softmax, "softmax")
    return table


# Tensor methods (call_method targets) that map to a canonical op.
METHOD_TABLE = {
    "matmul": "matmul", "mm": "mm", "bmm": "bmm", "t": "t", "transpose": "transpose",
    "swapaxes": "transpose", "swapdims": "transpose", "permute": "permute", "view": "view",
    "reshape": "reshape", "contiguous": "contiguous", "add": "add", "sub": "sub",
    "subtract": "sub", "mul": "mul", "multiply": "mul", "div": "div", "divide": "div",
    "true_divide": "div", "neg": "neg", "negative": "neg", "relu": "relu", "tanh": "tanh",
    "sigmoid": "sigmoid", "exp": "exp", "pow": "pow", "softmax": "softmax", "split": "split",
    "chunk": "chunk", "masked_fill": "masked_fill", "addmm": "addmm", "baddbmm": "baddbmm",
    "__matmul__": "matmul", "__add__": "add", "__sub__": "sub", "__mul__": "mul",
    "__truediv__": "div", "__neg__": "neg", "__pow__": "pow", "__getitem__": "getitem",
}

_FUNCTION_TABLE = None


def function_table():
    global _FUNCTION_TABLE
    if _FUNCTION_TABLE is None:
        _FUNCTION_TABLE = _function_table()
    return _FUNCTION_TABLE


def qualified_function_name(fn) -> str:
    """A stable dotted spelling for a call_function target (torch.cumsum, operator.add, ...)."""
    import torch
    import torch.nn.functional as F

    name = getattr(fn, "__name__", None) or repr(fn)
    for prefix, namespace in (("torch.nn.functional", F), ("torch", torch), ("operator", operator)):
        try:
            if getattr(namespace, name, None) is fn:
                return f"{prefix}.{name}"
        except Exception:  # pragma: no cover - exotic namespaces
            pass
    if hasattr(torch, "special") and getattr(torch.special, name, None) is fn:
        return f"torch.special.{name}"
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", name)
    return f"{module}.{qual}" if module else qual


def qualified_module_name(cls) -> str:
    import torch

    if getattr(torch.nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"
