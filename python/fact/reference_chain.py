"""The elementwise `other:*` ops the GEMM epilogue-chain rule absorbs
(src/rules/epilogue_chain.cpp, elementwise_op: clamp / clip, erf, sqrt, abs,
identity dropout spelled torch.dropout), so the reference interpreter
(fact.reference) can run a fused pattern's full node list.

Contract: arguments come from the node's attrs {"args": [...], "kwargs": {...}}
with tensors written as {"tensor": id}; `Tensor.<method>` calls the method on
the node's first input (fact.reference_other.arguments). Dropout runs only as the identity (p = 0 or training
False): anything else is random and has no reference.
"""
from __future__ import annotations

from . import reference_other as _other


class _Unsupported(ValueError):
    pass


def _dropout(x, p=0.5, train=True, *rest, **kwargs):
    training = kwargs.get("training", kwargs.get("train", train))
    if training and p:
        raise _Unsupported(f"dropout with p={p} in training mode is random: no reference")
    return x


def _table():
    import torch

    return {
        "torch.clamp": torch.clamp, "torch.clip": torch.clip, "torch.erf": torch.erf,
        "torch.special.erf": torch.special.erf, "torch.sqrt": torch.sqrt, "torch.abs": torch.abs,
        "Tensor.clamp": torch.Tensor.clamp, "Tensor.clip": torch.Tensor.clip, "Tensor.erf": torch.Tensor.erf,
        "Tensor.sqrt": torch.Tensor.sqrt, "Tensor.abs": torch.Tensor.abs,
        "torch.dropout": _dropout,
    }


_TABLE = None


def supported(op: str) -> bool:
    global _TABLE
    if not op.startswith("other:"):
        return False
    if _TABLE is None:
        _TABLE = _table()
    return op[len("other:"):] in _TABLE


def call(node, env):
    """Executes one elementwise `other:*` node; raises ValueError when it cannot."""
    if not supported(node["op"]):
        raise _Unsupported(f"node {node['id']}: op {node['op']!r} has no reference implementation")
    fn = _TABLE[node["op"][len("other:"):]]
    for ident in node.get("inputs", []):
        if ident not in env:
            raise KeyError(f"node {node['id']}: input {ident!r} has no value")
    args, kwargs = _other.arguments(node, env)
    return fn(*args, **kwargs)
