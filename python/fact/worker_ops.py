"""Worker support for the non-GEMM rules (layernorm, attention): the pattern
bench and the per-candidate evaluation, under exactly DESIGN.md's passing rule
as fact.worker applies it to GEMMs (>= 5 trials, fresh torch.rand inputs for
the KernelBench allclose against eager, fresh N(0,1) inputs for "as accurate as
eager" against float64, every output NaN-poisoned before each run; only passing
candidates are timed, with eager on the same subgraph as the baseline).

The reference is the pattern's own node list run by fact.reference. A causal
mask buffer (payload mask.must_verify) has no values in the IR (capture runs on
meta): the bench fills it with the causal mask it claims to be, so the
reference computes causal attention and the comparison is meaningful; the
runtime checks the real buffer before it binds the kernel (fact.runtime_ops).
"""
from __future__ import annotations

from . import kernel as _kernel
from . import measure, op_kernels, reference

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


class OpBench:
    """Inputs, references and kernel launches of one layernorm / attention pattern."""

    def __init__(self, ir: dict, pattern: dict, device):
        import torch

        self._torch = torch
        self.ir, self.pattern, self.device = ir, pattern, device
        self.rule = pattern["rule"]
        self.payload = pattern.get(self.rule)
        if not isinstance(self.payload, dict):
            raise ValueError(f"pattern {pattern.get('id')} of rule {self.rule} has no {self.rule!r} payload")
        tensors = ir["tensors"]
        self.input_ids = [i for i in pattern["inputs"] if tensors.get(i, {}).get("kind") != "const"]
        self.output_ids = list(pattern["outputs"])
        for ident in self.input_ids + self.output_ids:
            if ident not in tensors:
                raise KeyError(f"tensor {ident!r} of pattern {pattern.get('id')} is not in the IR")
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

    def _empty(self, entry):
        return self._torch.empty_strided(entry["shape"], entry["strides"], dtype=_kernel.torch_dtype(entry["dtype"]),
                                         device=self.device)

    def make_inputs(self, distribution: str, seed: int) -> dict:
        torch = self._torch
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        inputs = {}
        for ident in self.input_ids:
            entry = self.ir["tensors"][ident]
            if ident == self.mask_buffer:
                inputs[ident] = causal_buffer(entry, self.mask, self.device)
                continue
            t = self._empty(entry)
            if t.is_floating_point():
                if distribution == "uniform":
                    t.uniform_(0.0, 1.0, generator=generator)
                else:
                    t.normal_(0.0, 1.0, generator=generator)
            elif t.dtype == torch.bool:
                t.copy_(torch.randint(0, 2, t.shape, generator=generator, device=self.device).bool())
            else:
                t.random_(0, 8, generator=generator)
            inputs[ident] = t
        return inputs

    def eager(self, inputs: dict, promote64: bool = False) -> dict:
        return dict(zip(self.output_ids, reference.run_pattern(self.ir, self.pattern, inputs, promote64)))

    def new_outputs(self) -> dict:
        return {ident: self._empty(self.ir["tensors"][ident]) for ident in self.output_ids}

    def problem(self, inputs: dict, outputs: dict):
        if self.rule == "layernorm":
            return op_kernels.layernorm_problem(self.payload, inputs, outputs)
        return op_kernels.attention_problem(self.payload, inputs, outputs[self.output_ids[-1]])

    def input_bytes(self) -> int:
        total = 0
        for ident in self.input_ids + self.output_ids:
            entry = self.ir["tensors"][ident]
            numel = 1
            for s in entry["shape"]:
                numel *= s
            total += numel * _kernel.torch_dtype(entry["dtype"]).itemsize
        return total


