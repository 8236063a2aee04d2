"""Timing and accuracy criteria shared by the worker (fact.worker) and the
benchmark harness (bench/): one definition of "passing a tolerance" and one
way to time, per DESIGN.md "Verification and timing rules".

Accuracy (DESIGN.md "Passing a tolerance"):
  kernelbench_allclose: allclose(out, eager_in_input_dtype, atol=tol, rtol=tol),
      on the workload's (torch.rand) inputs; NaN never passes.
  accuracy_vs_fp64: on zero-mean normal inputs, against a float64 reference,
      fail_frac <= eager_fail_frac + 0.001 and max_abs_err <= 2 * eager_max_abs_err,
      where an element fails when |x - ref| > tol + tol * |ref| or x is not finite.
"""
from __future__ import annotations

import statistics

FAIL_FRAC_SLACK = 0.001
MAX_ERR_FACTOR = 2.0
SPEEDUP_FLAG = 10.0
_CHUNK = 1 << 24  # elements per chunk when comparing (bounds the float64 temporaries)


def default_tolerance(dtype) -> float:
    """KernelBench's rule: 1e-2 for half-precision outputs, 1e-4 otherwise."""
    import torch

    return 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4


def _flat(x):
    return x.detach().reshape(-1)


def error_stats(x, ref64, tol: float) -> dict:
    """Elementwise error of `x` against the float64 `ref64` (same shape)."""
    import torch

    if tuple(x.shape) != tuple(ref64.shape):
        raise ValueError(f"shape {list(x.shape)} vs reference {list(ref64.shape)}")
    xf, rf = _flat(x), _flat(ref64)
    total = xf.numel()
    fails = 0
    nonfinite = 0
    max_abs = 0.0
    max_ref = 0.0
    for start in range(0, total, _CHUNK):
        xs = xf[start:start + _CHUNK].to(torch.float64)
        rs = rf[start:start + _CHUNK].to(torch.float64)
        bad = ~torch.isfinite(xs)
        diff = (xs - rs).abs()
        fail = (diff > tol + tol * rs.abs()) | bad
        fails += int(fail.sum().item())
        nonfinite += int(bad.sum().item())
        finite_diff = torch.where(bad, torch.zeros_like(diff), diff)
        if finite_diff.numel():
            max_abs = max(max_abs, float(finite_diff.max().item()))
            max_ref = max(max_ref, float(rs.abs().max().item()))
    return {"fail_frac": fails / total if total else 0.0,
            "max_abs_err": float("inf") if nonfinite else max_abs,
            "nonfinite": nonfinite, "numel": total, "max_abs_ref": max_ref}


def accuracy_vs_fp64(out, ref64, eager_out, tol: float) -> dict:
    """Criterion 2: `out` is as accurate as eager PyTorch (`eager_out`, same
    inputs) against the float64 reference `ref64`.

    The max-error bound never drops below half an ulp of the output dtype at
    the reference's largest magnitude, so an eager result that happens to be
    exact does not demand more than exact rounding."""
    import torch

    mine = error_stats(out, ref64, tol)
    eager = error_stats(eager_out, ref64, tol)
    floor = 0.5 * torch.finfo(out.dtype).eps * mine["max_abs_ref"] if out.is_floating_point() else 0.0
    max_allowed = max(MAX_ERR_FACTOR * eager["max_abs_err"], floor)
    frac_allowed = eager["fail_frac"] + FAIL_FRAC_SLACK
    reasons = []
    if mine["nonfinite"]:
        reasons.append(f"{mine['nonfinite']} non-finite elements")
    if mine["fail_frac"] > frac_allowed:
        reasons.append(f"fail_frac {mine['fail_frac']:.3g} > eager {eager['fail_frac']:.3g} + {FAIL_FRAC_SLACK}")
    if mine["max_abs_err"] > max_allowed:
        reasons.append(f"max_abs_err {mine['max_abs_err']:.3g} > {MAX_ERR_FACTOR:g} x eager "
                       f"{eager['max_abs_err']:.3g}")
    return {"passed": not reasons, "reason": "; ".join(reasons),
            "fail_frac": mine["fail_frac"], "max_abs_err": mine["max_abs_err"],
            "eager_fail_frac": eager["fail_frac"], "eager_max_abs_err": eager["max_abs_err"],
            "nonfinite": mine["nonfinite"]}


