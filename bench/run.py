#!/usr/bin/env python3
"""FACT benchmark harness: every system of a suite, checked and timed in one process.

    python bench/run.py --suite l1-gemm --out bench/results \
        --fact l1-square-4096:1e-4=out/l1_square_4096_1e-4 ...

For each workload of the suite (bench/suites.py) and each system (eager-fp32,
eager-tf32, eager-bf16, inductor-default, inductor-max-autotune, the suite's
extra peers -- eager-bf16-sdpa, inductor-default-bf16,
inductor-max-autotune-bf16 for l3-minigpt -- and fact once per composed module
given with --fact and per ablation setting the workload declares), in this
order:
  1. correctness by DESIGN.md's "Passing a tolerance", checked at 1e-4 and
     1e-2: >= --trials trials of (a) torch.allclose(atol=rtol=tol) against eager
     fp32 on the workload's own torch.rand inputs and (b) as accurate as eager
     fp32 against an fp64 reference on zero-mean normal inputs;
  2. timing: CUDA events, warm-up, L2 flushed between runs, >= 100 timed runs,
     median and mean (fact.measure.time_cuda), in the same process as the
     eager-fp32 baseline.
A system that fails (compile error, exception, out of memory) is recorded with
correct=false and the error; it never stops the run. Results are written to
OUT/<card slug>/<suite>.json in DESIGN.md's schema (bench/schema.py) after
every system, so a run killed by a time limit keeps what it finished.
Workload hooks (optional names in the example file, bench/README.md):
`sdpa_variant(model)` for the eager-bf16-sdpa peer, `FACT_ABLATIONS` for
fact's per-pattern ablation.
"""
import argparse
import contextlib
import copy
import datetime
import gc
import importlib.util
import json
import math
import os
import re
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "python"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench import schema, suites  # noqa: E402  (after the sys.path set-up above)
from fact import measure  # noqa: E402  (torch-free at import: torch loads on first use)

TOLERANCES = (1e-4, 1e-2)
FP32_TOL = 1e-4
LOWP_TOL = 1e-2
FLAG_SPEEDUP = measure.SPEEDUP_FLAG
# Seeds: trial t of the correctness check uses CHECK_SEED + t; timing uses the
# workload's inputs made with TIME_SEED; models are built with MODEL_SEED so a
# ModelNew gets the same parameters as Model (CONTRACTS.md §7).
CHECK_SEED = 1000
TIME_SEED = 0
MODEL_SEED = 0

PEERS = ("eager-fp32", "eager-tf32", "eager-bf16", "eager-bf16-sdpa", "inductor-default", "inductor-default-bf16",
         "inductor-max-autotune", "inductor-max-autotune-bf16")
# Every suite runs these; bench/suites.py's EXTRA_PEERS adds the others per suite.
BASE_PEERS = ("eager-fp32", "eager-tf32", "eager-bf16", "inductor-default", "inductor-max-autotune")
# torch.compile peers: name -> (mode, bf16 autocast around every call).
INDUCTOR_MODES = {"inductor-default": (None, False), "inductor-default-bf16": (None, True),
                  "inductor-max-autotune": ("max-autotune-no-cudagraphs", False),
                  "inductor-max-autotune-bf16": ("max-autotune-no-cudagraphs", True)}
PEER_PRECISION = {"eager-fp32": "fp32", "eager-tf32": "tf32", "eager-bf16": "bf16", "eager-bf16-sdpa": "bf16",
                  "inductor-default": "fp32", "inductor-default-bf16": "bf16",
                  "inductor-max-autotune": "fp32", "inductor-max-autotune-bf16": "bf16"}
LOWP_PEERS = tuple(name for name, precision in PEER_PRECISION.items() if precision != "fp32")
# Workload hooks: a peer that needs a hook the example file lacks is left out
# (a note) when it came from the suite's defaults, a failed record when asked for.
PEER_HOOKS = {"eager-bf16-sdpa": "sdpa_variant"}
ABLATIONS_HOOK = "FACT_ABLATIONS"

torch = None  # imported in main(): `--help`, `--show` and the schema tests need no torch/CUDA.


# --------------------------------------------------------------------------- loading

def load_file_module(path, name):
    """Import the Python file `path` as a fresh module called `name`."""
    spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(path):
    module = load_file_module(path, "fact_bench_" + re.sub(r"\W", "_", Path(path).stem))
    for attr in ("Model", "get_inputs", "get_init_inputs"):
        if not hasattr(module, attr):
            raise AttributeError(f"{path} is not KernelBench format: it has no '{attr}'")
    return module