def evaluate(candidate: dict, bench: OpBench, tol: float, trials: int, timing: dict, baseline_cache: dict,
             loader) -> dict:
    """Verify (and, when it passes, time) one candidate; returns its result line.
    Raises worker._ContextLost when the CUDA context died."""
    from . import worker as _worker

    torch = bench._torch
    result = _worker._result
    name = candidate.get("name", "")
    extra = {"math": candidate.get("math")} if candidate.get("math") else {}
    try:
        kern = loader(candidate["library"])
    except (_kernel.KernelError, KeyError) as exc:
        return result(name, "launch_error", f"load: {exc}", **extra)
    if getattr(kern, "name", name) and name and getattr(kern, "name", name) != name:
        extra["note"] = f"library reports variant {kern.name!r}"
    workspace = {"tensor": None}

    def prepare(problem):
        size = kern.workspace_size(problem)
        if size and (workspace["tensor"] is None or workspace["tensor"].numel() < size):
            workspace["tensor"] = torch.empty(size, dtype=torch.uint8, device=bench.device)
        return (workspace["tensor"].data_ptr() if size else 0), size

    def launch(problem, ws):
        kern.run(problem, ws[0], ws[1], _kernel.stream_pointer(bench.device))

    def lost_or(exc, status_reason):
        if not _worker._context_alive(torch, bench.device):
            raise _worker._ContextLost(f"{type(exc).__name__}: {exc}") from exc
        return result(name, "launch_error", status_reason, **extra)

    worst = {"fail_frac": 0.0, "max_abs_err": 0.0, "eager_fail_frac": 0.0, "eager_max_abs_err": 0.0,
             "kb_max_abs_diff": 0.0}
    kb_pass = True
    for trial in range(trials):
        for distribution in ("uniform", "normal"):
            seed = _worker._SEED_BASE + 2 * trial + (distribution == "normal")
            inputs = bench.make_inputs(distribution, seed)
            outs = bench.new_outputs()
            try:
                problem = bench.problem(inputs, outs)
            except _kernel.BindingError as exc:
                return result(name, "cant_implement", f"binding: {exc}", **extra)
            why = kern.can_implement(problem)
            if why is not None:
                return result(name, "cant_implement", why, **extra)
            for out in outs.values():
                out.fill_(float("nan"))
            try:
                launch(problem, prepare(problem))
                _worker._sync(torch, bench.device)
            except _kernel.KernelError as exc:
                return lost_or(exc, str(exc))
            except RuntimeError as exc:  # CUDA error surfaced by synchronize
                return lost_or(exc, f"{type(exc).__name__}: {exc}")
            eager = bench.eager(inputs)
            ref64 = bench.eager(inputs, promote64=True) if distribution == "normal" else None
            for ident, out in outs.items():
                where = f"trial {trial + 1}/{trials} ({distribution} inputs), output {ident}"
                if distribution == "uniform":
                    kb = measure.kernelbench_allclose(out, eager[ident], tol)
                    worst["kb_max_abs_diff"] = max(worst["kb_max_abs_diff"], kb["max_abs_diff"])
                    if not kb["passed"]:
                        return result(name, "wrong", f"{where}: {kb['reason']}", kb_pass=False, **worst, **extra)
                else:
                    acc = measure.accuracy_vs_fp64(out, ref64[ident], eager[ident], tol)
                    for key in ("fail_frac", "max_abs_err", "eager_fail_frac", "eager_max_abs_err"):
                        worst[key] = max(worst[key], acc[key])
                    if not acc["passed"]:
                        return result(name, "wrong", f"{where}: {acc['reason']}", kb_pass=kb_pass, **worst, **extra)
            del inputs, outs, eager, ref64

    warmup = int(timing.get("warmup", 10))
    reps = int(timing.get("reps", 100))
    copies = measure.rotation_count(bench.input_bytes()) if bench.device.type == "cuda" else 1
    sets = [bench.make_inputs("uniform", _worker._SEED_BASE + 1000 + i) for i in range(copies)]
    outs = [bench.new_outputs() for _ in range(copies)]
    problems = [bench.problem(s, o) for s, o in zip(sets, outs)]
    ws = prepare(problems[0])
    timer = measure.time_cuda if bench.device.type == "cuda" else measure.time_host
    try:
        timed = timer(lambda p: launch(p, ws), warmup, reps, rotate_inputs=[(p,) for p in problems])
    except (_kernel.KernelError, RuntimeError) as exc:
        return lost_or(exc, f"during timing: {exc}")
    if "baseline" not in baseline_cache:
        baseline_cache["baseline"] = timer(lambda s: bench.eager(s), warmup, reps, rotate_inputs=[(s,) for s in sets])
    baseline = baseline_cache["baseline"]
    fields = dict(worst, kb_pass=kb_pass, median_ms=timed["median_ms"], mean_ms=timed["mean_ms"],
                  baseline_median_ms=baseline["median_ms"], baseline_mean_ms=baseline["mean_ms"],
                  trials=trials, reps=reps, rotations=copies, **extra)
    flag = measure.speedup_flag(timed["median_ms"], baseline["median_ms"])
    if flag:
        fields["flag"] = flag
    return result(name, "ok", "", **fields)
