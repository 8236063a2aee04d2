"""CPU tests of the worker's verification logic (fact.worker.run_job) with CPU
kernel stand-ins: a correct kernel passes, one that leaves the output
unwritten (NaN poison) or rounds operands to bf16 is `wrong`, rejections are
`cant_implement`, load failures `launch_error`; and the JSON-line protocol."""
import json
import subprocess
import sys

import pytest

from fact_testutil import ROOT, FakeGemm, gemm_binding, run_worker

torch = pytest.importorskip("torch")

from fact import capture, kernel, worker  # noqa: E402


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(48, 64))

    def forward(self, x):
        return x @ self.w.t()


PATTERN = {"id": "p0", "rule": "gemm", "root": "matmul", "nodes": ["t", "matmul"], "inputs": ["x", "w"],
           "outputs": ["matmul"], "dtype": "float32",
           "gemm": gemm_binding(32, 48, 64)}


class Unwritten(FakeGemm):
    def run(self, p, *args):
        self.runs += 1  # launches "fine", writes nothing: the NaN poison must catch it


class Bf16Operands(FakeGemm):
    def run(self, p, *args):
        super().run(p, *args)
        a = self._view(p.a, [(p.m, p.ld_a), (p.k, 1)])
        b = self._view(p.b, [(p.k, 1), (p.n, p.ld_b)])
        d = self._view(p.d, [(p.m, p.ld_d), (p.n, 1)])
        rounded = (torch.from_numpy(a.copy()).bfloat16().float() @ torch.from_numpy(b.copy()).bfloat16().float())
        d[...] = rounded.numpy()


def loader(path):
    kinds = {"ok": FakeGemm, "nan": Unwritten, "bf16": Bf16Operands}
    if path.endswith("reject.so"):
        return FakeGemm(reject=lambda p: "m must be a multiple of 128")
    if path.endswith("missing.so"):
        raise kernel.KernelError(f"cannot load {path}")
    return kinds[path.rsplit("/", 1)[-1].split(".")[0]](name=path)


def test_verification_outcomes(tmp_path):
    ir = capture.capture_module(Model(), [torch.randn(32, 64)])
    ir_path = tmp_path / "graph.json"
    capture.write_ir(ir, str(ir_path))
    results = run_worker(ir_path, PATTERN, loader, ["ok", "nan", "bf16", "reject", "missing"])
    ok = results["ok"]
    assert ok["status"] == "ok" and ok["kb_pass"] and ok["trials"] == worker.MIN_TRIALS
    assert ok["median_ms"] > 0 and ok["baseline_median_ms"] > 0
    assert ok["max_abs_err"] <= 2 * ok["eager_max_abs_err"] + 1e-6
    assert results["nan"]["status"] == "wrong" and "uniform" in results["nan"]["reason"]
    assert results["bf16"]["status"] == "wrong"
    assert results["reject"] == {**results["reject"], "status": "cant_implement",
                                 "reason": "m must be a multiple of 128"}
    assert results["missing"]["status"] == "launch_error" and "load" in results["missing"]["reason"]
    for line in results.values():
        json.dumps(line, allow_nan=False)


def test_worker_cli_protocol_without_a_gpu(tmp_path):
    """`python -m fact.worker` on a machine without CUDA: every candidate gets a
    begin line and a launch_error result naming the reason; stdout holds only
    protocol lines."""
    if torch.cuda.is_available():
        pytest.skip("this checks the no-GPU path")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"fact_job": 1, "ir": str(tmp_path / "missing.json"), "pattern": PATTERN,
                               "candidates": [{"name": "a", "library": "/x/liba.so"},
                                              {"name": "b", "library": "/x/libb.so"}]}))
    result = subprocess.run([sys.executable, "-m", "fact.worker", "--job", str(job)], capture_output=True,
                            text=True, env={"PYTHONPATH": str(ROOT / "python"), "PATH": "/usr/bin:/bin"},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in result.stdout.splitlines()]
    assert [(l["event"], l["name"]) for l in lines] == [("begin", "a"), ("result", "a"), ("begin", "b"),
                                                        ("result", "b")]
    assert all("no CUDA device" in l["reason"] for l in lines if l["event"] == "result")
