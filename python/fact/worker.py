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
from . import measure, reference, worker_ops

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


class PatternBench:
    """Inputs, references and kernel launches of one plan pattern."""

    def __init__(self, ir: dict, pattern: dict, device):
        import torch

        self.ir = ir
        self.gemm = pattern.get("gemm")
        if not self.gemm:
            raise ValueError(f"pattern {pattern.get('id')} has no gemm binding; this worker runs GEMM kernels")
        # A fused epilogue chain (sm90 EVT variant): the kernel computes every node of
        # the pattern and is checked against all of them; else only the GEMM core.
        nodes, outputs, self.fused = _kernel.kernel_binding(pattern)
        self.pattern = pattern = dict(pattern, nodes=nodes, outputs=outputs)
        self.device = device
        tensors = ir["tensors"]
        self.input_ids = [i for i in pattern["inputs"] if tensors.get(i, {}).get("kind") != "const"]
        for ident in self.input_ids + list(pattern["outputs"]):
            if ident not in tensors:
                raise KeyError(f"tensor {ident!r} of pattern {pattern.get('id')} is not in the IR")
        self.out_id = self.fused["output"] if self.fused else self.gemm["d"]["tensor"]
        if self.out_id not in pattern["outputs"]:
            raise ValueError(f"binding output {self.out_id!r} is not a pattern output")
        self.out_entry = tensors[self.out_id]
        self.dtype = _kernel.torch_dtype(self.out_entry["dtype"])
        self._torch = torch

    def _empty(self, entry):
        torch = self._torch
        return torch.empty_strided(entry["shape"], entry["strides"], dtype=_kernel.torch_dtype(entry["dtype"]),
                                   device=self.device)

    def make_inputs(self, distribution: str, seed: int) -> dict:
        """Fresh inputs of the pattern's shapes/strides: 'uniform' = torch.rand's
        U[0,1) (KernelBench), 'normal' = N(0,1)."""
        torch = self._torch
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        inputs = {}
        for ident in self.input_ids:
            t = self._empty(self.ir["tensors"][ident])
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

    def eager(self, inputs: dict, promote64: bool = False):
        (out,) = [o for o, ident in zip(reference.run_pattern(self.ir, self.pattern, inputs, promote64),
                                        self.pattern["outputs"]) if ident == self.out_id]
        return out

    def new_output(self):
        return self._empty(self.out_entry)

    def input_bytes(self) -> int:
        total = 0
        for ident in self.input_ids + [self.out_id]:
            entry = self.ir["tensors"][ident]
            numel = 1
            for s in entry["shape"]:
                numel *= s
            total += numel * _kernel.torch_dtype(entry["dtype"]).itemsize
        return total


class _Launcher:
    def __init__(self, kern, bench: PatternBench):
        self.kern = kern
        self.bench = bench
        self._workspace = None

    def problem(self, inputs: dict, out):
        return _kernel.problem_from_binding(self.bench.gemm, inputs, out, fused=self.bench.fused)

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


def evaluate(candidate: dict, bench: PatternBench, tol: float, trials: int, timing: dict,
             baseline_cache: dict, loader=_kernel.GemmKernel) -> dict:
    """Verify (and, when it passes, time) one candidate; returns its result line."""
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

    worst = {"fail_frac": 0.0, "max_abs_err": 0.0, "eager_fail_frac": 0.0, "eager_max_abs_err": 0.0,
             "kb_max_abs_diff": 0.0}
    kb_pass = True
    for trial in range(trials):
        for distribution in ("uniform", "normal"):
            seed = _SEED_BASE + 2 * trial + (distribution == "normal")
            inputs = bench.make_inputs(distribution, seed)
            out = bench.new_output()
            try:
                problem = launcher.problem(inputs, out)
            except _kernel.BindingError as exc:
                return _result(name, "cant_implement", f"binding: {exc}", **extra)
            why = kern.can_implement(problem)
            if why is not None:
                return _result(name, "cant_implement", why, **extra)
            out.fill_(float("nan"))
            try:
                workspace = launcher.prepare(problem)
                launcher.run(problem, workspace)
                _sync(torch, bench.device)
            except _kernel.KernelError as exc:
                if not _context_alive(torch, bench.device):
                    raise _ContextLost(str(exc)) from exc
                return _result(name, "launch_error", str(exc), **extra)
            except RuntimeError as exc:  # CUDA error surfaced by synchronize
                if not _context_alive(torch, bench.device):
                    raise _ContextLost(f"{type(exc).__name__}: {exc}") from exc
                return _result(name, "launch_error", f"{type(exc).__name__}: {exc}", **extra)
            eager = bench.eager(inputs)
            where = f"trial {trial + 1}/{trials} ({distribution} inputs)"
            if distribution == "uniform":
                kb = measure.kernelbench_allclose(out, eager, tol)
                worst["kb_max_abs_diff"] = max(worst["kb_max_abs_diff"], kb["max_abs_diff"])
                if not kb["passed"]:
                    kb_pass = False
                    return _result(name, "wrong", f"{where}: {kb['reason']}", kb_pass=False, **worst, **extra)
            else:
                ref64 = bench.eager(inputs, promote64=True)
                acc = measure.accuracy_vs_fp64(out, ref64, eager, tol)
                for key in ("fail_frac", "max_abs_err", "eager_fail_frac", "eager_max_abs_err"):
                    worst[key] = max(worst[key], acc[key])
                if not acc["passed"]:
                    return _result(name, "wrong", f"{where}: {acc['reason']}", kb_pass=kb_pass, **worst, **extra)
            del inputs, out, eager

    warmup = int(timing.get("warmup", 10))
    reps = int(timing.get("reps", 100))
    copies = measure.rotation_count(bench.input_bytes()) if bench.device.type == "cuda" else 1
    sets = [bench.make_inputs("uniform", _SEED_BASE + 1000 + i) for i in range(copies)]
    outs = [bench.new_output() for _ in range(copies)]
    problems = [launcher.problem(s, o) for s, o in zip(sets, outs)]
    workspace = launcher.prepare(problems[0])
    timer = measure.time_cuda if bench.device.type == "cuda" else measure.time_host
    try:
        timed = timer(lambda p: launcher.run(p, workspace), warmup, reps, rotate_inputs=[(p,) for p in problems])
    except (_kernel.KernelError, RuntimeError) as exc:
        if not _context_alive(torch, bench.device):
            raise _ContextLost(str(exc)) from exc
        return _result(name, "launch_error", f"during timing: {exc}", kb_pass=kb_pass, **worst, **extra)
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
        bench = worker_ops.OpBench(ir, pattern, device) if worker_ops.handles(pattern) else PatternBench(ir, pattern, device)
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
            if isinstance(bench, worker_ops.OpBench):
                result = worker_ops.evaluate(cand, bench, float(tol), trials, timing, baseline_cache,
                                             worker_ops.loader_for(pattern, loader))
            else:
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
