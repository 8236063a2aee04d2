"""FACT as a torch.compile backend.

    import fact.dynamo                      # registers the backend name "fact"
    model = torch.compile(model, backend="fact")
    model = torch.compile(model, backend=fact.dynamo.make_backend(tolerance=1e-2))

Dynamo hands the backend each captured FX graph with example inputs (the
module's parameters arrive as graph inputs). The backend runs the same
pipeline as fact.optimize on that graph (capture -> discover -> realize ->
compose, with the registry and kernel cache making a second compile fast) and
returns the graph with the realized patterns bound (fact.runtime.install).

Contract: a backend failure never breaks the user's model. Anything FACT
cannot do (no GPU, no nvcc or CUTLASS, dynamic shapes, a stage error) is one
RuntimeWarning naming the reason, and the graph runs as captured (eager);
`strict=True` raises instead (tests, CI).
"""
from __future__ import annotations

import warnings

__all__ = ["make_backend", "backend", "register"]


def _refusal(example_inputs) -> str | None:
    """Why FACT cannot realize kernels for a graph called with these inputs (None
    when it can): the kernels run on CUDA devices and are realized for the shapes
    seen here, so CPU tensors and symbolic sizes are refused up front, before any
    nvcc time is spent."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (FACT's kernels run on NVIDIA GPUs)"
    for i, value in enumerate(example_inputs):
        if isinstance(value, torch.SymInt):
            return f"input {i} is a symbolic int (dynamic shapes); FACT realizes kernels for static shapes"
        if isinstance(value, torch.Tensor):
            if any(isinstance(s, torch.SymInt) for s in value.shape):
                return f"input {i} has a symbolic shape (dynamic shapes); FACT realizes kernels for static shapes"
            if value.device.type != "cuda":
                return f"input {i} is on {value.device}; FACT's kernels take CUDA tensors"
    return None


def make_backend(tolerance=None, out_dir=None, strict: bool = False):
    """A torch.compile backend running FACT with these settings (see fact.optimize
    for `tolerance` and `out_dir`)."""

    def fact_backend(gm, example_inputs):
        from . import optimize

        reason = _refusal(example_inputs)
        if reason is None:
            try:
                return optimize(gm, list(example_inputs), tolerance=tolerance, out_dir=out_dir)
            except Exception as exc:  # noqa: BLE001 - the contract is: warn and run the graph as captured
                if strict:
                    raise
                reason = f"{type(exc).__name__}: {exc}"
        elif strict:
            raise RuntimeError(f"fact backend: {reason}")
        warnings.warn(f"fact backend: this graph runs as captured (PyTorch): {reason}", RuntimeWarning,
                      stacklevel=2)
        return gm.forward

    return fact_backend


backend = make_backend()


def register(name: str = "fact") -> None:
    """Register `backend` with torch._dynamo under `name` (idempotent)."""
    from torch._dynamo import list_backends, register_backend

    if name not in list_backends(exclude_tags=()):
        register_backend(compiler_fn=backend, name=name)


register()
