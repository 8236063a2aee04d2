"""The PyTorch reference: executes IR nodes (canonical ops, docs/CONTRACTS.md §1)
with plain torch calls. The worker runs a pattern's subgraph with it in the
input dtype (eager baseline) and in float64 (accuracy reference).

Contract: `run_nodes` reads each node's inputs by walking the op's signature in
fact.ops (absent optional tensors are `attrs[name] = null`), so capture and
reference agree on argument order by construction.
"""
from __future__ import annotations

from typing import Mapping

from . import ops as _ops
from . import reference_chain as _chain
from . import reference_other as _other


class UnsupportedOp(ValueError):
    """A node whose op the reference cannot execute (an `other:*` op)."""


def _decode_index(value):
    if isinstance(value, list):
        return tuple(_decode_index(v) for v in value)
    if isinstance(value, dict):
        if "slice" in value:
            return slice(*value["slice"])
        if value.get("ellipsis"):
            return Ellipsis
    return value


def _dtype_attr(value, promote64: bool):
    import torch

    if value is None:
        return None
    from .kernel import torch_dtype

    dtype = torch_dtype(value)
    if promote64 and dtype.is_floating_point:
        return torch.float64
    return dtype


def _bind(node: Mapping, env: Mapping, tensors: Mapping, promote64: bool) -> dict:
    """{argument name: value} of a canonical node."""
    op = node["op"]
    attrs = dict(node.get("attrs", {}))
    inputs = list(node.get("inputs", []))
    args = {}
    for name, kind, _default in _ops.SIGNATURES[op]:
        if kind in (_ops.T, _ops.TS):
            if name in attrs and attrs[name] is None:
                args[name] = None
                attrs.pop(name)
                continue
            if not inputs:
                continue
            ident = inputs.pop(0)
            if ident in env:
                args[name] = env[ident]
            else:
                entry = tensors.get(ident, {})
                if entry.get("kind") != "const":
                    raise KeyError(f"node {node['id']}: input {ident!r} has no value")
                value = entry["value"]
                # JSON has no inf/nan: capture writes them as strings.
                args[name] = float(value) if isinstance(value, str) else value
        elif name in attrs:
            args[name] = attrs.pop(name)
    if inputs:
        raise ValueError(f"node {node['id']}: {len(inputs)} inputs left over for op {op}")
    return args


def _call(op: str, a: dict, promote64: bool):
    import torch
    import torch.nn.functional as F

    x = a.get("input")
    if op == "mm":
        return torch.mm(x, a["mat2"])
    if op == "bmm":
        return torch.bmm(x, a["mat2"])
    if op == "matmul":
        return torch.matmul(x, a["other"])
    if op == "linear":
        return F.linear(x, a["weight"], a.get("bias"))
    if op == "addmm":
        return torch.addmm(x, a["mat1"], a["mat2"], beta=a.get("beta", 1), alpha=a.get("alpha", 1))
    if op == "baddbmm":
        return torch.baddbmm(x, a["batch1"], a["batch2"], beta=a.get("beta", 1), alpha=a.get("alpha", 1))
    if op == "t":
        return x.t()
    if op == "transpose":
        return x.transpose(a["dim0"], a["dim1"])
    if op == "permute":
        return x.permute(*a["dims"])
    if op == "view":
        return x.view(*a["shape"])
    if op == "reshape":
        return x.reshape(*a["shape"])
    if op == "contiguous":
        return x.contiguous()
    if op == "add":
        return torch.add(x, a["other"], alpha=a.get("alpha", 1)) if a.get("alpha", 1) != 1 else x + a["other"]
    if op == "sub":
        return torch.sub(x, a["other"], alpha=a.get("alpha", 1)) if a.get("alpha", 1) != 1 else x - a["other"]
    if op == "mul":
        return x * a["other"]
    if op == "div":
        if a.get("rounding_mode") is not None:
            return torch.div(x, a["other"], rounding_mode=a["rounding_mode"])
        return x / a["other"]
    if op == "neg":
        return -x
    if op == "relu":
        return torch.relu(x)
    if op == "gelu":
        return F.gelu(x, approximate=a.get("approximate", "none"))
    if op == "tanh":
        return torch.tanh(x)
    if op == "sigmoid":
        return torch.sigmoid(x)
    if op == "silu":
        return F.silu(x)
    if op == "exp":
        return torch.exp(x)
    if op == "pow":
        return x ** a["exponent"]
    if op == "softmax":
        return torch.softmax(x, a["dim"], dtype=_dtype_attr(a.get("dtype"), promote64))
    if op == "layer_norm":
        return F.layer_norm(x, list(a["normalized_shape"]), a.get("weight"), a.get("bias"), a.get("eps", 1e-5))
    if op == "rms_norm":
        return F.rms_norm(x, list(a["normalized_shape"]), a.get("weight"), a.get("eps"))
    if op == "getitem":
        return x[_decode_index(a["index"])]
    if op == "split":
        return torch.split(x, a["split_size_or_sections"], a.get("dim", 0))
    if op == "chunk":
        return torch.chunk(x, a["chunks"], a.get("dim", 0))
    if op == "masked_fill":
        return x.masked_fill(a["mask"], a["value"])
    raise UnsupportedOp(f"the reference has no implementation of op {op!r}")


def run_nodes(nodes, inputs: Mapping[str, object], tensors: Mapping[str, dict] | None = None,
              promote64: bool = False) -> dict:
    """Executes `nodes` (IR node dicts, topologically ordered) on `inputs`
    (tensor id -> tensor); returns the environment (id -> value).

    With promote64, floating tensors in `inputs` are converted to float64 first
    (the accuracy reference); `tensors` (the IR tensor table) supplies consts."""
    import torch

    tensors = tensors or {}
    env: dict = {}
    for ident, value in inputs.items():
        if promote64 and isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.to(torch.float64)
        env[ident] = value
    device = next((v.device for v in env.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    for node in nodes:
        op = node["op"]
        if _other.supported(op):  # mask construction, identity dropout, SDPA (reference_other.py)
            result = _other.call(node, env, device, promote64)
        elif _chain.supported(op):  # clamp / erf / sqrt / abs of GEMM epilogue chains (reference_chain.py)
            result = _chain.call(node, env)
        elif op.startswith("other:") or op not in _ops.SIGNATURES:
            raise UnsupportedOp(f"node {node['id']}: op {op!r} has no reference implementation")
        else:
            result = _call(op, _bind(node, env, tensors, promote64), promote64)
        outputs = node.get("outputs") or [node["id"]]
        env[outputs[0]] = result
    return env


def run_pattern(ir: Mapping, pattern: Mapping, inputs: Mapping[str, object], promote64: bool = False):
    """Runs a plan pattern's nodes; returns its output tensors (pattern order)."""
    wanted = set(pattern["nodes"])
    nodes = [n for n in ir["nodes"] if n["id"] in wanted]
    missing = wanted - {n["id"] for n in nodes}
    if missing:
        raise KeyError(f"pattern {pattern.get('id')}: nodes {sorted(missing)} are not in the IR")
    env = run_nodes(nodes, inputs, ir.get("tensors", {}), promote64)
    return [env[o] for o in pattern["outputs"]]
