"""Contract test between `fact discover` (C++) and fact.runtime: every GEMM
pattern discover finds in a captured module is installed by the runtime, and
a CPU stand-in kernel driven only by the pattern's gemm binding (layouts,
ld, batch strides, epilogue) reproduces eager. Skips when the `fact` binary
is not built ($FACT_BIN or build/release/fact)."""
import os

import pytest

from fact_testutil import ROOT, discover_module, run_with_fake_gemms, verify_with_fake_gemm

torch = pytest.importorskip("torch")
nn = torch.nn

from fact import runtime  # noqa: E402

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
    _ir, _graph, plan = discover_module(BINARY, tmp_path, module, inputs)
    roots = sorted(p["root"] for p in plan["patterns"])
    assert len(roots) == 5, (roots, plan.get("rejections"), plan.get("unmatched"))

    expected = module(*inputs)
    got, kernels = run_with_fake_gemms(module, plan["patterns"], inputs)
    assert sorted(runtime.installed_patterns(module)) == sorted(p["id"] for p in plan["patterns"])
    assert all(k.runs == 1 for k in kernels.values()) and len(kernels) == 5
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_worker_verifies_discovered_patterns_with_a_correct_kernel(tmp_path):
    module = Spellings()
    with torch.device("meta"):
        inputs = [torch.rand(4, 16, 64), torch.rand(2, 32, 40), torch.rand(2, 40, 24), torch.rand(8, 48)]
    _ir, graph, plan = discover_module(BINARY, tmp_path, module.to("meta"), inputs)
    for pattern in plan["patterns"]:
        result = verify_with_fake_gemm(graph, pattern)
        assert result["status"] == "ok", (pattern["id"], pattern["root"], result)


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
    _ir, _graph, plan = discover_module(BINARY, tmp_path, module, [x])
    gemm_patterns = [p for p in plan["patterns"] if p.get("gemm")]
    assert {p["root"] for p in gemm_patterns} >= {"c_attn", "c_proj", "c_fc", "c_proj2"}

    expected = module(x)
    # compose binds only realized patterns, and realize realizes only GEMMs
    got, _kernels = run_with_fake_gemms(module, gemm_patterns, [x])
    assert len(runtime.installed_patterns(module)) == len(gemm_patterns)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
