"""GPU end to end for the layernorm and attention realizers: the pipeline
(`fact capture`, `fact discover`, `fact realize`, `fact compose`, i.e. what
`fact optimize` runs) on the minGPT attention fixture, the pre-LN minGPT block
fixture, a head-dim-96 attention + residual-LayerNorm module and a scalar
LayerNorm, with the plan cut down to its layernorm / attention patterns (the
GEMMs run in PyTorch, so no GEMM TU is compiled and each case takes about a
minute), then

- fact_manifest.json binds layernorm and attention patterns with their
  variants (layernorm_* / attention_sm90_f16x3_* on sm90, attention_sm80_tf32x3_*
  elsewhere), each verified by the worker
  (realized.json: status realized, a passing winner, error within eager's);
- the composed ModelNew installs them (no fallback) and matches the original
  Model at the tolerance on fresh inputs;
- a module whose causal buffer is not causal falls back with the reason.

Runs only where a CUDA GPU, the built `fact` binary, nvcc and CUTLASS exist;
otherwise each test skips saying what is missing.
"""
import json
import pathlib
import re
import textwrap
import warnings

import pytest

from test_end_to_end import FACT_BIN, _MISSING, _compare, _load  # shared GPU harness

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "modules3"
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

ATTENTION_MODULE = textwrap.dedent('''
    # minGPT's attention at B, T, C, H = {sizes}{comment}.
    import math
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    B, T, C, H = {sizes}


    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C)
            self.ln = nn.LayerNorm(C)
            self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

        def forward(self, x):
            q, k, v = self.c_attn(x).split(C, dim=2)
            k = k.view(B, T, H, C // H).transpose(1, 2)
            q = q.view(B, T, H, C // H).transpose(1, 2)
            v = v.view(B, T, H, C // H).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            {mask}
            att = F.softmax(att, dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
            {output}


    def get_inputs():
        return [{inputs}(B, T, C)]


    def get_init_inputs():
        return []
''')
CAUSAL_MASK = 'att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))'
# Head dim 96 plus a residual LayerNorm whose sum is read again (layernorm res_sum variant).
HEAD96 = ATTENTION_MODULE.format(sizes="2, 256, 768, 8", comment=", plus a residual LayerNorm", mask=CAUSAL_MASK,
                                 output="s = x + y\n        return self.ln(s) * s", inputs="torch.randn")


RULES = ("layernorm", "attention")


