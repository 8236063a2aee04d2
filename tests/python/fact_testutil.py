"""Shared helpers of the fact package's CPU tests (no CUDA is touched)."""
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "python"))


def node_by_id(ir, ident):
    (node,) = [n for n in ir["nodes"] if n["id"] == ident]
    return node


def ops_of(ir):
    return [n["op"] for n in ir["nodes"]]


class FakeGemm:
    """A CPU stand-in for a kernel library (fact.runtime.set_kernel_loader
    seam): computes D = alpha * A.B + beta * E from the FactGemmProblem's
    pointers, sizes, leading dimensions and batch strides with numpy, so a
    wrong binding -> problem translation gives a wrong answer.

    layout_a / layout_b are compiled into real variants; here they are given.
    `image_format` (non-empty): the operand hand-off of kernel_abi.h with a
    stand-in image, the dense row-major fp32 matrix (A: m x k, D: m x n)."""

    device_type = "cpu"

    def __init__(self, layout_a="row", layout_b="col", epilogue="none", name="fake_gemm", reject=None,
                 image_format=""):
        self.layout_a, self.layout_b, self.epilogue = layout_a, layout_b, epilogue
        self.name = name
        self.reject = reject  # callable(problem) -> reason | None
        self.format = image_format
        self.runs = 0
        self.image_writes = self.image_reads = 0

    def can_implement(self, problem):
        if (problem.a_image or problem.d_image) and not self.format:
            return "this variant neither reads nor writes operand images"
        return self.reject(problem) if self.reject else None

    def image_format(self):
        return self.format

    def image_bytes(self, problem, role):
        if not self.format:
            return 0
        return 4 * problem.batch * problem.m * (problem.k if role == 0 else problem.n)

    def workspace_size(self, problem):
        return 0

    @staticmethod
    def _view(ptr, dims):
        import numpy as np

        span = 1 + sum((size - 1) * stride for size, stride in dims)
        buffer = (ctypes.c_float * span).from_address(ptr)
        flat = np.frombuffer(buffer, dtype=np.float32)
        return np.lib.stride_tricks.as_strided(flat, shape=[s for s, _ in dims],
                                               strides=[st * 4 for _, st in dims])

    def run(self, p, workspace_ptr, workspace_bytes, stream_ptr):
        import numpy as np

        assert stream_ptr == 0
        batch, m, n, k = p.batch, p.m, p.n, p.k
        a_dims = [(m, p.ld_a), (k, 1)] if self.layout_a == "row" else [(m, 1), (k, p.ld_a)]
        b_dims = [(k, p.ld_b), (n, 1)] if self.layout_b == "row" else [(k, 1), (n, p.ld_b)]
        if p.a_image:
            a = self._view(p.a_image, [(batch, m * k), (m, k), (k, 1)])
            self.image_reads += 1
        else:
            a = self._view(p.a, [(batch, p.batch_stride_a)] + a_dims)
        b = self._view(p.b, [(batch, p.batch_stride_b)] + b_dims)
        if p.d_image:
            d = self._view(p.d_image, [(batch, m * n), (m, n), (n, 1)])
            self.image_writes += 1
        else:
            d = self._view(p.d, [(batch, p.batch_stride_d), (m, p.ld_d), (n, 1)])
        result = p.alpha * np.matmul(a.astype(np.float64), b.astype(np.float64))
        if self.epilogue == "bias":
            result = result + p.beta * self._view(p.e, [(n, 1)])
        elif self.epilogue == "c":
            result = result + p.beta * self._view(p.e, [(batch, p.batch_stride_e), (m, p.ld_e), (n, 1)])
        d[...] = result.astype(np.float32)
        self.runs += 1


NO_EPILOGUE = {"kind": "none", "tensor": None, "ld": 0, "batch_stride": 0, "alpha": 1.0, "beta": 0.0}


def bias_epilogue(tensor):
    return {"kind": "bias", "tensor": tensor, "ld": 0, "batch_stride": 0, "alpha": 1.0, "beta": 1.0}


def gemm_binding(m, n, k, a="x", b="w", d="matmul", epilogue=None):
    """A float32 single-batch pattern `gemm` binding (docs/CONTRACTS.md §2):
    A row-major [m, k], B column-major [k, n] (a weight [n, k] as linear and
    x @ w.t() read it), D row-major [m, n]; no epilogue unless given."""
    return {"batch": 1, "m": m, "n": n, "k": k,
            "a": {"tensor": a, "layout": "row", "ld": k, "batch_stride": 0},
            "b": {"tensor": b, "layout": "col", "ld": k, "batch_stride": 0},
            "d": {"tensor": d, "ld": n, "batch_stride": 0},
            "epilogue": dict(epilogue or NO_EPILOGUE),
            "element_a": "float32", "element_b": "float32", "element_d": "float32"}


