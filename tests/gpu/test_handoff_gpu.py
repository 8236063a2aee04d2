"""GPU: operand hand-off between two composed GEMM patterns, end to end.

`fact optimize` on a Linear -> tanh-GELU (written out) -> Linear + residual block,
realize held to the pre split kernel (--variants all --filter ...pre_persistent):
both GEMMs win with a pre variant running their epilogue chains, so compose
hands the first one's output to the second as its pre-split A image
(docs/CONTRACTS.md §7.1). Checked: the manifest and the report name the
hand-off; the installed module runs the pair as one call; its output is bit for
bit the output of the same kernels run apart ($FACT_HANDOFFS=0 / install(...,
handoffs=False)): the image is by contract what the consumer's own pre-pass
makes of the fp32 intermediate; and it matches eager at 1e-4 on fresh inputs.
Skips, saying what is missing, without a GPU, the `fact` binary, nvcc or CUTLASS.
"""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_end_to_end import _MISSING, _compare, _load  # noqa: E402
from test_epilogue_chain_gpu import WRITTEN_OUT_BLOCK  # noqa: E402

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

FILTER = "f16x3_f32_128x128x32_c1x1_pre_persistent"


def test_gemm_pair_hands_its_intermediate_over_as_an_operand_image(tmp_path):
    import subprocess

    import torch

    from test_end_to_end import FACT_BIN

    from fact import runtime

    example = tmp_path / "written_out_block.py"
    example.write_text(WRITTEN_OUT_BLOCK)
    out_dir = tmp_path / "handoff_block"
    command = [str(FACT_BIN), "optimize", str(example), "--tolerance", "1e-4", "--variants", "all", "--filter", FILTER,
               "--no-registry", "-o", str(out_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"

    manifest = json.loads((out_dir / "fact_manifest.json").read_text())
    variants = {p["id"]: p["variant"] for p in manifest["patterns"]}
    assert len(variants) == 2 and all("_pre_" in v and "_evt" in v for v in variants.values()), variants
    assert len(manifest["handoffs"]) == 1, manifest["handoffs"]
    handoff = manifest["handoffs"][0]
    assert handoff["format"] == "fact-split-image-v1:f16s:p2:r128:k32:sw64"
    report = (out_dir / "report.md").read_text()
    assert f"{handoff['producer']} → {handoff['consumer']}: " in report, report

    original = _load(example, "orig_handoff_block")
    init = original.get_init_inputs()
    torch.manual_seed(7)
    fused = original.Model(*init).cuda()
    apart = original.Model(*init).cuda()
    apart.load_state_dict(fused.state_dict())
    runtime.install(fused, out_dir / "fact_manifest.json", strict=True)
    runtime.install(apart, out_dir / "fact_manifest.json", strict=True, handoffs=False)
    pair = f"{handoff['producer']}->{handoff['consumer']}"
    assert runtime.installed_handoffs(fused) == [pair] and runtime.installed_handoffs(apart) == []
    calls = [n for n in fused._fact_graph_module.graph.nodes if n.target is runtime.fact_gemm]
    assert len(calls) == 1, "the pair should run as one fact_gemm call"
    for trial in range(3):
        torch.manual_seed(100 + trial)
        with torch.device("cuda"):
            inputs = original.get_inputs()
        with torch.no_grad():
            got, want = fused(*inputs), apart(*inputs)
        torch.cuda.synchronize()
        assert not torch.isnan(got).any()
        differ = (got != want).sum().item()
        assert differ == 0, f"trial {trial}: {differ} elements differ between the hand-off and the separate kernels"
    _compare(example, out_dir, 1e-4)