def _run(*args):
    import subprocess

    command = [str(FACT_BIN), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _optimize(example: pathlib.Path, out_dir: pathlib.Path, tolerance: str):
    """capture -> discover -> (keep layernorm/attention patterns) -> realize -> compose."""
    work = out_dir.parent / (out_dir.name + "_work")
    work.mkdir(parents=True, exist_ok=True)
    _run("capture", example, "-o", work / "graph.json")
    _run("discover", work / "graph.json", "--tolerance", tolerance, "-o", work / "plan_full.json")
    plan = json.loads((work / "plan_full.json").read_text())
    plan["patterns"] = [p for p in plan["patterns"] if p["rule"] in RULES]
    (work / "plan.json").write_text(json.dumps(plan, indent=2))
    realize = _run("realize", work / "plan.json", "--tolerance", tolerance, "-o", work / "realized.json")
    print(realize.stderr[-4000:])
    _run("compose", work / "realized.json", "-o", out_dir)


def _realized(out_dir: pathlib.Path) -> dict:
    return json.loads((out_dir.parent / (out_dir.name + "_work") / "realized.json").read_text())


def _attention_prefix() -> str:
    """The attention family the realizer's default set offers on this GPU (head dim <= 96)."""
    import torch

    return "attention_sm90_f16x3_f32_" if torch.cuda.get_device_capability() == (9, 0) else "attention_sm80_tf32x3_f32_"


def _check_rules(out_dir: pathlib.Path, rules: set) -> dict:
    manifest = json.loads((out_dir / "fact_manifest.json").read_text())
    bound = {p["rule"]: p for p in manifest["patterns"]}
    realized = {p["id"]: p for p in _realized(out_dir)["patterns"]}
    for rule in rules:
        assert rule in bound, (f"no {rule} pattern realized; realized.json says: "
                               + "; ".join(f"{p['id']} {p.get('rule')}: {p['status']} {p.get('reason', '')[:300]}"
                                           for p in realized.values()))
        entry = realized[bound[rule]["id"]]
        assert entry["status"] == "realized"
        prefix = {"layernorm": "layernorm_f32_", "attention": _attention_prefix()}[rule]
        assert entry["variant"].startswith(prefix), entry["variant"]
        winners = [c for c in entry["candidates"] if c["status"] == "winner"]
        assert len(winners) == 1 and winners[0]["name"] == entry["variant"]
        print(f"{rule}: {entry['variant']} {entry['median_ms']:.4f} ms vs eager {entry['baseline_median_ms']:.4f} ms, "
              f"max_abs_err {entry['max_abs_err']:.3g}")
    return bound


def _installed(out_dir: pathlib.Path, name: str):
    import torch

    from fact import runtime

    composed = _load(out_dir / "ModelNew.py", name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = composed.ModelNew(*composed.get_init_inputs()).cuda()
    for w in caught:
        print(f"install warning: {w.message}")
    return model, runtime.installed_patterns(model), torch


def _at_head_dim_96(fixture: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """The fixture rewritten to B, T, C, H = 2, 256, 768, 8. The fixtures are capture-sized
    (2, 16, 32, 4: head dim 8), where DESIGN.md's "largest error at most 2x eager's" rejects
    the 3xTF32 kernel by a hair (H100, session 4: max_abs_err 6.6e-7 against 2 x 3.1e-7 on
    normal inputs) and the attention correctly falls back, for some draws of the inputs and
    not others; at head dim 96 it passes (test_head_dim_96_attention_and_residual_layernorm)."""
    source, count = re.subn(r"^B, T, C, H = .*$", "B, T, C, H = 2, 256, 768, 8",
                            (FIXTURES / f"{fixture}.py").read_text(), count=1, flags=re.M)
    assert count == 1, f"{fixture}.py no longer starts its sizes with 'B, T, C, H = ...'"
    example = tmp_path / f"{fixture}.py"
    example.write_text(source)
    return example


# attn_mingpt / block_mingpt: the minGPT spelling; the others are spelling variants
# (bmm + additive -inf mask; bool mask + nn.Softmax; matmul + permute + chunk; SDPA;
# a tril built inside forward) that must realize the same kernel on the GPU.
@pytest.mark.parametrize("fixture, rules", [("attn_mingpt", {"attention"}),
                                            ("block_mingpt", {"attention", "layernorm"}),
                                            ("attn_bmm_additive", {"attention"}),
                                            ("attn_bool_mask_softmax_module", {"attention"}),
                                            ("attn_matmul_permute_chunk", {"attention"}),
                                            ("attn_sdpa", {"attention"}),
                                            ("attn_tril_inline", {"attention"})])
def test_fixture_patterns_are_realized_and_bound(tmp_path, fixture, rules):
    # This test is about the spellings, so it runs them where the kernel passes.
    example = _at_head_dim_96(fixture, tmp_path)
    out_dir = tmp_path / fixture
    _optimize(example, out_dir, "1e-4")
    bound = _check_rules(out_dir, rules)
    _, installed, _ = _installed(out_dir, f"new_{fixture}_installed")
    for rule in rules:
        assert bound[rule]["id"] in installed, f"{rule} pattern {bound[rule]['id']} not installed: {installed}"
    _compare(example, out_dir, 1e-4)


def test_head_dim_96_attention_and_residual_layernorm(tmp_path):
    example = tmp_path / "head96.py"
    example.write_text(HEAD96)
    out_dir = tmp_path / "head96_out"
    _optimize(example, out_dir, "1e-4")
    bound = _check_rules(out_dir, {"attention", "layernorm"})
    assert bound["layernorm"]["variant"].endswith("_res_sum"), bound["layernorm"]["variant"]
    _, installed, _ = _installed(out_dir, "new_head96_installed")
    assert {bound["attention"]["id"], bound["layernorm"]["id"]} <= set(installed)
    _compare(example, out_dir, 1e-4)




# The attention kernel's edges: query and key tiles cut by the sequence (T = 200 is no
# multiple of 64 or 128), no mask at all, a head dim (64) below the block's 96, head dim 128.
@pytest.mark.parametrize("sizes, mask, comment", [
    ("3, 200, 768, 8", CAUSAL_MASK, ", causal: partial query and key tiles"),
    ("2, 130, 768, 8", "", ", no mask"),
    ("2, 256, 256, 4", CAUSAL_MASK, ", head dim 64"),
    ("2, 192, 1024, 8", CAUSAL_MASK, ", head dim 128: 32-key tiles"),
])
def test_attention_at_tile_edges(tmp_path, sizes, mask, comment):
    _attention_realized_and_installed(tmp_path, "shaped", ATTENTION_MODULE.format(
        sizes=sizes, mask=mask, comment=comment, output="return y", inputs="torch.rand"))


def _attention_realized_and_installed(tmp_path, name: str, source: str) -> None:
    """`source` through the pipeline at 1e-4: its attention pattern realized, installed, and
    the composed module equal to the original at the tolerance."""
    example = tmp_path / f"{name}.py"
    example.write_text(source)
    out_dir = tmp_path / f"{name}_out"
    _optimize(example, out_dir, "1e-4")
    bound = _check_rules(out_dir, {"attention"})
    _, installed, _ = _installed(out_dir, f"new_{name}_installed")
    assert bound["attention"]["id"] in installed
    _compare(example, out_dir, 1e-4)


BARE_SDPA = textwrap.dedent('''
    # F.scaled_dot_product_attention on (B, H, T, d) inputs, its [B, H, T, d] output returned
    # as it is (not the merged-heads layout: the sm80 kernel cannot write it, sm90's can).
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    B, H, T, D = 4, 8, 320, 64


    class Model(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)


    def get_inputs():
        return [torch.rand(B, H, T, D), torch.rand(B, H, T, D), torch.rand(B, H, T, D)]


    def get_init_inputs():
        return []
''')


def test_bare_sdpa_output_layout(tmp_path):
    import torch

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the [B, H, T, d] output needs the sm90 attention kernel")
    _attention_realized_and_installed(tmp_path, "bare_sdpa", BARE_SDPA)


def test_a_non_causal_buffer_falls_back(tmp_path):
    import torch

    from fact import runtime

    # Needs an attention pattern in the manifest: run where the kernel passes (session 5's
    # run at the capture size fell back, so the guard under test was never reached).
    example = _at_head_dim_96("attn_mingpt", tmp_path)
    out_dir = tmp_path / "attn_mingpt_nc"
    _optimize(example, out_dir, "1e-4")
    original = _load(example, "orig_attn_mingpt_nc")
    model = original.Model().cuda()
    model.bias.fill_(1.0)  # keeps every key: not the causal mask the kernel implements
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runtime.install(model, out_dir / "fact_manifest.json", patterns="rule:attention")
    attention = [p["id"] for p in json.loads((out_dir / "fact_manifest.json").read_text())["patterns"]
                 if p["rule"] == "attention"]
    assert attention and not set(attention) & set(runtime.installed_patterns(model))
    assert any("not exactly col <= row" in str(w.message) for w in caught)
    x = original.get_inputs()[0].cuda()
    torch.testing.assert_close(model(x), original.Model.forward(model, x), atol=0, rtol=0)


ODD_LN = textwrap.dedent('''
    # LayerNorm over 31 columns without weight/bias: only scalar (v1) variants
    # are legal and the kernel gets null weight / bias pointers.
    import torch
    import torch.nn as nn

    ROWS, C = 4096, 31


    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(C, elementwise_affine=False)

        def forward(self, x):
            return self.ln(x) * 2.0


    def get_inputs():
        return [torch.randn(ROWS, C)]


    def get_init_inputs():
        return []
''')


def test_scalar_layernorm_without_affine(tmp_path):
    example = tmp_path / "odd_ln.py"
    example.write_text(ODD_LN)
    out_dir = tmp_path / "odd_ln_out"
    _optimize(example, out_dir, "1e-4")
    bound = _check_rules(out_dir, {"layernorm"})
    assert "_v1_" in bound["layernorm"]["variant"], bound["layernorm"]["variant"]
    _, installed, _ = _installed(out_dir, "new_odd_ln_installed")
    assert bound["layernorm"]["id"] in installed
    _compare(example, out_dir, 1e-4)