def kernelbench_allclose(out, eager_out, tol: float) -> dict:
    """Criterion 1: KernelBench's allclose(atol=rtol=tol) against eager in the
    input dtype. NaN fails (equal_nan=False)."""
    import torch

    if tuple(out.shape) != tuple(eager_out.shape):
        return {"passed": False, "reason": f"shape {list(out.shape)} vs eager {list(eager_out.shape)}",
                "max_abs_diff": float("inf")}
    passed = bool(torch.allclose(out, eager_out.to(out.dtype), atol=tol, rtol=tol))
    diff = (out.detach().to(torch.float64) - eager_out.detach().to(torch.float64)).abs()
    finite = torch.isfinite(diff)
    max_diff = float(diff[finite].max().item()) if bool(finite.any()) else 0.0
    if not bool(finite.all()):
        max_diff = float("inf")
    reason = "" if passed else f"allclose(atol=rtol={tol:g}) failed; max |out - eager| = {max_diff:.3g}"
    return {"passed": passed, "reason": reason, "max_abs_diff": max_diff}


def l2_cache_bytes(device=None) -> int:
    import torch

    props = torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 50 << 20))


def rotation_count(bytes_per_set: int, device=None) -> int:
    """How many input copies to rotate through so consecutive runs do not find
    their inputs in L2: 1 when one set already exceeds L2."""
    l2 = l2_cache_bytes(device)
    if bytes_per_set <= 0 or bytes_per_set > l2:
        return 1
    return min(16, max(2, -(-2 * l2 // bytes_per_set)))


def _rotating_call(fn, rotate_inputs):
    """call(i): fn() or, with input sets to rotate through, fn(*set i mod n)."""
    def call(i):
        if rotate_inputs:
            return fn(*rotate_inputs[i % len(rotate_inputs)])
        return fn()
    return call


def time_cuda(fn, warmup: int = 10, reps: int = 100, flush_l2: bool = True, rotate_inputs=None) -> dict:
    """Times `fn` on the current CUDA stream with CUDA events.

    `rotate_inputs`: optional list of argument tuples; run i calls
    fn(*rotate_inputs[i % len]). Without it fn() is called. With flush_l2, a
    buffer larger than L2 (>= 256 MiB) is overwritten before every timed run,
    outside the timed interval."""
    import torch

    flush = None
    if flush_l2:
        size = max(256 << 20, 2 * l2_cache_bytes())
        flush = torch.empty(size // 4, dtype=torch.int32, device="cuda")

    call = _rotating_call(fn, rotate_inputs)

    for i in range(warmup):
        call(i)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if flush is not None:
            flush.zero_()
        starts[i].record()
        call(i)
        ends[i].record()
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "min_ms": min(times), "max_ms": max(times),
            "stdev_ms": statistics.pstdev(times) if len(times) > 1 else 0.0,
            "reps": reps, "warmup": warmup, "flush_l2": flush_l2,
            "rotations": len(rotate_inputs) if rotate_inputs else 1}


def time_host(fn, warmup: int = 10, reps: int = 100, flush_l2: bool = False, rotate_inputs=None) -> dict:
    """Wall-clock timing with time.perf_counter, same result keys as
    time_cuda. For CPU devices only (the worker's CPU tests); never compare
    its numbers with time_cuda's."""
    import time

    call = _rotating_call(fn, rotate_inputs)

    for i in range(warmup):
        call(i)
    times = []
    for i in range(reps):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "min_ms": min(times), "max_ms": max(times),
            "stdev_ms": statistics.pstdev(times) if len(times) > 1 else 0.0,
            "reps": reps, "warmup": warmup, "flush_l2": False,
            "rotations": len(rotate_inputs) if rotate_inputs else 1}


def speedup_flag(median_ms: float, baseline_ms: float) -> str | None:
    """DESIGN.md: a speedup above 10x is flagged for a second look."""
    if median_ms > 0 and baseline_ms / median_ms > SPEEDUP_FLAG:
        return f"speedup > {SPEEDUP_FLAG:g}x: check"
    return None
