"""Kernel timeline of one forward pass of a composed module (GPU only).

    python -m bench.timeline EXAMPLE.py COMPOSED_DIR [--iters N]

Times ModelNew (COMPOSED_DIR, written by `fact optimize`) on the example's inputs
the way bench/run.py does (autograd on) and under torch.no_grad(), with the host
time of one forward call; then runs it under torch.profiler and prints, for the
last of N forwards (the earlier ones are warm-up), every GPU activity in stream
order: start offset, duration, the idle
gap before it, and its name; then the totals (busy, idle, span) and the time per
kernel family. What it answers: where a composed module's end-to-end time goes
beyond the sum of its patterns' tuned times (launch gaps, copies, allocator
work, PyTorch glue). Diagnostic output only: reported timings come from
bench/run.py (DESIGN.md's timing rules), not from this profile.
"""
import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "python"))

import torch  # noqa: E402

from bench import run as bench_run  # noqa: E402
from fact import measure  # noqa: E402


def gpu_events(trace):
    """GPU-side events (kernels, memcpy, memset) of a Chrome trace, sorted by start."""
    events = [e for e in trace.get("traceEvents", [])
              if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    return sorted(events, key=lambda e: float(e["ts"]))


def runtime_calls(trace):
    """Counts and host time of the CUDA runtime/driver calls that can stall the
    host or the stream (allocation, synchronisation, copies) in a Chrome trace."""
    calls = collections.defaultdict(lambda: [0, 0.0])
    for e in trace.get("traceEvents", []):
        if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver"):
            name = e.get("name", "")
            if any(k in name for k in ("Malloc", "Free", "Synchronize", "Memcpy", "Memset", "EventQuery")):
                calls[name][0] += 1
                calls[name][1] += float(e.get("dur", 0.0))
    return calls


def family(name):
    """A short grouping key for a kernel name (template heads, not arguments)."""
    head = name.split("<")[0].split("(")[0]
    return head.rsplit("::", 1)[-1][:60] or name[:60]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("example", help="KernelBench-format file (Model, get_inputs, get_init_inputs)")
    p.add_argument("composed", help="folder with ModelNew.py (fact optimize's output)")
    p.add_argument("--iters", type=int, default=3, help="forwards run; the last one is shown (default 3)")
    p.add_argument("--reps", type=int, default=20, help="timed forwards per mode (default 20)")
    p.add_argument("--no-grad", action="store_true", help="profile under torch.no_grad() (default: autograd on)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.timeline: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2

    bench_run.torch = torch  # bench.run imports torch lazily (in its main)
    example = bench_run.load_example(args.example)
    module = bench_run.load_composed(args.composed, "timeline")
    model = bench_run.build_model(module.ModelNew, list(example.get_init_inputs()))
    inputs = bench_run.make_inputs(example, bench_run.TIME_SEED, "uniform")
    grad_modes = {"autograd on (as bench/run.py times it)": torch.enable_grad, "torch.no_grad()": torch.no_grad}
    # The end-to-end numbers this profile is meant to explain: bench/run.py's timing
    # (CUDA events, L2 flush) and the host time of one forward call (no sync inside).
    for label, mode in grad_modes.items():
        with mode(), bench_run.fp32_exact():
            timed = measure.time_cuda(lambda: model(*inputs), warmup=3, reps=args.reps, flush_l2=True)
            torch.cuda.synchronize()
            host = []
            for _ in range(args.reps):
                start = time.perf_counter()
                model(*inputs)
                host.append((time.perf_counter() - start) * 1e3)
                torch.cuda.synchronize()
        print(f"{label}: event-timed median {timed['median_ms']:.3f} ms (mean {timed['mean_ms']:.3f}); "
              f"host time of the forward call median {statistics.median(host):.3f} ms")
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.no_grad() if args.no_grad else torch.enable_grad(), bench_run.fp32_exact():
        for _ in range(max(0, args.iters - 1)):
            model(*inputs)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=activities) as prof:
            model(*inputs)
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        trace_path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace_path))
        with open(trace_path) as f:
            trace = json.load(f)
    events = gpu_events(trace)
    calls = runtime_calls(trace)
    if not events:
        print("bench.timeline: the profile has no GPU events (CUPTI unavailable?)", file=sys.stderr)
        return 1

    t0 = float(events[0]["ts"])
    end_prev = t0
    busy = idle = 0.0
    per_family = collections.defaultdict(lambda: [0, 0.0])
    print(f"{'start us':>10} {'dur us':>9} {'gap us':>8}  name")
    for e in events:
        ts, dur = float(e["ts"]), float(e.get("dur", 0.0))
        gap = max(0.0, ts - end_prev)
        busy += dur
        idle += gap
        end_prev = max(end_prev, ts + dur)
        fam = per_family[family(e["name"])]
        fam[0] += 1
        fam[1] += dur
        print(f"{ts - t0:10.1f} {dur:9.1f} {gap:8.1f}  {e['name'][:150]}")
    print(f"\nGPU events {len(events)}: busy {busy / 1e3:.3f} ms, idle gaps {idle / 1e3:.3f} ms, "
          f"span {(end_prev - t0) / 1e3:.3f} ms")
    print("\nhost runtime calls that can stall (count, host ms):" + ("" if calls else " none"))
    for name, (count, total) in sorted(calls.items(), key=lambda kv: -kv[1][1]):
        print(f"  {count:4d} {total / 1e3:8.3f}  {name}")
    print("\nper kernel family (count, total ms):")
    for name, (count, total) in sorted(per_family.items(), key=lambda kv: -kv[1][1]):
        print(f"  {count:4d} {total / 1e3:8.3f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
