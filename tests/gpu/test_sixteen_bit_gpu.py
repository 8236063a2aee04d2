"""16-bit I/O GEMMs end to end on a GPU: `fact optimize` of an fp16 Linear + ReLU and
of a bf16 MLP block (Linear -> tanh-GELU -> Linear + residual) at KernelBench's 1e-2,
then the composed ModelNew against the original Model on fresh random inputs.

Every GEMM pattern must be realized by an sm90 variant that reads and writes the
module's own 16-bit type (name field 4 `f16` / `bf16`, math of that type): not by an
fp32-I/O kernel, and not left to PyTorch. The epilogue chains (ReLU, GELU, bias, the
residual add) run in the kernel's fp32 epilogue with 16-bit leaves.

Skips, saying what is missing, without a CUDA GPU, the built `fact`, nvcc or CUTLASS
(test_end_to_end's requirements); FACT_BIN names the binary.
"""
import json
import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_end_to_end import _MISSING, _compare, _optimize  # noqa: E402

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

_FP16_LINEAR_RELU = """
import torch
import torch.nn as nn

class Model(nn.Module):
    def __init__(self, fin, fout):
        super().__init__()
        self.fc = nn.Linear(fin, fout).half()

    def forward(self, x):
        return torch.relu(self.fc(x))

def get_inputs():
    return [torch.rand(2048, 1024, dtype=torch.float16)]

def get_init_inputs():
    return [1024, 2048]
"""

_BF16_MLP_BLOCK = """
import torch
import torch.nn as nn
import torch.nn.functional as F

class Model(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden).to(torch.bfloat16)
        self.fc2 = nn.Linear(hidden, width).to(torch.bfloat16)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh")) + x

def get_inputs():
    return [torch.rand(1024, 512, dtype=torch.bfloat16)]

def get_init_inputs():
    return [512, 1024]
"""


@pytest.mark.parametrize("name,source,io,fused_patterns", [
    ("fp16_linear_relu", _FP16_LINEAR_RELU, "f16", 1),
    ("bf16_mlp_block", _BF16_MLP_BLOCK, "bf16", 2),
])
def test_sixteen_bit_module_runs_on_sixteen_bit_io_kernels(tmp_path, name, source, io, fused_patterns):
    example = tmp_path / f"{name}.py"
    example.write_text(source)
    out_dir = tmp_path / name
    _optimize(example, out_dir, "1e-2")
    realized = json.loads((out_dir / "work" / "realized.json").read_text())
    patterns = [p for p in realized["patterns"] if p["rule"] == "gemm"]
    assert len(patterns) == fused_patterns, realized["patterns"]
    for pattern in patterns:
        assert pattern["status"] == "realized", pattern
        # gemm_sm90_<math>_<io>_...: 16-bit math on 16-bit I/O, not fp32 I/O with a pre-pass.
        assert re.match(rf"gemm_sm90_{io}_{io}_\d+x\d+x\d+_", pattern["variant"]), pattern["variant"]
        assert pattern["math"] == io, pattern
        assert pattern.get("fused_epilogue"), f"{pattern['id']}: the epilogue chain was not fused: {pattern}"
        assert not pattern.get("verification_reused"), pattern
        tried = [c for c in pattern["candidates"] if c["status"] not in ("skipped",)]
        assert all(re.match(rf"gemm_sm90_{io}_{io}_", c["name"]) for c in tried), tried
    manifest = json.loads((out_dir / "fact_manifest.json").read_text())
    assert len(manifest["patterns"]) == fused_patterns, manifest
    _compare(example, out_dir, 1e-2)