def default_peers(suite_name):
    """The peers a suite runs when --systems is not given, in PEERS order."""
    extra = suites.EXTRA_PEERS.get(suite_name, ())
    return [p for p in PEERS if p in BASE_PEERS or p in extra]


def missing_hook(name, example):
    """Why `example` cannot run peer `name` (a hook it lacks), or None."""
    hook = PEER_HOOKS.get(name)
    if hook and not callable(getattr(example, hook, None)):
        return (f"{Path(example.__file__).name} offers no {hook}(model) hook, which the {name} peer needs "
                f"(bench/README.md, \"Workload hooks\")")
    return None


def run_order(entries):
    """`entries` ((system, spec, ablation) triples) in the order they are run: eager
    peers, then FACT, then the torch.compile peers. Records are written after each
    system, and Inductor's compiles (max-autotune: minutes per module) are what runs out
    a device call's time limit; run last, they cannot cost FACT's records."""
    def rank(entry):
        name = entry[0]
        return 2 if name in INDUCTOR_MODES else 1 if name == "fact" else 0
    return sorted(entries, key=rank)  # stable: the order within each group is kept


def ablation_settings(example):
    """[(name, FACT_PATTERNS selection)] the workload declares in FACT_ABLATIONS; [] when none.

    ValueError for a malformed table: its settings must be named and non-empty.
    """
    table = getattr(example, ABLATIONS_HOOK, None)
    if table is None:
        return []
    where = f"{Path(example.__file__).name}: {ABLATIONS_HOOK}"
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{where} must be a non-empty dict {{setting name: pattern selection}}")
    for name, selection in table.items():
        if not isinstance(name, str) or not name or not isinstance(selection, str) or not selection.strip():
            raise ValueError(f"{where}: {name!r}: {selection!r} is not a (name, FACT_PATTERNS selection) pair")
    return list(table.items())


def load_composed(directory, tag):
    """Import DIR/ModelNew.py (written by `fact compose`).

    ModelNew.py imports `Model` from the model_source.py beside it, and every
    composed directory has one of that name: the directory goes first on
    sys.path and any cached `model_source` is dropped before and after, so two
    composed modules never share the other's Model.
    """
    directory = Path(directory)
    path = directory / "ModelNew.py"
    if not path.is_file():
        raise FileNotFoundError(f"no composed module at {path} (did `fact optimize` succeed? see its log)")
    saved = list(sys.path)
    sys.modules.pop("model_source", None)
    sys.path.insert(0, str(directory))
    try:
        module = load_file_module(path, f"fact_composed_{tag}")
    finally:
        sys.path[:] = saved
        sys.modules.pop("model_source", None)
    if not hasattr(module, "ModelNew"):
        raise AttributeError(f"{path} defines no class ModelNew")
    return module


def read_json(path):
    with open(path) as f:
        return json.load(f)


def composed_precision(directory, bound=None):
    """Math modes of the realized patterns in DIR/fact_manifest.json, e.g. 'bf16x3' or 'bf16x3+tf32'.

    `bound`: only the patterns of these ids (those an ablation installed).
    """
    manifest_path = Path(directory) / "fact_manifest.json"
    if not manifest_path.is_file():
        return "unknown"
    patterns = read_json(manifest_path).get("patterns", [])
    if bound is not None:
        patterns = [p for p in patterns if p.get("id") in set(bound)]
    modes = sorted({p.get("math") for p in patterns if p.get("math")})
    # No realized pattern: everything falls back to PyTorch in fp32.
    return "+".join(modes) if modes else "fp32"


class FactSpec:
    """One `--fact` argument: WORKLOAD:TOL=DIR, TOL=DIR or DIR."""

    def __init__(self, text, suite_table):
        self.text = text
        self.workload = None
        self.tolerance = None
        spec, sep, directory = text.partition("=")
        if not sep:
            spec, directory = "", text
        self.directory = Path(directory)
        if spec:
            workload, _, tol = spec.rpartition(":")
            self.workload = workload or None
            self.tolerance = float(tol)
        if self.workload is None:
            self.workload = self._infer_workload(suite_table)
        if self.tolerance is None:
            self.tolerance = self._infer_tolerance()

    def _infer_workload(self, suite_table):
        source = self.directory / "model_source.py"
        if source.is_file():
            text = source.read_bytes()
            for workload, example in suite_table.items():
                if example.read_bytes() == text:
                    return workload
        manifest = self.directory / "fact_manifest.json"
        if manifest.is_file():
            source = read_json(manifest).get("source")
            for workload, example in suite_table.items():
                if source and Path(source).resolve() == example.resolve():
                    return workload
        raise ValueError(f"--fact {self.text}: cannot tell which workload {self.directory} is "
                         f"(its model_source.py matches no example of the suite); "
                         f"write it as WORKLOAD:TOL=DIR")

    def _infer_tolerance(self):
        for name in ("fact_manifest.json", "work/realized.json", "realized.json"):
            path = self.directory / name
            if path.is_file():
                tol = read_json(path).get("tolerance")
                if isinstance(tol, (int, float)) and tol > 0:
                    return float(tol)
        raise ValueError(f"--fact {self.text}: no tolerance in {self.directory}/fact_manifest.json or "
                         f"realized.json; write it as TOL=DIR")


