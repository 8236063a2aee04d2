#!/usr/bin/env python3
"""Build, check and time attention kernel libraries outside the pipeline
(docs/notes/attention_sm90.md): the Hopper f16x3 kernel (templates/attention_sm90.cuh)
in several configurations next to the sm80 3xTF32 kernel the realizer used before.

  python3 scripts/attention_dev.py build DIR [--variants ...]   # here: nvcc -> DIR/*.so
  python3 scripts/attention_dev.py run DIR [--time]             # on the GPU: checks, timings

Checks (every library, every shape it can implement; output poisoned with NaN first):
  - N(0, 1) inputs: max abs error against a float64 reference <= 2x eager fp32's
    (DESIGN's "as accurate as eager"), and no NaN left in the output;
  - U[0, 1) inputs (the workloads' torch.rand): allclose to eager at atol = rtol = 1e-4.
Timing (--time): the minGPT block's attention (B 128, H 8, T 512, head dim 96, causal,
q/k/v packed as c_attn writes them) and a head-dim-128 one (B 64, H 12), fact.measure.time_cuda
(CUDA events, L2 flush), two interleaved rounds.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

# name -> (header, namespace, config arguments)
VARIANTS = {
    "sm90_d96_s32_pv32": ("attention_sm90.cuh", "attention_sm90", "96, 64, 32, 32"),
    "sm90_d96_s32_pv64": ("attention_sm90.cuh", "attention_sm90", "96, 64, 32, 64"),
    "sm90_d96_s96_pv32": ("attention_sm90.cuh", "attention_sm90", "96, 64, 96, 32"),
    "sm90_d96_s96_pv64": ("attention_sm90.cuh", "attention_sm90", "96, 64, 96, 64"),
    "sm90_d64_s32_pv32": ("attention_sm90.cuh", "attention_sm90", "64, 64, 32, 32"),
    "sm90_d128_k32_s32_pv32": ("attention_sm90.cuh", "attention_sm90", "128, 32, 32, 32"),
    "sm90_d128_k32_s128_pv32": ("attention_sm90.cuh", "attention_sm90", "128, 32, 128, 32"),
    "sm80_32x128_maxk128": ("attention_sm80.cuh", "attention_sm80", "32, 128, 128"),
}


def build(out: pathlib.Path, names: list[str]) -> None:
    cutlass = pathlib.Path(os.environ.get("CUTLASS_DIR", pathlib.Path.home() / ".cache/fact/cutlass-v4.7.0"))
    nvcc = os.environ.get("NVCC", "nvcc")
    out.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> str:
        header, ns, args = VARIANTS[name]
        src = out / f"{name}.cu"
        src.write_text(f'#include "{header}"\n#include "fact_export.cuh"\n'
                       f"using FactConfig = fact::{ns}::Config<{args}>;\n"
                       f'FACT_EXPORT_ATTENTION(fact::{ns}::Operation<FactConfig>, "{name}")\n')
        arch = ("-gencode=arch=compute_80,code=sm_90" if ns == "attention_sm80"
                else "-gencode=arch=compute_90a,code=sm_90a")
        cmd = [nvcc, "-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler=-fPIC", "-shared",
               arch, "-Xptxas", "-v", f"-I{ROOT / 'include'}", f"-I{ROOT / 'templates'}", f"-I{cutlass / 'include'}",
               f"-I{cutlass / 'tools/util/include'}", f"-I{cutlass / 'examples'}", "-o", str(out / f"{name}.so"),
               str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        regs = [line.strip() for line in r.stderr.splitlines() if "registers" in line or "spill" in line]
        return f"{name}: rc {r.returncode} {' | '.join(regs[-2:])}" + ("" if r.returncode == 0 else "\n" + r.stderr[-3000:])

    jobs = int(os.environ.get("JOBS", "2"))
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for line in pool.map(one, names):
            print(line, flush=True)


def _reference(q, k, v, scale, causal, dtype):
    """softmax(scale q k^T (+ causal mask)) v in `dtype`, TF32 off."""
    import torch

    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    s = (q @ k.transpose(-2, -1)) * scale
    if causal:
        tq, tk = s.shape[-2], s.shape[-1]
        mask = torch.ones(tq, tk, dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


class Case:
    """q, k, v as views (B, H, T, d) of packed storage, o as the merged-heads (B, T, H*dv)."""

    def __init__(self, torch, b, h, tq, tk, d, dv, causal, packed, dist, seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        rand = (lambda *s: torch.randn(*s, generator=g, device="cuda")) if dist == "normal" else \
            (lambda *s: torch.rand(*s, generator=g, device="cuda"))
        if packed:  # minGPT: c_attn's (B, T, 3C) output split into q, k, v (tq == tk, d == dv)
            qkv = rand(b, tq, 3 * h * d)
            self.storage = [qkv]
            views = [qkv[:, :, i * h * d:(i + 1) * h * d].view(b, tq, h, d).transpose(1, 2) for i in range(3)]
        else:
            tensors = [rand(b, h, tq, d), rand(b, h, tk, d), rand(b, h, tk, dv)]
            self.storage = tensors
            views = tensors
        self.q, self.k, self.v = views
        self.o = torch.full((b, tq, h * dv), float("nan"), device="cuda")
        self.scale = 1.0 / math.sqrt(d)
        self.causal = causal
        self.dims = (b, h, tq, tk, d, dv)
        self.label = f"B{b} H{h} T{tq}x{tk} d{d}/{dv} {'causal' if causal else 'full'} {'packed' if packed else 'split'} {dist}"

    def problem(self):
        from fact.op_kernels import FactAttentionProblem

        b, h, tq, tk, d, dv = self.dims
        p = FactAttentionProblem()
        p.batch, p.heads, p.seq_q, p.seq_k, p.head_dim, p.head_dim_v = b, h, tq, tk, d, dv
        for role, t in (("q", self.q), ("k", self.k), ("v", self.v)):
            setattr(p, role, t.data_ptr())
            setattr(p, f"{role}_stride_batch", t.stride(0))
            setattr(p, f"{role}_stride_head", t.stride(1))
            setattr(p, f"{role}_stride_seq", t.stride(2))
        p.o = self.o.data_ptr()
        p.o_stride_batch, p.o_stride_head, p.o_stride_seq = tq * h * dv, dv, h * dv
        p.scale = self.scale
        p.causal = 1 if self.causal else 0
        return p

    def output(self):
        b, h, tq, tk, d, dv = self.dims
        return self.o.view(b, tq, h, dv).transpose(1, 2)


CHECK_SHAPES = [
    # b, h, tq, tk, d, dv, causal, packed
    (2, 8, 512, 512, 96, 96, True, True),
    (2, 8, 512, 512, 96, 96, False, True),
    (3, 2, 200, 200, 96, 96, True, True),
    (2, 3, 130, 333, 96, 96, False, False),
    (1, 4, 77, 77, 84, 84, True, False),
    (2, 2, 256, 256, 64, 64, True, True),
    (1, 2, 192, 192, 32, 64, False, False),
    (1, 2, 256, 256, 128, 128, True, True),
]


def run(out: pathlib.Path, names: list[str], timing: bool) -> int:
    import torch

    from fact.measure import time_cuda
    from fact.op_kernels import AttentionKernel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    libs = {}
    for name in names:
        path = out / f"{name}.so"
        if path.exists():
            libs[name] = AttentionKernel(str(path))
        else:
            print(f"{name}: not built", flush=True)
    failures = 0
    results = {"checks": [], "timings": {}}
    stream = torch.cuda.current_stream().cuda_stream
    for seed, shape in enumerate(CHECK_SHAPES):
        for dist in ("normal", "uniform"):
            case = Case(torch, *shape, dist=dist, seed=1000 + seed)
            ref64 = _reference(case.q, case.k, case.v, case.scale, case.causal, torch.float64)
            eager = _reference(case.q, case.k, case.v, case.scale, case.causal, torch.float32)
            eager_err = (eager.double() - ref64).abs().max().item()
            for name, lib in libs.items():
                problem = case.problem()
                why = lib.can_implement(problem)
                if why:
                    continue
                case.o.fill_(float("nan"))
                lib.run(problem, 0, 0, stream)
                torch.cuda.synchronize()
                got = case.output()
                nan = torch.isnan(got).any().item()
                err = (got.double() - ref64).abs().max().item()
                if dist == "normal":
                    ok = not nan and err <= 2 * eager_err
                else:
                    ok = not nan and torch.allclose(got, eager, atol=1e-4, rtol=1e-4)
                failures += not ok
                line = (f"{'ok  ' if ok else 'FAIL'} {name:22s} {case.label:52s} err {err:.3e} "
                        f"eager {eager_err:.3e} ratio {err / max(eager_err, 1e-30):.2f}{' NaN' if nan else ''}")
                print(line, flush=True)
                results["checks"].append({"variant": name, "case": case.label, "ok": ok, "err": err,
                                          "eager_err": eager_err})
    if timing:
        # The minGPT block's attention (head dim 96) and a head-dim-128 one of the same size.
        for shape in ((128, 8, 512, 512, 96, 96, True, True), (64, 12, 512, 512, 128, 128, True, True)):
            case = Case(torch, *shape, dist="uniform", seed=7)
            for rnd in range(2):  # interleaved rounds: the H100 drifts under load
                for name, lib in libs.items():
                    problem = case.problem()
                    if lib.can_implement(problem):
                        continue
                    t = time_cuda(lambda: lib.run(problem, 0, 0, stream), warmup=5, reps=50)
                    print(f"time {name:24s} {case.label:48s} round {rnd}: median {t['median_ms']:.3f} ms "
                          f"mean {t['mean_ms']:.3f}", flush=True)
                    results["timings"].setdefault(f"{name} {case.label}", []).append(t)
            del case
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{failures} check(s) failed", flush=True)
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("build", "run"))
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--time", action="store_true")
    args = ap.parse_args()
    if args.mode == "build":
        build(args.dir, args.variants)
        return 0
    return run(args.dir, args.variants, args.time)


if __name__ == "__main__":
    sys.exit(main())
