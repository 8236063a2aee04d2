"""GPU end to end for RMSNorm (the layernorm rule's norm "rms", rmsnorm_* variants of
templates/layernorm.cuh):

- a Llama-style written-out RMSNorm (x.float() ... rsqrt(x.pow(2).mean(-1, keepdim)
  + eps) ... .type_as(x) * weight) feeding a Linear, `fact optimize` at 1e-4 held to one
  GEMM variant and one RMSNorm variant: the RMSNorm pattern is realized (a verified
  rmsnorm_* winner), bound and installed, and the composed module matches eager on
  fresh inputs;
- test_handoff_gpu's pre-norm MLP with an RMSNorm written out instead of its LayerNorm
  (RMSNorm -> Linear -> tanh-GELU -> Linear + residual):
  the RMSNorm writes the first GEMM's pre-split A image (fact_layernorm_run_image), a
  chain of two hand-offs run as one call, bit for bit what the kernels give apart;
- the spelling fixtures (tests/fixtures/modules3/rms_llama.py: four written-out
  spellings, one absorbing a residual add whose sum it writes; rms_fused.py: nn.RMSNorm
  and F.rms_norm), the plan cut to its norm patterns: every one realized and installed,
  the composed module equal to the original at 1e-4.

Skips, saying what is missing, without a GPU, the `fact` binary, nvcc or CUTLASS.
"""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_end_to_end import _MISSING, _compare, _load, _optimize  # noqa: E402
from test_handoff_gpu import FILTER, NORM_MLP_BLOCK, _check_handoffs  # noqa: E402
from test_ln_attention_gpu import _installed, _optimize as _optimize_rules, _realized  # noqa: E402

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "modules3"

RMS_LINEAR = '''"""Llama RMSNorm written out, feeding a Linear (fp32)."""
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.eps = 1e-6
        self.weight = nn.Parameter(torch.rand(width) + 0.5)
        self.fc = nn.Linear(width, hidden, bias=False)

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        return self.fc(self._norm(x.float()).type_as(x) * self.weight)


def get_inputs():
    return [torch.randn(4, 64, 256)]


def get_init_inputs():
    return [256, 512]
'''


def _rms_mlp_block() -> str:
    """test_handoff_gpu's pre-LN MLP with its LayerNorm written out as an RMSNorm (torch.mean
    of x * x, x / sqrt, the weight on the left)."""
    source = NORM_MLP_BLOCK
    for old, new in (("self.ln = nn.LayerNorm(width)", "self.weight = nn.Parameter(torch.rand(width) + 0.5)"),
                     ("y = self.ln(x)",
                      "y = self.weight * (x / torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True) + 1e-5))")):
        assert source.count(old) == 1, f"NORM_MLP_BLOCK no longer has {old!r}"
        source = source.replace(old, new)
    return source


def _rms_patterns(out_dir: pathlib.Path) -> list:
    """The manifest's RMSNorm patterns, each (where the run kept realized.json) realized
    with one verified rmsnorm_* winner."""
    manifest = json.loads((out_dir / "fact_manifest.json").read_text())
    realized = {p["id"]: p for p in _realized(out_dir)["patterns"]} if (
        out_dir.parent / (out_dir.name + "_work") / "realized.json").exists() else None
    bound = [p for p in manifest["patterns"] if p.get("rule") == "layernorm"]
    for p in bound:
        assert p["layernorm"]["norm"] == "rms", p["layernorm"]
        assert p["variant"].startswith("rmsnorm_f32_"), p["variant"]
        if realized is not None:
            entry = realized[p["id"]]
            assert entry["status"] == "realized", entry
            winners = [c for c in entry["candidates"] if c["status"] == "winner"]
            assert len(winners) == 1 and winners[0]["name"] == p["variant"]
    return bound


def test_written_out_rmsnorm_feeding_a_linear(tmp_path):
    example = tmp_path / "rms_linear.py"
    example.write_text(RMS_LINEAR)
    out_dir = tmp_path / "rms_linear"
    _optimize(example, out_dir, "1e-4", "--variants", "all", "--filter", FILTER + "|rmsnorm_f32_c256_w1_v4",
              "--no-registry", timeout=1500)
    manifest = json.loads((out_dir / "fact_manifest.json").read_text())
    rms = [p for p in manifest["patterns"] if p.get("rule") == "layernorm"]
    assert len(rms) == 1, ("no RMSNorm pattern bound; manifest patterns: "
                           + "; ".join(f"{p['id']} {p.get('rule')} {p.get('variant')}" for p in manifest["patterns"]))
    assert rms[0]["layernorm"]["norm"] == "rms" and rms[0]["variant"] == "rmsnorm_f32_c256_w1_v4_plain", rms[0]
    assert set(rms[0]["nodes"]) >= {"float_1", "pow_1", "mean", "rsqrt", "type_as"}, rms[0]["nodes"]
    from fact import runtime

    model = _load(example, "orig_rms_linear_installed").Model(256, 512).cuda()
    runtime.install(model, out_dir / "fact_manifest.json", strict=True)
    assert rms[0]["id"] in runtime.installed_patterns(model)
    _compare(example, out_dir, 1e-4)


def test_rmsnorm_hands_its_output_to_the_next_gemm(tmp_path):
    _check_handoffs(tmp_path, _rms_mlp_block(), "rms_mlp_block", FILTER + "|rmsnorm_f32_c256_w1_v4",
                    ["layernorm", "gemm"])
    manifest = json.loads((tmp_path / "rms_mlp_block" / "fact_manifest.json").read_text())
    producer = {p["id"]: p for p in manifest["patterns"]}[manifest["handoffs"][0]["producer"]]
    assert producer["variant"].startswith("rmsnorm_f32_c256_"), producer["variant"]


@pytest.mark.parametrize("fixture, count", [("rms_llama", 4), ("rms_fused", 3)])
def test_rmsnorm_spellings_are_realized_and_installed(tmp_path, fixture, count):
    example = tmp_path / f"{fixture}.py"
    example.write_text((FIXTURES / f"{fixture}.py").read_text())
    out_dir = tmp_path / fixture
    _optimize_rules(example, out_dir, "1e-4")
    bound = _rms_patterns(out_dir)
    assert len(bound) == count, [p["id"] for p in bound]
    if fixture == "rms_llama":
        assert any(p["variant"].endswith("_res_sum") for p in bound), [p["variant"] for p in bound]
    _, installed, _ = _installed(out_dir, f"new_{fixture}_installed")
    assert {p["id"] for p in bound} <= set(installed), installed
    _compare(example, out_dir, 1e-4)