# --------------------------------------------------------------------------- precision contexts

@contextlib.contextmanager
def matmul_tf32(enabled):
    """TF32 for fp32 matmuls on or off inside the block; restores the previous setting."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@contextlib.contextmanager
def bf16_autocast():
    with matmul_tf32(False), torch.autocast("cuda", dtype=torch.bfloat16):
        yield


def fp32_exact():
    return matmul_tf32(False)


# --------------------------------------------------------------------------- inputs and outputs

def make_inputs(example, seed, dist):
    """The workload's inputs on the GPU: get_inputs() under the CUDA default device.

    dist 'uniform' is the workload's own torch.rand inputs; 'normal' replaces
    every floating tensor by N(0, 1) of the same shape/dtype (DESIGN.md's
    zero-mean check). Non-tensor inputs pass through.
    """
    torch.manual_seed(seed)
    with torch.device("cuda"):
        inputs = list(example.get_inputs())
    inputs = [x.cuda() if torch.is_tensor(x) else x for x in inputs]
    if dist == "normal":
        inputs = [torch.randn_like(x) if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs]
    return inputs


def flatten_outputs(out):
    """Tensors of a module's output (a tensor, or nested tuples/lists/dicts of them)."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in flatten_outputs(out[k])]
    return []


def input_bytes(inputs):
    return sum(x.numel() * x.element_size() for x in inputs if torch.is_tensor(x))


def poison_allocator(nbytes):
    """Leave a NaN-filled block of `nbytes` in PyTorch's caching allocator.

    The next allocation of a similar size (the system's output) is likely to
    reuse it, so an output element the system never writes reads as NaN and
    fails the allclose checks (equal_nan is off) instead of passing with the
    previous trial's correct values. Best effort: the allocator may pick
    another block, but it never makes a wrong output pass.
    """
    if nbytes <= 0:
        return
    block = torch.empty(nbytes // 4 + 1, dtype=torch.float32, device="cuda")
    block.fill_(float("nan"))
    del block


def to_double(x):
    return x.double() if torch.is_tensor(x) and x.is_floating_point() else x


# --------------------------------------------------------------------------- correctness

# The criteria themselves are fact.measure's (kernelbench_allclose,
# accuracy_vs_fp64): the bench and FACT's verifier share one definition.

def _new_tol_stats():
    return {"pass": True, "kb_pass": True, "acc_pass": True, "kb_failed_trials": 0, "acc_failed_trials": 0,
            "kb_max_abs_diff": 0.0, "fail_frac": 0.0, "eager_fail_frac": 0.0, "max_abs_err": 0.0,
            "eager_max_abs_err": 0.0, "reason": ""}


def _merge_worst(stats, result, keys):
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)):
            value = float(value)
            # NaN is the worst value: keep it visible in the record.
            if math.isnan(value) or not (stats[key] >= value):
                stats[key] = value
    if result.get("reason") and not stats["reason"]:
        stats["reason"] = result["reason"]


