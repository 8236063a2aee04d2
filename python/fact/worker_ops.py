"""Worker support for the non-GEMM rules (layernorm, attention): the pattern
bench whose candidates fact.worker.evaluate verifies and times with the GEMMs'
loop, under exactly DESIGN.md's passing rule (>= 5 trials, fresh torch.rand
inputs for the KernelBench allclose against eager, fresh N(0,1) inputs for "as
accurate as eager" against float64, every output NaN-poisoned before each run; only passing
candidates are timed, with eager on the same subgraph as the baseline).

The reference is the pattern's own node list run by fact.reference. A causal
mask buffer (payload mask.must_verify) has no values in the IR (capture runs on
meta): the bench fills it with the causal mask it claims to be, so the
reference computes causal attention and the comparison is meaningful; the
runtime checks the real buffer before it binds the kernel (fact.runtime_ops).
"""
from __future__ import annotations

from . import kernel as _kernel
from . import op_kernels, reference
from . import worker as _worker

RULES = ("layernorm", "attention")


def handles(pattern: dict) -> bool:
    return pattern.get("rule") in RULES


def loader_for(pattern: dict, loader):
    """The library loader of the pattern's rule, unless a test passed its own."""
    if loader is _kernel.GemmKernel:
        return op_kernels.LOADERS[pattern["rule"]]
    return loader


def causal_buffer(entry: dict, mask: dict, device):
    """A buffer with the IR entry's shape/dtype that is exactly the causal mask
    `mask` (payload "mask") claims: kept where (col - c0) <= (row - r0) in the
    window rows x cols of the last two dims."""
    import torch

    shape = entry["shape"]
    rows, cols = shape[-2], shape[-1]
    r0 = (mask.get("rows") or [0])[0] or 0
    c0 = (mask.get("cols") or [0])[0] or 0
    i = torch.arange(rows, device=device).view(-1, 1) - r0
    j = torch.arange(cols, device=device).view(1, -1) - c0
    kept = (j <= i).expand(*shape)
    dtype = _kernel.torch_dtype(entry["dtype"])
    if mask.get("kind") == "additive":
        out = torch.zeros(shape, dtype=dtype, device=device)
        return out.masked_fill(~kept, float("-inf"))
    if mask.get("keep") == "zero":  # masked_fill(buf, -inf): the buffer is true where masked
        return (~kept).to(dtype).contiguous()
    return kept.to(dtype).contiguous()


class OpBench(_worker.Bench):
    """Inputs, references and kernel launches of one layernorm / attention
    pattern; fact.worker.evaluate verifies and times its candidates."""

    def __init__(self, ir: dict, pattern: dict, device):
        self.rule = pattern["rule"]
        self.payload = pattern.get(self.rule)
        if not isinstance(self.payload, dict):
            raise ValueError(f"pattern {pattern.get('id')} of rule {self.rule} has no {self.rule!r} payload")
        super().__init__(ir, pattern, device)
        tensors = ir["tensors"]
        self.output_ids = list(pattern["outputs"])
        if self.rule == "layernorm":
            expected = op_kernels.layernorm_output_ids(self.payload)
        else:
            expected = [self.payload["o"]["tensor"]]
        if expected != self.output_ids:
            raise ValueError(f"pattern outputs {self.output_ids} are not the payload's {expected}")
        mask = self.payload.get("mask") if self.rule == "attention" else None
        self.mask_buffer = mask.get("buffer") if isinstance(mask, dict) and mask.get("must_verify") else None
        self.mask = mask
        self.dtype = _kernel.torch_dtype(tensors[self.output_ids[-1]]["dtype"])

    def fixed_input(self, ident: str, entry: dict):
        if ident == self.mask_buffer:
            return causal_buffer(entry, self.mask, self.device)
        return None

    def eager(self, inputs: dict, promote64: bool = False) -> dict:
        return dict(zip(self.output_ids, reference.run_pattern(self.ir, self.pattern, inputs, promote64)))

    eager_outputs = eager  # the eager result already maps every output

    def problem(self, inputs: dict, outputs: dict):
        if self.rule == "layernorm":
            return op_kernels.layernorm_problem(self.payload, inputs, outputs)
        return op_kernels.attention_problem(self.payload, inputs, outputs[self.output_ids[-1]])

    def describe_output(self, ident: str) -> str:
        return f", output {ident}"

    def lost_reason(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}"
