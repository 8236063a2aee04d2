"""Capture: nn.Module / KernelBench file -> FACT graph IR (docs/CONTRACTS.md §1).

    python -m fact.capture FILE.py -o graph.json

The model and its inputs are built on the `meta` device, so capture never
allocates the real (possibly GiB-sized) data; torch.fx traces the module and a
meta / FakeTensor interpreter propagates shapes, dtypes and strides.

Hazard: the runtime (fact.runtime) re-traces a module with `trace()` below and
finds the IR's nodes again by their fx names, and the ids of parameters owned
by call_module nodes and of scalar constants through `IRBuilder`; both sides
must keep using these two functions.
"""
from __future__ import annotations

import argparse
import builtins
import hashlib
import importlib.util
import json
import math
import os
import sys
import traceback
from typing import Any

from . import ops as _ops

IR_VERSION = 1


class CaptureError(Exception):
    """A capture failure with a one-line, user-facing message."""


# ---------------------------------------------------------------------------
# JSON helpers

_DTYPE_NAMES = None


def dtype_name(dtype) -> str:
    global _DTYPE_NAMES
    import torch

    if _DTYPE_NAMES is None:
        _DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                        torch.float64: "float64", torch.int64: "int64", torch.int32: "int32",
                        torch.bool: "bool"}
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def jsonable(value: Any) -> Any:
    """Non-tensor argument -> JSON value. slice -> {"slice": [start, stop, step]},
    Ellipsis -> {"ellipsis": true}, dtype -> its name, anything else -> str."""
    import torch

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)  # JSON has no inf/nan literals
        return value
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, (list, tuple, torch.Size)):
        return [jsonable(v) for v in value]
    if isinstance(value, slice):
        return {"slice": [jsonable(value.start), jsonable(value.stop), jsonable(value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _scalar_dtype(value) -> str:
    # A python scalar behaves like a 0-d "wrapped number": float -> the default
    # float dtype (float32), int -> int64, bool -> bool.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    return "float32"


def _flat_ints(value):
    """A varargs attr (view shape / permute dims) as one flat list: (2, 3),
    [(2, 3)], 6 -> [2, 3] / [6]."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        return value[0]
    if isinstance(value, list):
        return value
    return [value]


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _is_tensor_tuple(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(_is_tensor(v) for v in value)


def _tensor_entry(value) -> dict:
    return {"shape": [int(s) for s in value.shape], "dtype": dtype_name(value.dtype),
            "strides": [int(s) for s in value.stride()]}


# ---------------------------------------------------------------------------
# Tracing

def trace(module):
    """The one tracer capture and runtime share: torch.fx's symbolic tracer
    (torch.nn modules are leaves -> call_module nodes) with buffers proxied,
    so `self.mask[:, :, :T, :T]` with a traced T becomes graph nodes (get_attr
    + getitem) instead of failing on a concrete tensor."""
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        proxy_buffer_attributes = True

    graph = _Tracer().trace(module)
    name = module.__class__.__name__ if isinstance(module, torch.nn.Module) else module.__name__
    return torch.fx.GraphModule(module, graph, name)


def _user_frame(exc: BaseException, source_file: str | None) -> str:
    """'file:line: code' of the deepest traceback frame in the user's file."""
    if not source_file:
        return ""
    want = os.path.realpath(source_file)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename) == want:
            found = f"{os.path.basename(frame.filename)}:{frame.lineno}: {(frame.line or '').strip()}"
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _spelling(node) -> str:
    """How the user wrote the op (the IR's `origin`)."""
    if node.op == "call_function":
        if node.target is builtins.getattr:
            return f"Tensor.{node.args[1]}"
        return _ops.qualified_function_name(node.target)
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return node.target
    return node.op


def _trace_with_message(module, source_file):
    try:
        return trace(module)
    except Exception as exc:  # noqa: BLE001 - every trace failure becomes one line
        where = _user_frame(exc, source_file)
        where = f" at {where}" if where else ""
        raise CaptureError(f"torch.fx could not trace {type(module).__name__}.forward{where}: "
                           f"{_first_line(exc)}") from exc


# ---------------------------------------------------------------------------
# Shape propagation

def propagate(gm, args, source_file=None) -> dict:
    """Run `gm` on meta/fake `args`; returns {fx node: value} for every node.

    Values are meta or fake tensors (real shapes, dtypes and eager strides, no
    data), tuples of them, or python scalars (for size() / shape arithmetic)."""
    import torch
    import torch.fx

    values: dict = {}

    failure: list[str] = []

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            try:
                result = super().run_node(n)
            except Exception as exc:  # noqa: BLE001
                where = _user_frame(exc, source_file)
                where = f" ({where})" if where else ""
                failure.append(f"shape propagation failed at node '{n.name}' ({_spelling(n)})"
                               f"{where}: {_first_line(exc)}")
                raise
            values[n] = result
            return result

    def run(interpreter, run_args):
        interpreter.extra_traceback = False
        try:
            interpreter.run(*run_args)
        except Exception as exc:  # noqa: BLE001 - fx appends multi-line notes; keep one line
            raise CaptureError(failure[0] if failure else f"shape propagation failed: {_first_line(exc)}") from None

    tensors = [a for a in args if _is_tensor(a)]
    params = list(gm.parameters()) + list(gm.buffers())
    all_meta = all(t.is_meta for t in tensors + params)
    if all_meta:
        run(_Recorder(gm), args)
        return values
    from torch._subclasses.fake_tensor import FakeTensorMode

    import logging

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake_args = [mode.from_tensor(a) if _is_tensor(a) else a for a in args]
    # FakeTensorMode logs a traceback for every failing op; the failure is
    # reported once, as a CaptureError naming the node.
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level = fake_log.level
    fake_log.setLevel(logging.CRITICAL)
    try:
        with mode:
            run(_Recorder(gm), fake_args)
    finally:
        fake_log.setLevel(level)
    return values


# ---------------------------------------------------------------------------
# IR building

class IRBuilder:
    """Turns a traced GraphModule (+ propagated values) into IR nodes/tensors.

    With `values=None` (the runtime) only the id assignment is meaningful:
    `sources` maps every tensor id to ("node", fx node), ("param", target) or
    ("const", consumer fx node, argument name)."""

    def __init__(self, gm, values: dict | None = None):
        self.gm = gm
        self.values = values
        self.graph_names = {n.name for n in gm.graph.nodes}
        self.tensors: dict[str, dict] = {}
        self.nodes: list[dict] = []
        self.outputs: list[str] = []
        self.sources: dict[str, tuple] = {}
        self.target_ids = {n.target: n.name for n in gm.graph.nodes if n.op == "get_attr"}
        self._taken = set(self.graph_names)
        self._input_index = 0

    # -- ids ------------------------------------------------------------
    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._taken:
            name = f"{base}_{i}"
            i += 1
        self._taken.add(name)
        return name

    def _value(self, node):
        if self.values is None:
            return None
        return self.values.get(node)

    def _is_folded(self, node) -> bool:
        """Nodes whose value is not a tensor (size(), shape arithmetic) are not
        IR nodes; consumers see their concrete value."""
        if self.values is None:
            return False
        value = self.values.get(node)
        return not (_is_tensor(value) or _is_tensor_tuple(value))

    def _concrete(self, arg):
        import torch.fx

        return torch.fx.node.map_arg(arg, lambda n: self._value(n))

    def param_id(self, target: str) -> str:
        """Id of a parameter/buffer addressed by its qualified target."""
        if target in self.target_ids:
            return self.target_ids[target]
        ident = self._unique(target.replace(".", "_"))
        self.target_ids[target] = ident
        self.sources[ident] = ("param", target)
        value = self._attr(target)
        entry = _tensor_entry(value) if _is_tensor(value) else {"shape": [], "dtype": "float32",
                                                                  "strides": []}
        entry.update({"kind": self._attr_kind(target), "target": target})
        self.tensors[ident] = entry
        return ident

    def const_id(self, consumer, argname: str, value) -> str:
        ident = self._unique(f"{consumer.name}_{argname}")
        self.sources[ident] = ("const", consumer, argname)
        self.tensors[ident] = {"shape": [], "dtype": _scalar_dtype(value), "strides": [],
                               "kind": "const", "value": jsonable(value)}
        return ident

    def _attr(self, target: str):
        obj = self.gm
        for part in target.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    def _attr_kind(self, target: str) -> str:
        import torch

        return "param" if isinstance(self._attr(target), torch.nn.Parameter) else "buffer"

    # -- arguments -------------------------------------------------------
    def _tensor_arg(self, consumer, argname, arg, inputs, attrs):
        import torch.fx

        if arg is None:
            attrs[argname] = None
        elif isinstance(arg, torch.fx.Node):
            if self._is_folded(arg):
                inputs.append(self.const_id(consumer, argname, self._value(arg)))
            else:
                inputs.append(arg.name)
        elif isinstance(arg, (bool, int, float)):
            inputs.append(self.const_id(consumer, argname, arg))
        else:
            attrs[argname] = jsonable(self._concrete(arg))

    def _bind(self, op: str, args: tuple, kwargs: dict, positional=None):
        """Positional + keyword arguments -> {canonical name: value}."""
        signature = _ops.SIGNATURES[op]
        names = positional or [name for name, _, _ in signature]
        kinds = {name: kind for name, kind, _ in signature}
        bound: dict[str, Any] = {}
        args = list(args)
        for i, name in enumerate(names):
            if i >= len(args):
                break
            if kinds.get(name) == _ops.VAR:
                rest = args[i:]
                bound[name] = rest[0] if len(rest) == 1 and not isinstance(rest[0], int) else rest
                args = args[:i]
                break
            bound[name] = args[i]
        for i in range(len(names), len(args)):
            bound[f"arg{i}"] = args[i]
        for key, value in kwargs.items():
            bound[_ops.KWARG_ALIASES.get(key, key)] = value
        return {k: v for k, v in bound.items() if not k.startswith("_")}

    def _canonical_node(self, node, op: str, args, kwargs, positional=None):
        bound = self._bind(op, args, kwargs, positional)
        inputs: list[str] = []
        attrs: dict[str, Any] = {}
        for name, kind, default in _ops.SIGNATURES[op]:
            present = name in bound
            value = bound.pop(name, None)
            if kind in (_ops.T, _ops.TS):
                if present or _ops.has_default(default):
                    self._tensor_arg(node, name, value if present else default, inputs, attrs)
            elif present:
                concrete = jsonable(self._concrete(value))
                if kind == _ops.VAR:
                    concrete = _flat_ints(concrete)
                attrs[name] = concrete
            elif _ops.has_default(default):
                attrs[name] = jsonable(default)
        for name, value in bound.items():  # arguments the table does not name
            attrs[name] = jsonable(self._concrete(value))
        return inputs, attrs

    def _other_node(self, node, extra_params=()):
        import torch.fx

        inputs: list[str] = []

        def encode(arg):
            if isinstance(arg, torch.fx.Node):
                if self._is_folded(arg):
                    return jsonable(self._value(arg))
                inputs.append(arg.name)
                return {"tensor": arg.name}
            if isinstance(arg, (list, tuple)):
                return [encode(a) for a in arg]
            if isinstance(arg, dict):
                return {str(k): encode(v) for k, v in arg.items()}
            return jsonable(arg)

        start = 1 if node.op == "call_method" else 0
        attrs = {"args": [encode(a) for a in node.args[start:]],
                 "kwargs": {k: encode(v) for k, v in node.kwargs.items()}}
        if node.op == "call_method":
            self_arg = node.args[0]
            if isinstance(self_arg, torch.fx.Node):
                inputs.insert(0, self_arg.name)
        inputs.extend(extra_params)
        return inputs, attrs

    # -- nodes ------------------------------------------------------------
    def _module_node(self, node):
        import torch.nn as nn

        module = self.gm.get_submodule(node.target)
        x = node.args[0] if node.args else node.kwargs.get("input")

        def params(*names):
            return [self.param_id(f"{node.target}.{n}") if getattr(module, n, None) is not None else None
                    for n in names]

        def with_optional(ids, names, attrs):
            present = []
            for ident, name in zip(ids, names):
                if ident is None:
                    attrs[name] = None
                else:
                    present.append(ident)
            return present

        attrs: dict[str, Any] = {}
        simple = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}
        if isinstance(module, nn.Linear):
            ids = params("weight", "bias")
            inputs = [self._input_name(node, x)] + with_optional(ids, ["weight", "bias"], attrs)
            return "linear", inputs, attrs
        if type(module) in simple and len(node.args) == 1:
            return simple[type(module)], [self._input_name(node, x)], attrs
        if isinstance(module, nn.GELU) and len(node.args) == 1:
            return "gelu", [self._input_name(node, x)], {"approximate": module.approximate}
        if isinstance(module, nn.Softmax) and len(node.args) == 1:
            return "softmax", [self._input_name(node, x)], {"dim": module.dim, "dtype": None}
        if isinstance(module, nn.LayerNorm) and len(node.args) == 1:
            ids = params("weight", "bias")
            attrs = {"normalized_shape": list(module.normalized_shape)}
            inputs = [self._input_name(node, x)] + with_optional(ids, ["weight", "bias"], attrs)
            attrs["eps"] = module.eps
            return "layer_norm", inputs, attrs
        rms_norm = getattr(nn, "RMSNorm", None)  # torch >= 2.4
        if rms_norm is not None and isinstance(module, rms_norm) and len(node.args) == 1:
            ids = params("weight")
            attrs = {"normalized_shape": list(module.normalized_shape)}
            inputs = [self._input_name(node, x)] + with_optional(ids, ["weight"], attrs)
            attrs["eps"] = self._rms_norm_eps(module.eps, x)
            return "rms_norm", inputs, attrs
        extra = [self.param_id(f"{node.target}.{name}")
                 for name, _ in list(module.named_parameters(recurse=True))
                 + list(module.named_buffers(recurse=True))]
        inputs, attrs = self._other_node(node, extra)
        attrs["module"] = node.target
        return f"other:{_ops.qualified_module_name(type(module))}", inputs, attrs

    def _rms_norm_eps(self, eps, x):
        """rms_norm's eps, None written out as torch's default: the input dtype's
        machine epsilon (so the float64 reference keeps the model's eps)."""
        import torch

        if eps is not None:
            return eps
        value = self._value(x)
        return float(torch.finfo(value.dtype).eps) if _is_tensor(value) and value.is_floating_point() else None

    def _input_name(self, node, arg) -> str:
        import torch.fx

        if not isinstance(arg, torch.fx.Node):
            raise CaptureError(f"node '{node.name}': expected a tensor input, got {type(arg).__name__}")
        return arg.name

    def _getattr_node(self, node):
        base, attr = node.args[0], node.args[1]
        value = self._value(base)
        if attr == "T":
            ndim = value.dim() if _is_tensor(value) else 2
            if ndim <= 2:
                return "t", [base.name], {}
            return "permute", [base.name], {"dims": list(range(ndim - 1, -1, -1))}
        if attr == "mT":
            return "transpose", [base.name], {"dim0": -2, "dim1": -1}
        inputs, attrs = self._other_node(node)
        return f"other:Tensor.{attr}", inputs, attrs

    def _has_tensor_arg(self, args) -> bool:
        import torch.fx

        found = []
        torch.fx.node.map_arg(args, lambda n: found.append(n) or n)
        return any(not self._is_folded(n) for n in found)

    def _compute_node(self, node):
        if node.op == "call_module":
            return self._module_node(node)
        if node.op == "call_function" and node.target is builtins.getattr:
            return self._getattr_node(node)
        if node.op == "call_function":
            entry = _ops.function_table().get(node.target)
            if entry is None:
                inputs, attrs = self._other_node(node)
                return f"other:{_ops.qualified_function_name(node.target)}", inputs, attrs
            op, positional = entry
            if op == "getitem" and self._has_tensor_arg(node.args[1:]):
                # advanced indexing with a tensor index: not a view, kept as `other`
                inputs, attrs = self._other_node(node)
                return "other:operator.getitem", inputs, attrs
            inputs, attrs = self._canonical_node(node, op, node.args, node.kwargs, positional)
            if op == "rms_norm":
                attrs["eps"] = self._rms_norm_eps(attrs.get("eps"), node.args[0] if node.args else
                                                  node.kwargs.get("input"))
            return op, inputs, attrs
        op = _ops.METHOD_TABLE.get(node.target)
        if op is None:
            inputs, attrs = self._other_node(node)
            return f"other:Tensor.{node.target}", inputs, attrs
        inputs, attrs = self._canonical_node(node, op, node.args, node.kwargs)
        return op, inputs, attrs

    def _value_entry(self, node) -> dict:
        value = self._value(node)
        if _is_tensor(value):
            entry = _tensor_entry(value)
        elif _is_tensor_tuple(value):
            # A tuple-valued node (split / chunk): the tensor entry is a 0-d
            # placeholder; `elements` holds each member, read through getitem.
            entry = {"shape": [], "dtype": dtype_name(value[0].dtype), "strides": [],
                     "elements": [_tensor_entry(v) for v in value]}
        else:
            entry = {"shape": [], "dtype": "float32", "strides": []}
        entry["kind"] = "value"
        return entry

    def build(self) -> dict:
        import torch.fx

        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                value = self._value(node)
                if _is_tensor(value) or self.values is None:
                    entry = _tensor_entry(value) if _is_tensor(value) else {"shape": [], "dtype": "float32",
                                                                            "strides": []}
                else:
                    entry = {"shape": [], "dtype": _scalar_dtype(value), "strides": [],
                             "value": jsonable(value)}
                entry.update({"kind": "input", "index": self._input_index})
                self._input_index += 1
                self.tensors[node.name] = entry
                self.sources[node.name] = ("node", node)
            elif node.op == "get_attr":
                value = self._value(node)
                if value is None:
                    value = self._attr(node.target)
                entry = _tensor_entry(value) if _is_tensor(value) else {"shape": [], "dtype": "float32",
                                                                        "strides": []}
                entry.update({"kind": self._attr_kind(node.target), "target": node.target})
                self.tensors[node.name] = entry
                self.sources[node.name] = ("node", node)
            elif node.op in ("call_function", "call_method", "call_module"):
                if self._is_folded(node):
                    continue
                op, inputs, attrs = self._compute_node(node)
                self.nodes.append({"id": node.name, "op": op, "inputs": inputs, "outputs": [node.name],
                                   "attrs": attrs, "origin": _spelling(node)
                                   if node.op != "call_module"
                                   else _ops.qualified_module_name(type(self.gm.get_submodule(node.target)))})
                self.tensors[node.name] = self._value_entry(node)
                self.sources[node.name] = ("node", node)
            elif node.op == "output":
                flat: list = []
                torch.fx.node.map_arg(node.args[0], lambda n: flat.append(n.name) or n)
                self.outputs = [name for name in flat if name in self.tensors]
        return {"tensors": self.tensors, "nodes": self.nodes, "outputs": self.outputs}


# ---------------------------------------------------------------------------
# Public entry points

def _source_of(module) -> str | None:
    import inspect

    try:
        return os.path.abspath(inspect.getsourcefile(type(module)))
    except (TypeError, OSError):
        return None


def capture_module(module, example_inputs, source: str | None = None, init_inputs=None) -> dict:
    """IR (a dict, CONTRACTS.md §1) of `module` called on `example_inputs`.

    `example_inputs` may be real, meta or fake tensors (and python scalars);
    real tensors are replaced by FakeTensors, so nothing is computed."""
    source = source if source is not None else _source_of(module)
    gm = _trace_with_message(module, source)
    values = propagate(gm, list(example_inputs), source)
    body = IRBuilder(gm, values).build()
    return {"fact_ir": IR_VERSION, "module": type(module).__name__, "source": source,
            "init_inputs": jsonable(list(init_inputs or [])), **body}


def _to_meta(value):
    import torch

    if _is_tensor(value) and not value.is_meta:
        return torch.empty_strided(tuple(value.shape), tuple(value.stride()), dtype=value.dtype,
                                   device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_to_meta(v) for v in value)
    return value


def _meta_mode():
    """A TorchFunctionMode that keeps tensors on `meta` while a KernelBench
    file builds its model and inputs: explicit `device=` arguments become meta,
    and .cuda() / .cpu() / .to(device) of a meta tensor return it (keeping a
    requested dtype), so `torch.rand(..., device="cuda")` or `.cuda()` in
    get_inputs() allocates nothing, on any machine."""
    import torch
    from torch.overrides import TorchFunctionMode

    device_like = (str, torch.device, int)

    class _StayOnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            self_arg = args[0] if args else None
            if isinstance(self_arg, torch.Tensor) and self_arg.is_meta:
                if func in (torch.Tensor.cuda, torch.Tensor.cpu):
                    return self_arg
                if func is torch.Tensor.to:
                    rest = [a for a in args[1:] if not isinstance(a, device_like) or isinstance(a, bool)]
                    kwargs.pop("device", None)
                    kwargs.pop("non_blocking", None)
                    if not rest and "dtype" not in kwargs:
                        return self_arg
                    return func(self_arg, *rest, **kwargs)
            if kwargs.get("device") is not None:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    return _StayOnMeta()


def load_kernelbench(path: str):
    """Import a KernelBench-format file; returns (python module, Model class)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise CaptureError(f"{path}: no such file")
    name = "fact_capture_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CaptureError(f"{path}: not a python file")
    pymod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(pymod)
    except Exception as exc:  # noqa: BLE001
        where = _user_frame(exc, path)
        raise CaptureError(f"{path}: import failed{' at ' + where if where else ''}: "
                           f"{_first_line(exc)}") from exc
    model_cls = getattr(pymod, "Model", None)
    if model_cls is None or not isinstance(model_cls, type):
        raise CaptureError(f"{path}: no `class Model` (a KernelBench file defines class Model(nn.Module))")
    if not callable(getattr(pymod, "get_inputs", None)):
        raise CaptureError(f"{path}: no `get_inputs()` function (KernelBench files define it)")
    return pymod, model_cls


def capture_file(path: str) -> dict:
    """IR of a KernelBench-format file, built on the meta device."""
    import torch

    path = os.path.abspath(path)
    pymod, model_cls = load_kernelbench(path)
    get_init = getattr(pymod, "get_init_inputs", None)
    try:
        init_inputs = list(get_init()) if callable(get_init) else []
    except Exception as exc:  # noqa: BLE001
        raise CaptureError(f"{path}: get_init_inputs() failed: {_first_line(exc)}") from exc

    try:
        with torch.device("meta"), _meta_mode():
            model = model_cls(*init_inputs)
    except Exception:  # noqa: BLE001 - some constructors need real tensors; build on CPU
        try:
            model = model_cls(*init_inputs).to("meta")
        except Exception as exc:  # noqa: BLE001
            where = _user_frame(exc, path)
            raise CaptureError(f"{path}: Model(*get_init_inputs()) failed"
                               f"{' at ' + where if where else ''}: {_first_line(exc)}") from exc
    try:
        with torch.device("meta"), _meta_mode():
            inputs = list(pymod.get_inputs())
    except Exception:  # noqa: BLE001 - e.g. get_inputs() copies to a device; build on CPU
        try:
            inputs = list(pymod.get_inputs())
        except Exception as exc:  # noqa: BLE001
            where = _user_frame(exc, path)
            raise CaptureError(f"{path}: get_inputs() failed{' at ' + where if where else ''}: "
                               f"{_first_line(exc)}") from exc
    inputs = [_to_meta(v) for v in inputs]
    model.eval()
    return capture_module(model, inputs, source=path, init_inputs=init_inputs)


def write_ir(ir: dict, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(ir, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fact.capture",
                                     description="Capture a KernelBench-format file as FACT graph IR.")
    parser.add_argument("file", help="KernelBench-format .py (class Model, get_inputs, get_init_inputs)")
    parser.add_argument("-o", "--output", required=True, help="graph.json to write")
    args = parser.parse_args(argv)
    try:
        ir = capture_file(args.file)
        write_ir(ir, args.output)
    except CaptureError as exc:
        print(f"fact.capture: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fact.capture: error: {exc}", file=sys.stderr)
        return 2
    counts = {}
    for node in ir["nodes"]:
        counts[node["op"]] = counts.get(node["op"], 0) + 1
    summary = ", ".join(f"{k}×{v}" for k, v in sorted(counts.items()))
    print(f"fact.capture: {len(ir['nodes'])} nodes ({summary}) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