def check_correctness(fn, eager_model, model64, example, trials):
    """Per-tolerance pass/fail and worst errors over `trials` uniform + `trials` normal trials."""
    stats = {schema.tol_key(t): _new_tol_stats() for t in TOLERANCES}
    for trial in range(trials):
        # (a) KernelBench's rule on the workload's own torch.rand inputs.
        inputs = make_inputs(example, CHECK_SEED + trial, "uniform")
        with fp32_exact():
            ref = flatten_outputs(eager_model(*inputs))
        poison_allocator(sum(r.numel() * 4 for r in ref))
        out = flatten_outputs(fn(*inputs))
        _check_structure(out, ref)
        for tol in TOLERANCES:
            s = stats[schema.tol_key(tol)]
            trial_ok = True
            for o, r in zip(out, ref):
                kb = measure.kernelbench_allclose(o.float(), r.float(), tol)
                _merge_worst(s, {"kb_max_abs_diff": kb["max_abs_diff"], "reason": kb["reason"]},
                             ("kb_max_abs_diff",))
                trial_ok = trial_ok and bool(kb["passed"])
            if not trial_ok:
                s["kb_pass"] = s["pass"] = False
                s["kb_failed_trials"] += 1
        del inputs, ref, out

        # (b) as accurate as eager fp32 against fp64, on zero-mean normal inputs.
        inputs = make_inputs(example, CHECK_SEED + 10_000 + trial, "normal")
        with fp32_exact():
            eager_out = flatten_outputs(eager_model(*inputs))
        inputs64 = [to_double(x) for x in inputs]
        ref64 = flatten_outputs(model64(*inputs64))
        del inputs64
        poison_allocator(sum(r.numel() * 4 for r in eager_out))
        out = flatten_outputs(fn(*inputs))
        _check_structure(out, eager_out)
        for tol in TOLERANCES:
            s = stats[schema.tol_key(tol)]
            trial_ok = True
            for o, r64, e in zip(out, ref64, eager_out):
                acc = measure.accuracy_vs_fp64(o.float(), r64, e.float(), tol)
                _merge_worst(s, acc, ("fail_frac", "eager_fail_frac", "max_abs_err", "eager_max_abs_err"))
                trial_ok = trial_ok and bool(acc["passed"])
            if not trial_ok:
                s["acc_pass"] = s["pass"] = False
                s["acc_failed_trials"] += 1
        del inputs, eager_out, ref64, out
        torch.cuda.empty_cache()
    return stats


def _check_structure(out, ref):
    if len(out) != len(ref):
        raise ValueError(f"the system returned {len(out)} tensors, eager returns {len(ref)}")
    for o, r in zip(out, ref):
        if tuple(o.shape) != tuple(r.shape):
            raise ValueError(f"output shape {tuple(o.shape)} differs from eager's {tuple(r.shape)}")


# --------------------------------------------------------------------------- systems

class Built:
    """A system ready to run: fn(*inputs) -> outputs, plus what building it cost."""

    def __init__(self, fn, precision, compile_s=None, owner=None, info=None):
        self.fn = fn
        self.precision = precision
        self.compile_s = compile_s
        self.owner = owner  # keeps the model / compiled object alive until release
        self.info = info or {}


def build_model(cls, init_args):
    torch.manual_seed(MODEL_SEED)
    return cls(*init_args).cuda().eval()


@contextlib.contextmanager
def env_setting(name, value):
    """os.environ[name] = value inside the block; restores the previous state."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def build_system(name, example, init_args, fact_spec, tag, ablation=None):
    if name in ("eager-fp32", "eager-tf32", "eager-bf16", "eager-bf16-sdpa"):
        model = build_model(example.Model, init_args)
        if name == "eager-bf16-sdpa":
            why = missing_hook(name, example)
            if why:
                raise LookupError(why)
            hook = getattr(example, PEER_HOOKS[name])
            model = hook(model)
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"{PEER_HOOKS[name]}(model) returned {type(model).__name__}, not an nn.Module")
        ctx, precision = {"eager-fp32": (fp32_exact, "fp32"),
                          "eager-tf32": (lambda: matmul_tf32(True), "tf32"),
                          "eager-bf16": (bf16_autocast, "bf16"),
                          "eager-bf16-sdpa": (bf16_autocast, "bf16")}[name]

        def fn(*xs):
            with ctx():
                return model(*xs)
        return Built(fn, precision, owner=model)

    if name in INDUCTOR_MODES:
        model = build_model(example.Model, init_args)
        torch._dynamo.reset()
        mode, bf16 = INDUCTOR_MODES[name]
        compiled = torch.compile(model, mode=mode)
        # bf16: autocast around every call, so the first call compiles the autocast graph.
        ctx = bf16_autocast if bf16 else fp32_exact

        def fn(*xs):
            with ctx():
                return compiled(*xs)
        # Compilation (and max-autotune's benchmarking) happens on the first
        # call; its wall time is the system's compile time.
        inputs = make_inputs(example, TIME_SEED, "uniform")
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*inputs)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        del inputs
        return Built(fn, PEER_PRECISION[name], compile_s=compile_s, owner=(model, compiled))

    if name == "fact":
        from fact import runtime as fact_runtime  # loads torch: imported only once a GPU run needs it

        start = time.perf_counter()
        module = load_composed(fact_spec.directory, tag)
        info = {"fact_dir": str(fact_spec.directory)}
        # ModelNew's constructor installs the kernels (fact.runtime.install),
        # which binds only the patterns FACT_PATTERNS selects: "all" unless this
        # is an ablation, whatever the caller's environment holds.
        with env_setting(fact_runtime.PATTERNS_ENV, ablation[1] if ablation else "all"):
            model = build_model(module.ModelNew, init_args)
        load_s = time.perf_counter() - start
        bound = fact_runtime.installed_patterns(model)
        info.update(load_s=round(load_s, 3), patterns_bound=bound)

        def fn(*xs):
            with fp32_exact():
                return model(*xs)
        return Built(fn, composed_precision(fact_spec.directory, bound), owner=model, info=info)
    raise ValueError(f"unknown system {name}")


def time_system(fn, example, warmup, reps):
    """fact.measure.time_cuda on the workload's inputs (rotated when they fit in L2)."""
    inputs = make_inputs(example, TIME_SEED, "uniform")
    copies = measure.rotation_count(input_bytes(inputs))
    rotate = None
    if copies > 1:
        rotate = [inputs] + [make_inputs(example, TIME_SEED + 1 + i, "uniform") for i in range(copies - 1)]
    if rotate is None:
        result = measure.time_cuda(lambda: fn(*inputs), warmup=warmup, reps=reps, flush_l2=True)
    else:
        result = measure.time_cuda(fn, warmup=warmup, reps=reps, flush_l2=True, rotate_inputs=rotate)
    del inputs, rotate
    return result


