"""Verification and timing worker (docs/CONTRACTS.md §5):

    python -m fact.worker --job JOB.json

Prints one JSON object per line on stdout, flushed: {"event": "begin", ...}
before each candidate and {"event": "result", ...} after it. Everything else
(warnings, library chatter) goes to stderr: fd 1 is redirected at start-up.

A candidate passes only by DESIGN.md's rules: >= 5 trials with fresh inputs,
each trial runs the kernel on torch.rand inputs (KernelBench allclose against
eager in the input dtype) and on zero-mean normal inputs (as accurate as eager
against float64), output poisoned with NaN before every run. Only passing
candidates are timed; eager on the same subgraph is timed the same way in this
process (baseline_median_ms).

Hazard: a kernel that faults leaves this process's CUDA context unusable. The
worker then prints the reason on stderr and exits with status 3 without a
result line; realize records the begun candidate as a crash (with the stderr
tail) and starts a new worker for the candidates that remain.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from . import kernel as _kernel
from . import measure, reference

EXIT_CONTEXT_LOST = 3
MIN_TRIALS = 5
_SEED_BASE = 20261125


class _Emitter:
    """Writes protocol lines to the original stdout; stdout itself is pointed
    at stderr so nothing else can corrupt the protocol stream."""

    def __init__(self):
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def emit(self, obj: dict) -> None:
        self._out.write(json.dumps(obj, allow_nan=False, default=str) + "\n")
        self._out.flush()


def _finite(x):
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


def _result(name: str, status: str, reason: str = "", **fields) -> dict:
    out = {"event": "result", "name": name, "status": status, "reason": reason,
           "max_abs_err": 0.0, "fail_frac": 0.0, "eager_fail_frac": 0.0, "eager_max_abs_err": 0.0,
           "kb_pass": False, "median_ms": 0.0, "mean_ms": 0.0, "baseline_median_ms": 0.0}
    out.update(fields)
    return {k: _finite(v) for k, v in out.items()}


class Bench:
    """What the pattern benches share (GEMM: PatternBench below; layernorm /
    attention: fact.worker_ops.OpBench): the pattern's non-const inputs, the
    outputs its kernel writes (`output_ids`, set by the subclass with `dtype`),
    fresh inputs and outputs. Per-kind hooks, used by evaluate():
    problem(inputs, outputs) -> the kernel's problem struct; eager(inputs,
    promote64) -> what the baseline times; eager_outputs(inputs, promote64) ->
    {output id: eager tensor}; describe_output(ident) -> text naming an output
    in a failure reason; lost_reason(exc) -> the text of a lost context."""

    def __init__(self, ir: dict, pattern: dict, device):
        import torch

        self._torch = torch
        self.ir, self.pattern, self.device = ir, pattern, device
        tensors = ir["tensors"]
        self.input_ids = [i for i in pattern["inputs"] if tensors.get(i, {}).get("kind") != "const"]
        for ident in self.input_ids + list(pattern["outputs"]):
            if ident not in tensors:
                raise KeyError(f"tensor {ident!r} of pattern {pattern.get('id')} is not in the IR")

    def _empty(self, entry):
        return self._torch.empty_strided(entry["shape"], entry["strides"], dtype=_kernel.torch_dtype(entry["dtype"]),
                                         device=self.device)

    def fixed_input(self, ident: str, entry: dict):
        """An input that must hold given values rather than random ones; None: random."""
        return None

    def make_inputs(self, distribution: str, seed: int) -> dict:
        """Fresh inputs of the pattern's shapes/strides: 'uniform' = torch.rand's
        U[0,1) (KernelBench), 'normal' = N(0,1)."""
        torch = self._torch
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        inputs = {}
        for ident in self.input_ids:
            entry = self.ir["tensors"][ident]
            fixed = self.fixed_input(ident, entry)
            if fixed is not None:
                inputs[ident] = fixed
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

    def new_outputs(self) -> dict:
        return {ident: self._empty(self.ir["tensors"][ident]) for ident in self.output_ids}

    def input_bytes(self) -> int:
        total = 0
        for ident in self.input_ids + self.output_ids:
            entry = self.ir["tensors"][ident]
            numel = 1
            for s in entry["shape"]:
                numel *= s
            total += numel * _kernel.torch_dtype(entry["dtype"]).itemsize
        return total


class PatternBench(Bench):
    """Inputs, references and kernel launches of one GEMM plan pattern."""

    def __init__(self, ir: dict, pattern: dict, device):
        self.gemm = pattern.get("gemm")
        if not self.gemm:
            raise ValueError(f"pattern {pattern.get('id')} has no gemm binding; this worker runs GEMM kernels")
        # A fused epilogue chain (sm90 EVT variant): the kernel computes every node of
        # the pattern and is checked against all of them; else only the GEMM core.
        nodes, outputs, self.fused = _kernel.kernel_binding(pattern)
        super().__init__(ir, dict(pattern, nodes=nodes, outputs=outputs), device)
        pattern = self.pattern
        self.out_id = self.fused["output"] if self.fused else self.gemm["d"]["tensor"]
        if self.out_id not in pattern["outputs"]:
            raise ValueError(f"binding output {self.out_id!r} is not a pattern output")
        self.output_ids = [self.out_id]
        self.out_entry = ir["tensors"][self.out_id]
        self.dtype = _kernel.torch_dtype(self.out_entry["dtype"])

    def eager(self, inputs: dict, promote64: bool = False):
        (out,) = [o for o, ident in zip(reference.run_pattern(self.ir, self.pattern, inputs, promote64),
                                        self.pattern["outputs"]) if ident == self.out_id]
        return out

    def eager_outputs(self, inputs: dict, promote64: bool = False) -> dict:
        return {self.out_id: self.eager(inputs, promote64)}

    def problem(self, inputs: dict, outputs: dict):
        return _kernel.problem_from_binding(self.gemm, inputs, outputs[self.out_id], fused=self.fused)

    def describe_output(self, ident: str) -> str:
        return ""  # one output: a reason names none

    def lost_reason(self, exc: Exception) -> str:
        return str(exc)


class _Launcher:
    def __init__(self, kern, bench: Bench):
        self.kern = kern
        self.bench = bench
        self._workspace = None

    def prepare(self, problem):
        """Workspace for `problem`; returns (pointer, bytes)."""
        torch = self.bench._torch
        size = self.kern.workspace_size(problem)
        if size and (self._workspace is None or self._workspace.numel() < size):
            self._workspace = torch.empty(size, dtype=torch.uint8, device=self.bench.device)
        return (self._workspace.data_ptr() if size else 0), size

    def run(self, problem, workspace):
        stream = _kernel.stream_pointer(self.bench.device)
        self.kern.run(problem, workspace[0], workspace[1], stream)


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _context_alive(torch, device=None) -> bool:
    if device is not None and device.type != "cuda":
        return True
    try:
        torch.cuda.synchronize()
        return float(torch.ones(1, device="cuda").sum().item()) == 1.0
    except Exception:  # noqa: BLE001 - any failure here means the context is gone
        return False


class _ContextLost(Exception):
    pass


def evaluate(candidate: dict, bench: Bench, tol: float, trials: int, timing: dict,
             baseline_cache: dict, loader=_kernel.GemmKernel) -> dict:
    """Verify (and, when it passes, time) one candidate of any bench; returns its
    result line. Raises _ContextLost when the CUDA context died."""
    torch = bench._torch
    name = candidate.get("name", "")
    extra = {"math": candidate.get("math")} if candidate.get("math") else {}
    try:
        kern = loader(candidate["library"])
    except (_kernel.KernelError, KeyError) as exc:
        return _result(name, "launch_error", f"load: {exc}", **extra)
    if getattr(kern, "name", name) and name and getattr(kern, "name", name) != name:
        extra["note"] = f"library reports variant {kern.name!r}"
    launcher = _Launcher(kern, bench)

    def lost_or(exc, lost: str, reason: str):
        if not _context_alive(torch, bench.device):
            raise _ContextLost(lost) from exc
        return _result(name, "launch_error", reason, **extra)

    worst = {"fail_frac": 0.0, "max_abs_err": 0.0, "eager_fail_frac": 0.0, "eager_max_abs_err": 0.0,
             "kb_max_abs_diff": 0.0}
    kb_pass = True
    for trial in range(trials):
        for distribution in ("uniform", "normal"):
            seed = _SEED_BASE + 2 * trial + (distribution == "normal")
            inputs = bench.make_inputs(distribution, seed)
            outs = bench.new_outputs()
            try:
                problem = bench.problem(inputs, outs)
            except _kernel.BindingError as exc:
                return _result(name, "cant_implement", f"binding: {exc}", **extra)
            why = kern.can_implement(problem)
            if why is not None:
                return _result(name, "cant_implement", why, **extra)
            for out in outs.values():
                out.fill_(float("nan"))
            try:
                workspace = launcher.prepare(problem)
                launcher.run(problem, workspace)
                _sync(torch, bench.device)
            except _kernel.KernelError as exc:
                return lost_or(exc, bench.lost_reason(exc), str(exc))
            except RuntimeError as exc:  # CUDA error surfaced by synchronize
                return lost_or(exc, f"{type(exc).__name__}: {exc}", f"{type(exc).__name__}: {exc}")
            eager = bench.eager_outputs(inputs)
            ref64 = bench.eager_outputs(inputs, promote64=True) if distribution == "normal" else None
            for ident, out in outs.items():
                where = f"trial {trial + 1}/{trials} ({distribution} inputs){bench.describe_output(ident)}"
                if distribution == "uniform":
                    kb = measure.kernelbench_allclose(out, eager[ident], tol)
                    worst["kb_max_abs_diff"] = max(worst["kb_max_abs_diff"], kb["max_abs_diff"])
                    if not kb["passed"]:
                        return _result(name, "wrong", f"{where}: {kb['reason']}", kb_pass=False, **worst, **extra)
                else:
                    acc = measure.accuracy_vs_fp64(out, ref64[ident], eager[ident], tol)
                    for key in ("fail_frac", "max_abs_err", "eager_fail_frac", "eager_max_abs_err"):
                        worst[key] = max(worst[key], acc[key])
                    if not acc["passed"]:
                        return _result(name, "wrong", f"{where}: {acc['reason']}", kb_pass=kb_pass, **worst, **extra)
            del inputs, outs, eager, ref64

    warmup = int(timing.get("warmup", 10))
    reps = int(timing.get("reps", 100))
    copies = measure.rotation_count(bench.input_bytes()) if bench.device.type == "cuda" else 1
    sets = [bench.make_inputs("uniform", _SEED_BASE + 1000 + i) for i in range(copies)]
    outs = [bench.new_outputs() for _ in range(copies)]
    problems = [bench.problem(s, o) for s, o in zip(sets, outs)]
    workspace = launcher.prepare(problems[0])
    timer = measure.time_cuda if bench.device.type == "cuda" else measure.time_host
    try:
        timed = timer(lambda p: launcher.run(p, workspace), warmup, reps, rotate_inputs=[(p,) for p in problems])
    except (_kernel.KernelError, RuntimeError) as exc:
        return lost_or(exc, bench.lost_reason(exc), f"during timing: {exc}")
    if "baseline" not in baseline_cache:
        base = timer(lambda s: bench.eager(s), warmup, reps, rotate_inputs=[(s,) for s in sets])
        baseline_cache["baseline"] = base
    baseline = baseline_cache["baseline"]
    fields = dict(worst, kb_pass=kb_pass, median_ms=timed["median_ms"], mean_ms=timed["mean_ms"],
                  baseline_median_ms=baseline["median_ms"], baseline_mean_ms=baseline["mean_ms"],
                  trials=trials, reps=reps, rotations=copies, **extra)
    flag = measure.speedup_flag(timed["median_ms"], baseline["median_ms"])
    if flag:
        fields["flag"] = flag
    return _result(name, "ok", "", **fields)


def _context_lost(name: str, reason: str) -> int:
    # No result line: realize records the begun candidate as a crash with this
    # stderr text and starts a new worker for the remaining candidates.
    print(f"fact.worker: CUDA context lost while running {name}: {reason}", file=sys.stderr, flush=True)
    return EXIT_CONTEXT_LOST


def _worker_ops():
    """fact.worker_ops (imported late: it builds on this module)."""
    from . import worker_ops

    return worker_ops


def run_job(job: dict, emit, loader=_kernel.GemmKernel, device=None) -> int:
    """Runs every candidate of `job`, emitting protocol lines through `emit`.

    `device` defaults to the current CUDA device; tests pass a CPU device with
    a CPU kernel stand-in (then timing uses measure.time_host)."""
    import torch

    candidates = job.get("candidates", [])
    pattern = job["pattern"]
    if device is None and not torch.cuda.is_available():
        for cand in candidates:
            emit({"event": "begin", "name": cand.get("name", "")})
            emit(_result(cand.get("name", ""), "launch_error",
                         "no CUDA device visible to the worker (torch.cuda.is_available() is False)"))
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # eager fp32 baseline/reference stays fp32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with open(job["ir"]) as f:
            ir = json.load(f)
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        # layernorm / attention patterns have their own bench (fact.worker_ops); GEMMs this one.
        ops = _worker_ops()
        if ops.handles(pattern):
            bench, loader = ops.OpBench(ir, pattern, device), ops.loader_for(pattern, loader)
        else:
            bench = PatternBench(ir, pattern, device)
    except (OSError, ValueError, KeyError) as exc:
        for cand in candidates:  # every candidate gets the reason, none is silently lost
            emit({"event": "begin", "name": cand.get("name", "")})
            emit(_result(cand.get("name", ""), "launch_error", f"job error: {type(exc).__name__}: {exc}"))
        return 2
    tol = job.get("tolerance")
    if tol is None:
        tol = measure.default_tolerance(bench.dtype)
    trials = max(MIN_TRIALS, int(job.get("trials", MIN_TRIALS)))
    timing = job.get("timing", {})
    baseline_cache: dict = {}
    for cand in candidates:
        name = cand.get("name", "")
        emit({"event": "begin", "name": name})
        try:
            result = evaluate(cand, bench, float(tol), trials, timing, baseline_cache, loader)
        except _ContextLost as exc:
            return _context_lost(name, str(exc))
        except Exception as exc:  # noqa: BLE001 - one candidate's failure must not end the job
            if not _context_alive(torch, device):
                return _context_lost(name, f"{type(exc).__name__}: {exc}")
            detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            result = _result(name, "launch_error", f"worker error: {detail}")
        emit(result)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fact.worker")
    parser.add_argument("--job", required=True, help="job JSON (docs/CONTRACTS.md §5)")
    args = parser.parse_args(argv)
    emitter = _Emitter()
    try:
        with open(args.job) as f:
            job = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"fact.worker: error: cannot read job {args.job}: {exc}", file=sys.stderr)
        return 2
    try:
        return run_job(job, emitter.emit)
    except (OSError, ValueError, KeyError) as exc:
        print(f"fact.worker: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
