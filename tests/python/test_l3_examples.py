"""CPU tests of the issue-3 workloads (examples/l3_minigpt_{block,attention}.py):
sizes, shared initialisation, the SDPA hook behind the eager-bf16-sdpa peer,
the ablation settings, and the plan `fact discover` makes of the block.

The full-size models run only on the meta device; numerical checks use a tiny
configuration (the constructors take the sizes) on the CPU in fp32.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import run, suites  # noqa: E402

torch = pytest.importorskip("torch")

from fact import capture, runtime  # noqa: E402  (fact_testutil put python/ on sys.path)

BINARY = os.environ.get("FACT_BIN", str(ROOT / "build" / "release" / "fact"))
TINY = dict(n_embd=32, n_head=4, block_size=16)  # head size 8; T may be <= block_size


def example(workload):
    return run.load_example(suites.suite("l3-minigpt")[workload])


@pytest.fixture(scope="module")
def block():
    return example("l3-minigpt-block")


@pytest.fixture(scope="module")
def attention():
    return example("l3-minigpt-attention")


def test_suite_names_both_workloads():
    assert list(suites.suite("l3-minigpt")) == ["l3-minigpt-block", "l3-minigpt-attention"]


@pytest.mark.parametrize("workload", ["l3-minigpt-block", "l3-minigpt-attention"])
def test_full_size_shapes(workload):
    module = example(workload)
    assert (module.B, module.T, module.C, module.N_HEAD, module.DROPOUT) == (128, 512, 768, 8, 0.0)
    with torch.device("meta"):
        (x,) = module.get_inputs()
        model = module.Model(*module.get_init_inputs())
        out = model(x)
    assert tuple(x.shape) == (128, 512, 768) and x.dtype == torch.float32
    assert tuple(out.shape) == (128, 512, 768) and out.dtype == torch.float32
    assert tuple(model.get_buffer("bias" if workload.endswith("attention") else "attn.bias").shape) == (1, 1, 512, 512)


def test_block_and_attention_share_initialisation_and_function(block, attention):
    torch.manual_seed(0)
    whole = block.Model(**TINY)
    torch.manual_seed(0)
    alone = attention.Model(**TINY)
    mine, theirs = whole.attn.state_dict(), alone.state_dict()
    assert list(mine) == list(theirs)
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    x = torch.rand(3, 12, 32)
    with torch.no_grad():
        torch.testing.assert_close(whole.attn(x), alone(x), rtol=0, atol=0)


def test_block_is_pre_ln_attention_then_gelu_mlp(block):
    """The block against the formula written here independently (not the file's code)."""
    import math

    torch.manual_seed(1)
    model = block.Model(**TINY).eval()
    with torch.no_grad():
        for p in model.parameters():  # LayerNorm's ones/zeros would hide a swapped weight/bias
            p.add_(0.1 * torch.randn_like(p))
        x = torch.rand(2, 10, 32)
        got = model(x)

        def attn(h, m):
            b, t, c = h.shape
            q, k, v = (m.c_attn(h)).chunk(3, dim=-1)
            q, k, v = (z.reshape(b, t, 4, c // 4).permute(0, 2, 1, 3) for z in (q, k, v))
            s = q @ k.transpose(-1, -2) / math.sqrt(c // 4)
            s = s + torch.full((t, t), float("-inf")).triu(1)
            y = torch.softmax(s, -1) @ v
            return m.c_proj(y.permute(0, 2, 1, 3).reshape(b, t, c))

        h = x + attn(model.ln_1(x), model.attn)
        u = model.mlp.c_fc(model.ln_2(h))
        want = h + model.mlp.c_proj(torch.nn.functional.gelu(u, approximate="tanh"))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("workload", ["l3-minigpt-block", "l3-minigpt-attention"])
def test_sdpa_variant_is_the_same_function_through_one_sdpa_call(workload, monkeypatch):
    module = example(workload)
    torch.manual_seed(0)
    eager = module.Model(**TINY).eval()
    torch.manual_seed(0)
    variant = module.sdpa_variant(module.Model(**TINY).eval())
    assert isinstance(variant, torch.nn.Module)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    x = torch.rand(2, 16, 32)
    with torch.no_grad():
        want = eager(x)
        assert calls == []  # the workload itself is the explicit form
        got = variant(x)
    assert len(calls) == 1 and calls[0]["is_causal"] is True
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The variant keeps the parameters: state_dict keys and values unchanged.
    assert all(torch.equal(a, b) for a, b in zip(eager.state_dict().values(), variant.state_dict().values()))


@pytest.mark.parametrize("workload, settings", [
    ("l3-minigpt-block", ["all", "attention", "mlp"]),
    ("l3-minigpt-attention", ["all", "attention"]),
])
def test_ablation_settings_are_declared(workload, settings):
    declared = run.ablation_settings(example(workload))
    assert [name for name, _ in declared] == settings
    assert dict(declared)["all"] == "all"


# ------------------------------------------------------------------ the block's plan

def discover(tmp_path, source):
    if not os.path.isfile(BINARY):
        pytest.skip(f"{BINARY} is not built")
    graph = tmp_path / "graph.json"
    capture.write_ir(capture.capture_file(str(source)), str(graph))
    plan_path = tmp_path / "plan.json"
    result = subprocess.run([BINARY, "discover", str(graph), "-o", str(plan_path), "--no-registry",
                             "--arch", "sm90a", "--tolerance", "1e-4"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(graph.read_text()), json.loads(plan_path.read_text())


@pytest.fixture(scope="module")
def block_plan(tmp_path_factory):
    return discover(tmp_path_factory.mktemp("block"), suites.suite("l3-minigpt")["l3-minigpt-block"])


def by_root(plan):
    return {p["root"]: p for p in plan["patterns"]}


def test_block_plan_covers_every_node_once(block_plan):
    ir, plan = block_plan
    assert plan["unmatched"] == [] and plan["rejections"] == []
    covered = [n for p in plan["patterns"] for n in p["nodes"]]
    assert len(covered) == len(set(covered))
    assert set(covered) == {n["id"] for n in ir["nodes"]}


def test_block_plan_has_two_layernorms_one_attention_four_gemms(block_plan):
    _, plan = block_plan
    rules = sorted(p["rule"] for p in plan["patterns"])
    assert rules == ["attention"] + ["gemm"] * 4 + ["layernorm"] * 2
    roots = by_root(plan)
    assert {r for r, p in roots.items() if p["rule"] == "gemm"} == {
        "attn_c_attn", "attn_c_proj", "mlp_c_fc", "mlp_c_proj"}
    for name in ("ln_1", "ln_2"):
        ln = roots[name]["layernorm"]
        assert (ln["rows"], ln["cols"], ln["eps"]) == (128 * 512, 768, 1e-5)
        assert ln["weight"] == f"{name}_weight" and ln["bias"] == f"{name}_bias"
        # Both residual adds before the LNs belong to the GEMM epilogues, not to the LN.
        assert ln["residual"] is None
    assert roots["ln_1"]["layernorm"]["x"]["tensor"] == "x"
    assert roots["ln_2"]["layernorm"]["x"]["tensor"] == roots["attn_c_proj"]["outputs"][0]


def test_block_attention_payload(block_plan):
    _, plan = block_plan
    (pattern,) = [p for p in plan["patterns"] if p["rule"] == "attention"]
    a = pattern["attention"]
    assert a["form"] == "explicit" and a["causal"] is True
    sizes = (a["batch"], a["heads"], a["seq_q"], a["seq_k"], a["head_dim"], a["head_dim_v"])
    assert sizes == (128, 8, 512, 512, 96, 96)
    assert a["scale"] == pytest.approx(96 ** -0.5)
    assert a["mask"]["kind"] == "masked_fill" and a["mask"]["buffer"] == "attn_bias" and a["mask"]["must_verify"]
    assert a["dropout"]["p"] == 0.0
    # q, k, v read the c_attn output in place: offsets 0, C, 2C of rows of 3C.
    for name, offset in (("q", 0), ("k", 768), ("v", 1536)):
        assert a[name]["tensor"] == "attn_c_attn" and a[name]["offset"] == offset
        assert a[name]["strides"] == {"batch": 512 * 2304, "head": 96, "seq": 2304, "dim": 1}
    assert a["o"]["strides"] == {"batch": 512 * 768, "head": 96, "seq": 768, "dim": 1}
    assert pattern["outputs"] == [a["o"]["tensor"]]


def test_block_gemm_epilogues(block_plan):
    _, plan = block_plan
    roots = by_root(plan)
    sizes = {"attn_c_attn": (2304, 768), "attn_c_proj": (768, 768), "mlp_c_fc": (3072, 768), "mlp_c_proj": (768, 3072)}
    for root, (n, k) in sizes.items():
        g = roots[root]["gemm"]
        assert (g["batch"], g["m"], g["n"], g["k"]) == (1, 128 * 512, n, k), root
        assert (g["a"]["layout"], g["b"]["layout"], g["epilogue"]["kind"]) == ("row", "col", "bias"), root
    assert "epilogue_chain" not in roots["attn_c_attn"]

    gelu = roots["mlp_c_fc"]["epilogue_chain"]
    assert gelu["accumulator"] == "mlp_c_fc" and gelu["leaves"] == {}
    assert gelu["unary_equivalent"] == "gelu_tanh"
    assert sorted(v["op"] for v in gelu["values"]) == sorted(["mul", "pow", "mul", "add", "mul", "tanh", "add", "mul"])
    assert roots["mlp_c_fc"]["outputs"] == [gelu["output"]]

    # Residual epilogues: dropout(p=0) then `+ residual`, the residual a leaf of D's shape.
    for root, residual in (("attn_c_proj", "x"), ("mlp_c_proj", roots["attn_c_proj"]["outputs"][0])):
        chain = roots[root]["epilogue_chain"]
        assert [v["op"] for v in chain["values"]] == ["identity", "add"], root
        (leaf,) = chain["leaves"].values()
        assert leaf["tensor"] == residual and leaf["shape"] == [128, 512, 768] and leaf["strides"] == [393216, 768, 1]
        assert roots[root]["outputs"] == [chain["output"]]
    # The block's output is the second residual sum.
    assert roots["mlp_c_proj"]["outputs"] == [plan_output(block_plan)]


def plan_output(block_plan):
    ir, _ = block_plan
    (out,) = ir["outputs"]
    return out


def test_block_ablations_select_the_intended_patterns(block_plan, block):
    _, plan = block_plan
    with torch.device("meta"):
        gm = capture.trace(block.Model(*block.get_init_inputs()))
    chosen = {name: sorted(p["root"] for p in runtime.select_patterns(plan["patterns"], gm, selection))
              for name, selection in run.ablation_settings(block)}
    assert chosen["all"] == sorted(p["root"] for p in plan["patterns"])
    (attention_root,) = [p["root"] for p in plan["patterns"] if p["rule"] == "attention"]
    assert chosen["attention"] == [attention_root]
    assert chosen["mlp"] == ["ln_2", "mlp_c_fc", "mlp_c_proj"]
