"""GPU: GEMM + epilogue chain realized as a generated sm90 EVT epilogue, end to end.

`fact optimize` on (a) examples/small/linear_gelu_mlp.py (Linear -> nn.GELU ->
Linear) and (b) a block with the tanh-GELU written out term by term and a
residual add (the residual is a full-size leaf: the epilogue's C source). For
every pattern with an epilogue chain, realize must have fused it: the winner is
an `_evt<key>` variant, realized.json carries `fused_epilogue`, the report says
"Epilogue chain fused", and the composed ModelNew matches the original Model on
fresh random inputs. The worker verified each EVT candidate against the
PyTorch evaluation of all the pattern's nodes (>= 5 trials, NaN-poisoned
outputs, DESIGN.md's passing rule) before it could win.

Runs only where a CUDA GPU, the built `fact` binary, nvcc and CUTLASS are all
present (same requirements as test_end_to_end.py); otherwise each test skips
and says which is missing. --filter keeps it to one sm90 tile config per
pattern (~2-3 nvcc translation units per example).
"""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_end_to_end import _MISSING, ROOT, _compare, _optimize  # noqa: E402

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

FILTER = "f16x3_f32_128x128x64_c1x1_coop_persistent"

WRITTEN_OUT_BLOCK = '''"""Linear -> tanh-GELU written out term by term -> Linear + residual (fp32)."""
import math

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x):
        h = self.fc(x)
        g = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return self.proj(g) + x


def get_inputs():
    return [torch.rand(4, 64, 256)]


def get_init_inputs():
    return [256, 1024]
'''


def _optimize_filtered(example: pathlib.Path, out_dir: pathlib.Path, tolerance: str):
    return _optimize(example, out_dir, tolerance, "--filter", FILTER, "--no-registry", timeout=1500)


def _check_fused(out_dir: pathlib.Path, expected_chains: int):
    plan = json.loads((out_dir / "work" / "plan.json").read_text())
    realized = json.loads((out_dir / "work" / "realized.json").read_text())
    report = (out_dir / "report.md").read_text()
    chained = [p["id"] for p in plan["patterns"] if "epilogue_chain" in p]
    assert len(chained) == expected_chains, f"discover found chains {chained}; plan:\n{json.dumps(plan, indent=1)}"
    outcomes = {p["id"]: p for p in realized["patterns"]}
    for pid in chained:
        outcome = outcomes[pid]
        reasons = "\n".join(f"  {c['name']}: {c['status']} {c.get('reason', '')}" for c in outcome["candidates"])
        assert outcome["status"] == "realized", f"{pid} fell back: {outcome['reason']}\n{reasons}"
        assert "_evt" in outcome["variant"], f"{pid} realized only its GEMM core ({outcome['variant']}):\n{reasons}"
        assert "fused_epilogue" in outcome and "left_to_pytorch" not in outcome
        assert outcome["fail_frac"] is not None and outcome["max_abs_err"] is not None
    assert report.count("Epilogue chain fused") == expected_chains, report
    manifest = json.loads((out_dir / "fact_manifest.json").read_text())
    assert sum(1 for p in manifest["patterns"] if "fused_epilogue" in p) == expected_chains


def test_linear_gelu_mlp_fuses_the_gelu_into_the_first_gemm(tmp_path):
    example = ROOT / "examples" / "small" / "linear_gelu_mlp.py"
    out_dir = tmp_path / "linear_gelu_mlp"
    _optimize_filtered(example, out_dir, "1e-4")
    _check_fused(out_dir, expected_chains=1)
    _compare(example, out_dir, 1e-4)


def test_written_out_tanh_gelu_and_residual_are_fused(tmp_path):
    example = tmp_path / "written_out_block.py"
    example.write_text(WRITTEN_OUT_BLOCK)
    out_dir = tmp_path / "written_out_block"
    _optimize_filtered(example, out_dir, "1e-4")
    _check_fused(out_dir, expected_chains=2)  # fc + tanh-GELU; proj + residual x (the C source)
    _compare(example, out_dir, 1e-4)