def sixteen_bit_inputs(example):
    """Whether the workload's tensor inputs are fp16 / bf16 (a 16-bit module)."""
    import torch as t  # the module-level torch is bound in main() only

    with t.device("meta"):
        inputs = list(example.get_inputs())
    return any(t.is_tensor(x) and x.dtype in (t.float16, t.bfloat16) for x in inputs)


def record_tolerance(name, fact_spec, sixteen_bit=False):
    """The tolerance a system is held to: FACT's own; for a 16-bit module (sixteen_bit)
    KernelBench's 1e-2 for every peer, since the module computes in 16 bits whatever
    the peer is called; else 1e-4 for the fp32 peers and 1e-2 for the low-precision ones."""
    if name == "fact":
        return float(fact_spec.tolerance)
    return LOWP_TOL if sixteen_bit or name in LOWP_PEERS else FP32_TOL


def short_error(exc):
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 1500 else text[:1500] + " ..."


def cuda_alive():
    try:
        torch.cuda.synchronize()
        torch.empty(1, device="cuda").add_(1)
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001  (any failure here means the context is gone)
        return False


def evaluate(name, workload, example, init_args, eager_model, model64, args, fact_spec=None, tag="", ablation=None):
    tol = record_tolerance(name, fact_spec, sixteen_bit_inputs(example))
    rec = {"workload": workload, "system": name, "tolerance": tol, "precision": PEER_PRECISION.get(name, "unknown"),
           "correct": False, "median_ms": None, "mean_ms": None, "error": None}
    if ablation is not None:
        rec.update(ablation=ablation[0], pattern_selection=ablation[1])
    built = None
    phase = "build"
    # Warnings are collected, not lost: fact.runtime warns once per pattern that
    # falls back to PyTorch, which makes the manifest's math modes untrue.
    catcher = warnings.catch_warnings(record=True)
    caught = catcher.__enter__()
    warnings.simplefilter("always")
    try:
        built = build_system(name, example, init_args, fact_spec, tag, ablation)
        rec["precision"] = built.precision
        if built.compile_s is not None:
            rec["compile_s"] = round(built.compile_s, 3)
        rec.update(built.info)
        phase = "correctness"
        checks = check_correctness(built.fn, eager_model, model64, example, args.trials)
        rec["checks"] = checks
        rec["passes"] = {k: v["pass"] for k, v in checks.items()}
        correct = checks[schema.tol_key(tol)]["pass"] if schema.tol_key(tol) in checks else False
        phase = "timing"
        timing = time_system(built.fn, example, args.warmup, args.reps)
        rec["median_ms"] = float(timing["median_ms"])
        rec["mean_ms"] = float(timing["mean_ms"])
        rec["timing"] = {k: v for k, v in timing.items()
                         if k not in ("median_ms", "mean_ms") and isinstance(v, (int, float, str, bool))}
        rec["correct"] = bool(correct)
    except Exception as exc:  # noqa: BLE001  (a failing system is a record, never a crash)
        rec["correct"] = False
        rec["error"] = f"{phase}: {short_error(exc)}"
        rec["traceback"] = traceback.format_exc(limit=6)[-3000:]
        print(f"  !! {workload} / {name}: {rec['error']}", flush=True)
    finally:
        catcher.__exit__(None, None, None)
        built = None
        gc.collect()
        if name in INDUCTOR_MODES:
            torch._dynamo.reset()
        torch.cuda.empty_cache()
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    for m in messages:
        print(f"  warning ({name}): {m[:300]}", flush=True)
    note_fallbacks(rec, messages)
    if rec["median_ms"] is None or rec["mean_ms"] is None:
        rec["median_ms"] = rec["mean_ms"] = None
        rec["correct"] = False
        rec["error"] = rec["error"] or "not timed"
    rec["trials"] = args.trials
    rec["reps"] = args.reps
    return rec