def fake_gemm_of(gemm):
    """The FakeGemm a plan pattern's `gemm` binding describes (its layouts and epilogue)."""
    return FakeGemm(gemm["a"]["layout"], gemm["b"]["layout"], gemm["epilogue"]["kind"])


def discover_module(binary, tmp_path, module, inputs):
    """Captures `module` on `inputs` into tmp_path/graph.json and runs `binary
    discover` (no registry, sm90a) on it; returns (ir, graph path, plan)."""
    from fact import capture

    ir = capture.capture_module(module, list(inputs))
    graph = tmp_path / "graph.json"
    capture.write_ir(ir, str(graph))
    plan_path = tmp_path / "plan.json"
    result = subprocess.run([binary, "discover", str(graph), "-o", str(plan_path), "--no-registry",
                             "--arch", "sm90a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return ir, graph, json.loads(plan_path.read_text())


def run_with_fake_gemms(module, patterns, inputs):
    """Installs `patterns` (plan patterns) into `module` with strict=True, each
    bound to the FakeGemm of its own binding, and runs it on `inputs`; a fallback
    to PyTorch warns, and a warning fails the test. Returns (module's outputs,
    {pattern id: kernel})."""
    import warnings

    from fact import runtime

    kernels = {}

    def loader(path):
        pid = os.path.basename(path)
        kernels[pid] = fake_gemm_of(next(p["gemm"] for p in patterns if p["id"] == pid))
        return kernels[pid]

    manifest = {"fact_manifest": 1,
                "patterns": [dict(p, library=f"/fake/{p['id']}", variant="fake", math="f32") for p in patterns]}
    previous = runtime.set_kernel_loader(loader)
    try:
        runtime.install(module, manifest, strict=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = module(*inputs)
    finally:
        runtime.set_kernel_loader(previous)
    return got, kernels


def verify_with_fake_gemm(graph, pattern, trials=5):
    """fact.worker.run_job on the CPU for one FakeGemm candidate of the pattern's
    binding (tolerance 1e-4); returns the job's last line (its result)."""
    import torch
    from fact import worker

    job = {"fact_job": 1, "ir": str(graph), "pattern": pattern, "tolerance": 1e-4, "trials": trials,
           "timing": {"warmup": 0, "reps": 2},
           "candidates": [{"name": "fake", "library": "/fake/lib.so", "math": "f32"}]}
    lines = []
    loader = lambda path: fake_gemm_of(pattern["gemm"])  # noqa: E731
    assert worker.run_job(job, lines.append, loader=loader, device=torch.device("cpu")) == 0
    return lines[-1]


def run_worker(ir_path, pattern, loader, names, timing=None):
    """fact.worker.run_job on the CPU for candidates `names` (library
    /k/NAME.so, which `loader` maps to a stand-in), tolerance 1e-4, 2 trials
    asked; checks every candidate got a begin and a result line and returns
    {name: result line}."""
    import torch
    from fact import worker

    job = {"fact_job": 1, "ir": str(ir_path), "pattern": pattern, "tolerance": 1e-4, "trials": 2,
           "timing": timing or {"warmup": 1, "reps": 3},
           "candidates": [{"name": n, "library": f"/k/{n}.so", "math": "f32"} for n in names]}
    lines = []
    assert worker.run_job(job, lines.append, loader=loader, device=torch.device("cpu")) == 0
    assert [line["event"] for line in lines] == ["begin", "result"] * len(names)
    return {line["name"]: line for line in lines if line["event"] == "result"}


def fact_binary():
    """The built `fact` CLI ($FACT_BIN, else build/release/fact); skips the test when absent."""
    import pytest

    path = os.environ.get("FACT_BIN") or str(ROOT / "build" / "release" / "fact")
    if not os.path.isfile(path):
        pytest.skip(f"the fact binary ({path}) is not built: `cmake --build --preset release` first")
    return path


def discover(ir: dict, tmp_path):
    """(plan, graph.json path) of `fact discover` on `ir` for sm90a, without the registry."""
    from fact import capture

    ir_path = tmp_path / "graph.json"
    capture.write_ir(ir, str(ir_path))
    plan_path = tmp_path / "plan.json"
    subprocess.run([fact_binary(), "discover", str(ir_path), "-o", str(plan_path), "--no-registry",
                    "--arch", "sm90a"], check=True, capture_output=True)
    return json.loads(plan_path.read_text()), ir_path
