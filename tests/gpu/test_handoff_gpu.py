"""GPU: operand hand-offs between composed patterns, end to end.

`fact optimize` on a Linear -> tanh-GELU (written out) -> Linear + residual block,
realize held to the pre split kernel (--variants all --filter ...pre_persistent):
both GEMMs win with a pre variant running their epilogue chains, so compose
hands the first one's output to the second as its pre-split A image
(docs/CONTRACTS.md §7.1). Checked: the manifest and the report name the
hand-off; the installed module runs the pair as one call; its output is bit for
bit the output of the same kernels run apart ($FACT_HANDOFFS=0 / install(...,
handoffs=False)): the image is by contract what the consumer's own pre-pass
makes of the fp32 intermediate; and it matches eager at 1e-4 on fresh inputs.
The same for a pre-LN MLP, whose LayerNorm hands its output to the first GEMM and that
GEMM its own to the second: a chain run as one call.
Skips, saying what is missing, without a GPU, the `fact` binary, nvcc or CUTLASS.
"""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_end_to_end import _MISSING, _compare, _load, _optimize  # noqa: E402
from test_epilogue_chain_gpu import WRITTEN_OUT_BLOCK  # noqa: E402

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

FILTER = "f16x3_f32_128x128x32_c1x1_pre_persistent"

# Pre-LN MLP: LayerNorm -> Linear -> tanh-GELU (written out) -> Linear + residual, with
# the LayerNorm output's size() read as minGPT's attention reads it: a chain of two
# hand-offs (LayerNorm -> fc, fc -> proj), the size() reading x instead.
NORM_MLP_BLOCK = '''"""Pre-LN MLP: LayerNorm -> Linear -> tanh-GELU written out -> Linear + residual (fp32)."""
import math

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x):
        y = self.ln(x)
        b, t, c = y.size()
        h = self.fc(y)
        g = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return (self.proj(g) + x).view(b * t, c)


def get_inputs():
    return [torch.rand(4, 64, 256)]


def get_init_inputs():
    return [256, 1024]
'''


def _check_handoffs(tmp_path, source: str, name: str, filter_: str, producer_rules: list):
    """`fact optimize` of `source` held to `filter_`; the manifest hands off one pair per
    entry of `producer_rules` (in consumer order), the installed module runs them as one
    fact_gemm call, bit for bit what the same kernels give apart, and matches eager at 1e-4."""
    import torch

    from fact import runtime

    example = tmp_path / f"{name}.py"
    example.write_text(source)
    out_dir = tmp_path / name
    _optimize(example, out_dir, "1e-4", "--variants", "all", "--filter", filter_, "--no-registry", timeout=1500)

    manifest = json.loads((out_dir / "fact_manifest.json").read_text())
    gemms = {p["id"]: p["variant"] for p in manifest["patterns"] if p.get("rule") == "gemm"}
    assert gemms and all("_pre_" in v and "_evt" in v for v in gemms.values()), gemms
    handoffs = manifest["handoffs"]
    assert [h.get("producer_rule") for h in handoffs] == producer_rules, handoffs
    assert all(h["format"] == "fact-split-image-v1:f16s:p2:r128:k32:sw64" for h in handoffs), handoffs
    report = (out_dir / "report.md").read_text()
    for h in handoffs:
        assert f"{h['producer']} → {h['consumer']}: " in report, report

    original = _load(example, f"orig_{name}")
    init = original.get_init_inputs()
    torch.manual_seed(7)
    fused = original.Model(*init).cuda()
    apart = original.Model(*init).cuda()
    apart.load_state_dict(fused.state_dict())
    runtime.install(fused, out_dir / "fact_manifest.json", strict=True)
    runtime.install(apart, out_dir / "fact_manifest.json", strict=True, handoffs=False)
    pairs = [f"{h['producer']}->{h['consumer']}" for h in handoffs]
    assert sorted(runtime.installed_handoffs(fused)) == sorted(pairs) and runtime.installed_handoffs(apart) == []
    calls = [n for n in fused._fact_graph_module.graph.nodes if n.target is runtime.fact_gemm]
    assert len(calls) == 1, "the hand-off chain should run as one fact_gemm call"
    for trial in range(3):
        torch.manual_seed(100 + trial)
        with torch.device("cuda"):
            inputs = original.get_inputs()
        with torch.no_grad():
            got, want = fused(*inputs), apart(*inputs)
        torch.cuda.synchronize()
        assert not torch.isnan(got).any()
        differ = (got != want).sum().item()
        assert differ == 0, f"trial {trial}: {differ} elements differ between the hand-offs and the separate kernels"
    _compare(example, out_dir, 1e-4)


def test_gemm_pair_hands_its_intermediate_over_as_an_operand_image(tmp_path):
    _check_handoffs(tmp_path, WRITTEN_OUT_BLOCK, "handoff_block", FILTER, ["gemm"])


def test_layernorm_gemm_gemm_chain_hands_off_both_intermediates(tmp_path):
    """The LayerNorm writes fc's image (fact_layernorm_run_image), fc reads it and writes
    proj's (a_image and d_image in one launch), proj reads it."""
    _check_handoffs(tmp_path, NORM_MLP_BLOCK, "norm_mlp_block", FILTER + "|layernorm_f32_c256_w1_v4",
                    ["layernorm", "gemm"])