_FALLBACK = re.compile(r"^fact: pattern (\S+) falls back to PyTorch")


def note_fallbacks(rec, messages):
    """Record fact.runtime's fallback warnings; a fact record's precision then names the patterns that ran in PyTorch."""
    fallbacks = [m for m in messages if _FALLBACK.match(m)]
    if not fallbacks:
        return
    rec["fallbacks"] = fallbacks
    if rec["system"] == "fact":
        pids = list(dict.fromkeys(_FALLBACK.match(m).group(1) for m in fallbacks))
        rec["precision"] += f"; fell back to PyTorch fp32: {', '.join(pids)}"


def add_speedups(records):
    """speedup_vs_eager_fp32 on every timed record; for fact at 1e-2 also vs the faster of tf32/bf16;
    for fact `speedups` = {peer: peer median / fact median} over every timed peer of the run."""
    by_system = {r["system"]: r for r in records if r["system"] != "fact"}
    peer_ms = {name: r["median_ms"] for name, r in by_system.items() if r.get("median_ms")}
    base = by_system.get("eager-fp32", {}).get("median_ms")
    lowp = [by_system.get(s, {}).get("median_ms") for s in ("eager-tf32", "eager-bf16")]
    lowp = [m for m in lowp if m]
    best_lowp = min(lowp) if lowp else None
    for r in records:
        m = r.get("median_ms")
        flags = []
        if m and base:
            r["speedup_vs_eager_fp32"] = round(base / m, 4)
            if base / m > FLAG_SPEEDUP:
                flags.append(f"{base / m:.1f}x over eager-fp32")
        if r["system"] == "fact" and m and peer_ms:
            r["speedups"] = {name: round(ms / m, 4) for name, ms in peer_ms.items()}
        if r["system"] == "fact" and r["tolerance"] >= LOWP_TOL and m and best_lowp:
            r["speedup_vs_best_lowp_eager"] = round(best_lowp / m, 4)
            if best_lowp / m > FLAG_SPEEDUP:
                flags.append(f"{best_lowp / m:.1f}x over eager tf32/bf16")
        if flags:
            r["flag"] = "second look: speedup " + "; ".join(flags)


# --------------------------------------------------------------------------- report

def fmt_ms(v):
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"


def fmt_x(v):
    return f"{v:.2f}x" if isinstance(v, (int, float)) else "-"


def print_table(records, file=sys.stdout):
    header = ("workload", "system", "tol", "correct", "passes", "median ms", "vs fp32", "vs tf32/bf16", "note")
    rows = []
    for r in records:
        note = r.get("flag") or (r.get("error") or "")
        passes = ",".join(f"{float(t):g}" for t, ok in (r.get("passes") or {}).items() if ok) or "-"
        system = r["system"] + (f"[{r['ablation']}]" if r.get("ablation") else "")
        rows.append((r["workload"], system, f"{r['tolerance']:g}", "yes" if r["correct"] else "NO", passes,
                     fmt_ms(r.get("median_ms")), fmt_x(r.get("speedup_vs_eager_fp32")),
                     fmt_x(r.get("speedup_vs_best_lowp_eager")), note[:70]))
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line, file=file)
    print("-" * len(line), file=file)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)), file=file)
    file.flush()


