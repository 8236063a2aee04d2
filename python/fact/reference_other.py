"""The `other:*` ops (docs/CONTRACTS.md §1) that rule patterns absorb and the
reference interpreter (fact.reference) must therefore execute: mask
construction and comparison in attention patterns (`torch.ones`, `torch.tril`,
`operator.eq`, `operator.invert`, ...), identity dropout, SDPA, the
two-operand `torch.einsum` the GEMM rule matches, and the reductions, roots and
float casts of a written-out RMSNorm (`Tensor.mean`, `torch.rsqrt`,
`Tensor.float`, `Tensor.type_as`, ...).

Contract: arguments come from the node's attrs {"args": [...], "kwargs": {...}}
with tensors written as {"tensor": id}; a `Tensor.<method>` node's self is its
first input (capture keeps it out of "args"). A `device` keyword is replaced by
the device of the reference run (capture records "meta"); with promote64 a
floating `dtype` keyword becomes float64, and so does the target of a float
cast (`x.float()` of the float64 reference stays float64). Dropout runs only as
the identity (p = 0 or training False): anything else is random and has no
reference.
"""
from __future__ import annotations

import operator


class _Unsupported(ValueError):
    pass


def _table():
    import torch
    import torch.nn.functional as F

    def dropout(x, p=0.5, training=True, inplace=False):
        if training and p:
            raise _Unsupported(f"dropout with p={p} in training mode is random: no reference")
        return x

    return {
        "operator.eq": operator.eq, "operator.ne": operator.ne, "operator.invert": operator.invert,
        "operator.lt": operator.lt, "operator.le": operator.le, "operator.gt": operator.gt,
        "operator.ge": operator.ge,
        "torch.eq": torch.eq, "torch.ne": torch.ne, "torch.logical_not": torch.logical_not,
        "torch.ones": torch.ones, "torch.zeros": torch.zeros, "torch.full": torch.full,
        "torch.tril": torch.tril, "torch.triu": torch.triu,
        "torch.nn.functional.dropout": dropout,
        "torch.nn.functional.scaled_dot_product_attention": F.scaled_dot_product_attention,
        "torch.einsum": torch.einsum,
        "torch.mean": torch.mean, "torch.sum": torch.sum, "torch.rsqrt": torch.rsqrt,
        "torch.square": torch.square, "torch.reciprocal": torch.reciprocal,
        "Tensor.mean": torch.Tensor.mean, "Tensor.sum": torch.Tensor.sum, "Tensor.rsqrt": torch.Tensor.rsqrt,
        "Tensor.square": torch.Tensor.square, "Tensor.reciprocal": torch.Tensor.reciprocal,
        "Tensor.type_as": torch.Tensor.type_as,
        "Tensor.float": "float32", "Tensor.half": "float16", "Tensor.bfloat16": "bfloat16", "Tensor.to": None,
    }


_TABLE = None


def supported(op: str) -> bool:
    global _TABLE
    if _TABLE is None:
        _TABLE = _table()
    return op.startswith("other:") and op[len("other:"):] in _TABLE


def _decode(value, env):
    """An attribute value with {"tensor": id} references replaced by env's tensors.
    Module-level on purpose: a recursive closure over `env` is a reference cycle
    that keeps every intermediate of the reference alive until the next gc pass
    (on the GPU worker that exhausted 80 GB within a few attention trials)."""
    if isinstance(value, dict) and set(value) == {"tensor"}:
        return env[value["tensor"]]
    if isinstance(value, list):
        return [_decode(v, env) for v in value]
    return value


def arguments(node, env):
    """(args, kwargs) of an `other:*` node, tensors looked up in `env`; a
    `Tensor.<method>` node's self (its first input) leads the args."""
    attrs = node.get("attrs", {}) or {}
    args = [_decode(a, env) for a in attrs.get("args", [])]
    if node["op"].startswith("other:Tensor."):
        args.insert(0, env[node["inputs"][0]])
    kwargs = {k: _decode(v, env) for k, v in (attrs.get("kwargs", {}) or {}).items()}
    return args, kwargs


def _float_cast(name, target, args, kwargs, promote64):
    """x.float() / .half() / .bfloat16() / .to(dtype): the cast, to float64 for a
    floating target in the float64 reference."""
    from .kernel import torch_dtype

    x, rest = args[0], list(args[1:])
    if target is None:  # Tensor.to: a dtype alone (the RMSNorm rule admits no other form)
        dtype = kwargs.pop("dtype", rest.pop(0) if rest else None)
        if rest or kwargs or not isinstance(dtype, str):
            raise _Unsupported(f"{name} with arguments {args[1:]}, {kwargs}: only a cast to a dtype has a reference")
        target = dtype
    elif rest or kwargs:
        raise _Unsupported(f"{name} with arguments: only a plain cast has a reference")
    import torch

    dtype = torch_dtype(target)
    return x.to(torch.float64 if promote64 and dtype.is_floating_point else dtype)


def call(node, env, device, promote64: bool):
    """Executes one `other:*` node; raises ValueError (UnsupportedOp's base) when it cannot."""
    import torch

    from .kernel import torch_dtype

    if not supported(node["op"]):
        raise _Unsupported(f"node {node['id']}: op {node['op']!r} has no reference implementation")
    name = node["op"][len("other:"):]
    fn = _TABLE[name]
    args, kwargs = arguments(node, env)
    if fn is None or isinstance(fn, str):
        return _float_cast(name, fn, args, kwargs, promote64)
    if "device" in kwargs:
        kwargs["device"] = device
    if isinstance(kwargs.get("dtype"), str):
        dtype = torch_dtype(kwargs["dtype"])
        kwargs["dtype"] = torch.float64 if promote64 and dtype.is_floating_point else dtype
    return fn(*args, **kwargs)
