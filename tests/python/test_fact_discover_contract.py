"""Contract test between `fact discover` (C++) and fact.runtime: every GEMM
pattern discover finds in a captured module is installed by the runtime, and
a CPU stand-in kernel driven only by the pattern's gemm binding (layouts,
ld, batch strides, epilogue) reproduces eager. Skips when the `fact` binary
is not built ($FACT_BIN or build/release/fact)."""
import json
import os
import subprocess
import warnings

import pytest

from fact_testutil import ROOT, FakeGemm

torch = pytest.importorskip("torch")
nn = torch.nn

from fact import capture, runtime  # noqa: E402

BINARY = os.environ.get("FACT_BIN", str(ROOT / "build" / "release" / "fact"))
pytestmark = pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} is not built")


class Spellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 32)
        self.w = nn.Parameter(torch.randn(48, 32) / 8)
        self.bias = nn.Parameter(torch.randn(32))

    def forward(self, x, a, b, c):
        h = self.fc(x)                              # 3-D linear: batch folded into M, bias epilogue
        y = torch.relu(h) @ self.w.t()              # transpose absorbed as a col-major B
        z = torch.addmm(self.bias, c, self.w)       # addmm, row B, bias epilogue
        p = torch.bmm(a, b)                         # batched
        q = a.transpose(1, 2) @ p                   # batched, col-major A
        return y, z, p, q


def test_discovered_patterns_install_and_match_eager(tmp_path):
    torch.manual_seed(0)
    module = Spellings()
    inputs = [torch.randn(4, 16, 64), torch.randn(2, 32, 40), torch.randn(2, 40, 24), torch.randn(8, 48)]
    ir = capture.capture_module(module, inputs)
    graph = tmp_path / "graph.json"
    capture.write_ir(ir, str(graph))
    plan_path = tmp_path / "plan.json"
    result = subprocess.run([BINARY, "discover", str(graph), "-o", str(plan_path), "--no-registry",
                             "--arch", "sm90a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    plan = json.loads(plan_path.read_text())
    roots = sorted(p["root"] for p in plan["patterns"])
    assert len(roots) == 5, (roots, plan.get("rejections"), plan.get("unmatched"))

    kernels = {}

    def loader(path):
        gemm = next(p["gemm"] for p in plan["patterns"] if p["id"] == os.path.basename(path))
        kernels[path] = FakeGemm(gemm["a"]["layout"], gemm["b"]["layout"], gemm["epilogue"]["kind"])
        return kernels[path]

    manifest = {"fact_manifest": 1,
                "patterns": [dict(p, library=f"/fake/{p['id']}", variant="fake", math="f32")
                             for p in plan["patterns"]]}
    expected = module(*inputs)
    previous = runtime.set_kernel_loader(loader)
    try:
        runtime.install(module, manifest, strict=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = module(*inputs)
    finally:
        runtime.set_kernel_loader(previous)
    assert sorted(runtime.installed_patterns(module)) == sorted(p["id"] for p in plan["patterns"])
    assert all(k.runs == 1 for k in kernels.values()) and len(kernels) == 5
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_worker_verifies_discovered_patterns_with_a_correct_kernel(tmp_path):
    from fact import worker

    module = Spellings()
    with torch.device("meta"):
        inputs = [torch.rand(4, 16, 64), torch.rand(2, 32, 40), torch.rand(2, 40, 24), torch.rand(8, 48)]
    graph = tmp_path / "graph.json"
    capture.write_ir(capture.capture_module(module.to("meta"), inputs), str(graph))
    plan_path = tmp_path / "plan.json"
    subprocess.run([BINARY, "discover", str(graph), "-o", str(plan_path), "--no-registry", "--arch", "sm90a"],
                   check=True, capture_output=True, timeout=120)
    plan = json.loads(plan_path.read_text())
    for pattern in plan["patterns"]:
        gemm = pattern["gemm"]
        job = {"fact_job": 1, "ir": str(graph), "pattern": pattern, "tolerance": 1e-4, "trials": 5,
               "timing": {"warmup": 0, "reps": 2},
               "candidates": [{"name": "fake", "library": "/fake/lib.so", "math": "f32"}]}
        lines = []

        def loader(path, gemm=gemm):
            return FakeGemm(gemm["a"]["layout"], gemm["b"]["layout"], gemm["epilogue"]["kind"])

        assert worker.run_job(job, lines.append, loader=loader, device=torch.device("cpu")) == 0
        assert lines[-1]["status"] == "ok", (pattern["id"], pattern["root"], lines[-1])


class MiniGPTBlock(nn.Module):
    """minGPT's block (causal mask buffer sliced by a traced T, split heads,
    hand-written tanh GELU, dropout): capture + discover + install end to end."""

    def __init__(self, n_embd=64, n_head=4, max_seqlen=32):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.c_fc, self.c_proj2 = nn.Linear(n_embd, 4 * n_embd), nn.Linear(4 * n_embd, n_embd)
        self.drop = nn.Dropout(0.0)
        self.register_buffer("bias", torch.tril(torch.ones(max_seqlen, max_seqlen)).view(1, 1, max_seqlen,
                                                                                         max_seqlen))
        self.n_head, self.n_embd = n_head, n_embd

    def attn(self, x):
        import math

        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        y = self.drop(torch.softmax(att, dim=-1)) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x):
        import math

        x = x + self.attn(self.ln_1(x))
        h = self.c_fc(self.ln_2(x))
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return x + self.drop(self.c_proj2(h))


def test_minigpt_block_end_to_end_on_cpu(tmp_path):
    torch.manual_seed(0)
    module = MiniGPTBlock().eval()
    x = torch.randn(2, 16, 64)
    graph = tmp_path / "graph.json"
    capture.write_ir(capture.capture_module(module, [x]), str(graph))
    plan_path = tmp_path / "plan.json"
    subprocess.run([BINARY, "discover", str(graph), "-o", str(plan_path), "--no-registry", "--arch", "sm90a"],
                   check=True, capture_output=True, timeout=120)
    plan = json.loads(plan_path.read_text())
    gemm_patterns = [p for p in plan["patterns"] if p.get("gemm")]
    assert {p["root"] for p in gemm_patterns} >= {"c_attn", "c_proj", "c_fc", "c_proj2"}

    def loader(path):
        gemm = next(p["gemm"] for p in plan["patterns"] if p["id"] == os.path.basename(path))
        return FakeGemm(gemm["a"]["layout"], gemm["b"]["layout"], gemm["epilogue"]["kind"])

    expected = module(x)
    previous = runtime.set_kernel_loader(loader)
    try:
        # compose binds only realized patterns, and realize realizes only GEMMs
        runtime.install(module, {"fact_manifest": 1, "patterns": [dict(p, library=f"/f/{p['id']}")
                                                                  for p in gemm_patterns]}, strict=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = module(x)
    finally:
        runtime.set_kernel_loader(previous)
    assert len(runtime.installed_patterns(module)) == len(gemm_patterns)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