def ablation_table(records):
    """Markdown table of fact's ablation records (time per setting vs eager-fp32 and vs all patterns bound);
    "" when the records hold no ablation."""
    ablated = [r for r in records if r["system"] == "fact" and r.get("ablation")]
    if not ablated:
        return ""
    eager = {r["workload"]: r.get("median_ms") for r in records if r["system"] == "eager-fp32"}
    full = {(r["workload"], r["tolerance"]): r.get("median_ms") for r in ablated if r["ablation"] == "all"}
    lines = ["| workload | tol | ablation | patterns bound | correct | median ms | vs eager-fp32 | vs all bound |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ablated:
        m = r.get("median_ms")
        base, whole = eager.get(r["workload"]), full.get((r["workload"], r["tolerance"]))
        bound = ", ".join(r.get("patterns_bound") or []) or "-"
        lines.append(f"| {r['workload']} | {r['tolerance']:g} | {r['ablation']} ({r.get('pattern_selection', '?')}) "
                     f"| {bound} | {'yes' if r['correct'] else 'NO'} | {fmt_ms(m)} "
                     f"| {fmt_x(base / m if m and base else None)} | {fmt_x(whole / m if m and whole else None)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="l1-gemm", help=f"one of: {', '.join(sorted(suites.SUITES))}")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results folder (default bench/results)")
    p.add_argument("--workloads", default="", help="comma-separated subset of the suite's workloads")
    p.add_argument("--systems", default="",
                   help=f"comma-separated subset of: {', '.join(PEERS)}, fact (default: the suite's peers + fact)")
    p.add_argument("--skip-inductor", action="store_true", help="leave out the torch.compile systems")
    p.add_argument("--fact", action="append", default=[], metavar="[WORKLOAD:]TOL=DIR",
                   help="a composed module folder (fact optimize -o DIR) to benchmark; repeat per tolerance")
    p.add_argument("--no-ablations", action="store_true",
                   help="time each --fact module once, all patterns bound, even where the workload declares "
                        "FACT_ABLATIONS")
    p.add_argument("--optimize-times", metavar="FILE", help="JSON list of optimize timings to add as 'optimize'")
    p.add_argument("--trials", type=int, default=5, help="correctness trials per input distribution (>= 5)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--reps", type=int, default=100, help="timed runs per system (>= 100 for reported numbers)")
    p.add_argument("--merge", action="store_true",
                   help="keep the workloads of an existing results file that this run does not cover")
    p.add_argument("--command", default=None, help="the reproducing command to record (default: this one)")
    p.add_argument("--show", metavar="FILE", help="print the table of an existing results file and exit (no GPU)")
    p.add_argument("--show-ablations", metavar="FILE",
                   help="print the markdown ablation table of an existing results file and exit (no GPU)")
    args = p.parse_args(argv)
    if args.trials < 1 or args.reps < 1 or args.warmup < 0:
        p.error("--trials and --reps must be >= 1, --warmup >= 0")
    return args


def main(argv=None):
    global torch
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.show or args.show_ablations:
        path = args.show or args.show_ablations
        try:
            doc = read_json(path)
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        table = ablation_table(doc.get("records", []))
        if args.show_ablations:
            print(table or f"{path} holds no ablation records", end="" if table else "\n")
            return 0
        print(f"{doc.get('card')}  {doc.get('date')}  {doc.get('command')}")
        print_table(doc.get("records", []))
        if table:
            print("\nfact per-pattern ablation:\n")
            print(table, end="")
        return 0
    if args.trials < 5 or args.reps < 100:
        print(f"warning: --trials {args.trials} / --reps {args.reps} is below DESIGN.md's bar "
              f"(>= 5 trials, >= 100 timed runs): do not report these numbers", flush=True)
    try:
        table = suites.suite(args.suite)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.workloads:
        wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in table]
        if unknown:
            print(f"error: workloads not in suite {args.suite}: {', '.join(unknown)}; "
                  f"it has {', '.join(table)}", file=sys.stderr)
            return 2
        table = {w: table[w] for w in table if w in wanted}
    systems = default_peers(args.suite)
    explicit = bool(args.systems)
    if args.systems:
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        bad = [s for s in systems if s not in PEERS + ("fact",)]
        if bad:
            print(f"error: unknown systems {', '.join(bad)}", file=sys.stderr)
            return 2
    if args.skip_inductor:
        systems = [s for s in systems if s not in INDUCTOR_MODES]
    run_fact = (not args.systems) or ("fact" in systems)
    systems = [s for s in systems if s != "fact"]

    fact_specs = []
    for text in args.fact:
        try:
            spec = FactSpec(text, suites.suite(args.suite))
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        fact_specs.append(spec)
    optimize = []
    if args.optimize_times:
        try:
            optimize = schema.load_optimize_times(args.optimize_times)
        except (ValueError, OSError) as exc:
            print(f"error: --optimize-times: {exc}", file=sys.stderr)
            return 2

    # A fresh Inductor/Triton cache per run: compile_s is a cold compile, not a
    # hit in a cache left by an earlier run. An inherited setting is kept.
    inductor_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if inductor_cache is None:
        fresh = tempfile.mkdtemp(prefix="fact-bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(fresh, "triton"))
    import torch as _torch
    torch = _torch
    if not torch.cuda.is_available():
        print("error: bench/run.py needs a CUDA GPU (torch.cuda.is_available() is False); "
              "run it on the GPU machine (scripts/gpu_run.sh)", file=sys.stderr)
        return 2

    card = torch.cuda.get_device_name(0)
    command = args.command or " ".join(shlex.quote(a) for a in ["python", "bench/run.py", *(argv or sys.argv[1:])])
    run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
           "host_cores": os.cpu_count(), "run_id": run_id,
           "inductor_cache": "fresh per run" if inductor_cache is None else f"inherited: {inductor_cache}"}
    out_path = schema.results_path(args.out, card, args.suite)
    base = schema.load_results(out_path) if args.merge else None
    if base is not None and base.get("card") != card:
        print(f"warning: {out_path} holds results of '{base.get('card')}', not '{card}': not merging", flush=True)
        base = None
    print(f"FACT bench: suite {args.suite} on {card} (torch {torch.__version__}, CUDA {torch.version.cuda}); "
          f"systems {', '.join(systems)}{' + fact' if run_fact and fact_specs else ''}; "
          f"{args.trials} trials, {args.reps} reps", flush=True)

    records = []
    context_lost = None
    with torch.no_grad():
        for workload, example_path in table.items():
            print(f"\n== {workload} ({os.path.relpath(example_path, suites.ROOT)})", flush=True)
            workload_records = []
            specs = [s for s in fact_specs if s.workload == workload] if run_fact else []
            entries = [(name, None, None) for name in systems] + [("fact", s, None) for s in specs]
            try:
                example = load_example(example_path)
                if specs and not args.no_ablations:
                    ablations = ablation_settings(example)
                    if ablations:
                        entries = [(name, None, None) for name in systems]
                        entries += [("fact", s, a) for s in specs for a in ablations]
                kept = []
                for name, spec, ablation in entries:
                    why = missing_hook(name, example)
                    if why and not explicit:
                        print(f"  {name}: left out: {why}", flush=True)
                    else:
                        kept.append((name, spec, ablation))
                entries = run_order(kept)
                init_args = list(example.get_init_inputs())
                eager_model = build_model(example.Model, init_args)
                model64 = copy.deepcopy(eager_model).double()
            except Exception as exc:  # noqa: BLE001
                for name, spec, ablation in entries:
                    workload_records.append(failed_record(workload, name, spec, f"load: {short_error(exc)}", args,
                                                          ablation))
                records += workload_records
                continue
            for i, (name, spec, ablation) in enumerate(entries):
                if context_lost:
                    workload_records.append(failed_record(
                        workload, name, spec, f"not run: the CUDA context was lost ({context_lost})", args, ablation))
                    continue
                start = time.perf_counter()
                rec = evaluate(name, workload, example, init_args, eager_model, model64, args, spec, tag=str(i),
                               ablation=ablation)
                rec["wall_s"] = round(time.perf_counter() - start, 2)
                workload_records.append(rec)
                label = name + (f"[{ablation[0]}]" if ablation else "")
                print(f"  {label:<28} tol {rec['tolerance']:<7g} correct={rec['correct']!s:<5} "
                      f"median {fmt_ms(rec['median_ms'])} ms  ({rec['wall_s']} s)", flush=True)
                if rec["error"] and not cuda_alive():
                    context_lost = f"{workload} / {name}: {rec['error'][:200]}"
                # After every record, not only every workload: one l3 workload with
                # all peers and ablations takes most of a device call, and a run
                # stopped by its time limit keeps the systems it finished.
                add_speedups(workload_records)
                write(args, card, command, records + workload_records, optimize, env, base)
            del eager_model, model64
            gc.collect()
            torch.cuda.empty_cache()
            add_speedups(workload_records)
            records += workload_records
            write(args, card, command, records, optimize, env, base)

    path = write(args, card, command, records, optimize, env, base)
    print(f"\nresults: {path}\n")
    print_table(records)
    table = ablation_table(records)
    if table:
        print("\nfact per-pattern ablation:\n")
        print(table, end="")
    flagged = [r for r in records if r.get("flag")]
    for r in flagged:
        print(f"FLAG {r['workload']} / {r['system']} @ {r['tolerance']:g}: {r['flag']}")
    return 0


def failed_record(workload, name, spec, error, args, ablation=None):
    rec = {"workload": workload, "system": name, "tolerance": record_tolerance(name, spec),
           "precision": PEER_PRECISION.get(name, "unknown"), "correct": False, "median_ms": None,
           "mean_ms": None, "error": error, "trials": args.trials, "reps": args.reps}
    if ablation is not None:
        rec.update(ablation=ablation[0], pattern_selection=ablation[1])
    return rec


def write(args, card, command, records, optimize, env, base):
    doc = schema.make_results(card, command, records, optimize=optimize, env=env)
    return schema.write_results(args.out, args.suite, doc, base=base)


if __name__ == "__main__":
    sys.exit(main())
