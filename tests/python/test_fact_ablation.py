"""CPU tests of the per-pattern ablation of fact.runtime (install(patterns=...)
and $FACT_PATTERNS): only the selected patterns are bound, the others run in
PyTorch without a fallback warning, and a selection that cannot be read or
binds nothing is an error. Kernels are fact_testutil.FakeGemm stand-ins."""
import json
import os
import sys
import types
import warnings

import pytest

from fact_testutil import ROOT, FakeGemm, bias_epilogue, gemm_binding

torch = pytest.importorskip("torch")

from ablation_model import Model as TwoStage  # noqa: E402
from fact import runtime  # noqa: E402


def linear(pid, root, a, n, k):
    return {"id": pid, "rule": "gemm", "root": root, "nodes": [root], "inputs": [a, f"{root}_weight", f"{root}_bias"],
            "outputs": [root], "dtype": "float32", "library": f"lib{pid}.so", "variant": "fake", "math": "f32",
            "gemm": gemm_binding(32, n, k, a, f"{root}_weight", root, bias_epilogue(f"{root}_bias"))}


MANIFEST = {"fact_manifest": 1, "patterns": [linear("p0", "stage_lin", "x", 16, 32),
                                             linear("p1", "head", "relu", 8, 16)]}


@pytest.fixture
def kernels():
    made = {}

    def loader(path):
        made[path.rsplit("/", 1)[-1]] = fake = FakeGemm(epilogue="bias")
        return fake

    previous = runtime.set_kernel_loader(loader)
    yield made
    runtime.set_kernel_loader(previous)


def run_with(selection, kernels, monkeypatch=None, env=None):
    torch.manual_seed(0)
    module = TwoStage()
    x = torch.randn(32, 32)
    expected = module(x)
    if env is not None:
        monkeypatch.setenv(runtime.PATTERNS_ENV, env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ablation is not a fallback: no warning
        runtime.install(module, MANIFEST, strict=True, patterns=selection)
        got = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    return runtime.installed_patterns(module)


@pytest.mark.parametrize("selection, bound", [
    (None, ["p0", "p1"]),
    ("all", ["p0", "p1"]),
    ("rule:gemm", ["p0", "p1"]),
    ("module:stage", ["p0"]),            # root stage_lin runs inside `stage`
    ("module:stage.lin", ["p0"]),
    ("module:head", ["p1"]),
    ("p1", ["p1"]),
    (" p0 , module:head ", ["p0", "p1"]),
    ("none", []),
])
def test_selection_binds_only_the_named_patterns(kernels, selection, bound):
    assert run_with(selection, kernels) == bound
    assert sorted(kernels) == sorted(f"lib{p}.so" for p in bound)  # unselected libraries are not even loaded


def test_environment_knob_selects_when_no_argument_is_given(kernels, monkeypatch):
    assert run_with(None, kernels, monkeypatch, env="module:head") == ["p1"]
    # An explicit argument wins over the environment.
    assert run_with("p0", kernels, monkeypatch, env="module:head") == ["p0"]


def test_module_prefix_is_a_path_prefix_not_a_string_prefix(kernels):
    with pytest.raises(ValueError, match="matches none of the manifest's patterns: p0 .*p1"):
        runtime.install(TwoStage(), MANIFEST, patterns="module:stag")


@pytest.mark.parametrize("selection, message", [
    ("rule:attention", "matches none"),
    ("layer:head", "cannot read 'layer:head'"),
    ("rule:", "cannot read 'rule:'"),
    ("none,p0", "cannot read 'none'"),
])
def test_bad_selections_are_clear_errors(kernels, selection, message):
    with pytest.raises(ValueError, match=message):
        runtime.install(TwoStage(), MANIFEST, patterns=selection)


def test_an_item_that_matches_nothing_warns_when_others_match(kernels):
    module = TwoStage()
    with pytest.warns(RuntimeWarning, match="'rule:layernorm' matches no pattern"):
        runtime.install(module, MANIFEST, patterns="rule:layernorm,p1")
    assert runtime.installed_patterns(module) == ["p1"]


# ------------------------------------------------------------------ bench/run.py's use of it

MODEL_SOURCE = (ROOT / "tests" / "python" / "ablation_model.py").read_text()

# What `fact compose` writes, reduced to the part bench/run.py relies on:
# ModelNew(Model) installs the manifest in its constructor.
MODEL_NEW = '''
import pathlib
import fact.runtime
from model_source import Model, get_inputs, get_init_inputs

_HERE = pathlib.Path(__file__).resolve().parent


class ModelNew(Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        fact.runtime.install(self, _HERE / "fact_manifest.json")
'''


@pytest.fixture
def composed(tmp_path):
    (tmp_path / "model_source.py").write_text(MODEL_SOURCE)
    (tmp_path / "ModelNew.py").write_text(MODEL_NEW)
    patterns = [dict(p, math=math) for p, math in zip(MANIFEST["patterns"], ("bf16x3", "tf32"))]
    (tmp_path / "fact_manifest.json").write_text(json.dumps(dict(MANIFEST, patterns=patterns, tolerance=1e-4)))
    return tmp_path


@pytest.fixture
def bench_on_cpu(monkeypatch):
    """bench/run.py with torch bound (main() does that) and models left on the CPU."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import run

    def build_model(cls, init_args):
        torch.manual_seed(run.MODEL_SEED)
        return cls(*init_args).eval()

    monkeypatch.setattr(run, "torch", torch)
    monkeypatch.setattr(run, "build_model", build_model)
    return run


@pytest.mark.parametrize("ablation, bound, precision", [
    (None, ["p0", "p1"], "bf16x3+tf32"),
    (("all", "all"), ["p0", "p1"], "bf16x3+tf32"),
    (("head", "module:head"), ["p1"], "tf32"),
])
def test_bench_builds_fact_with_only_the_ablated_patterns(composed, bench_on_cpu, kernels, monkeypatch, ablation,
                                                          bound, precision):
    run = bench_on_cpu
    # The caller's environment never leaks into a record: without an ablation all patterns are bound.
    monkeypatch.setenv(runtime.PATTERNS_ENV, "p0")
    example = run.load_file_module(composed / "model_source.py", "ablation_example")
    assert run.ablation_settings(example) == [("all", "all"), ("head", "module:head")]
    spec = types.SimpleNamespace(directory=composed, tolerance=1e-4)
    built = run.build_system("fact", example, [], spec, tag=f"t{len(bound)}", ablation=ablation)
    assert built.info["patterns_bound"] == bound
    assert built.precision == precision
    assert sorted(kernels) == sorted(f"lib{p}.so" for p in bound)
    assert os.environ[runtime.PATTERNS_ENV] == "p0"  # restored after the build
    torch.manual_seed(run.MODEL_SEED)
    eager = example.Model().eval()
    x = torch.randn(32, 32)
    torch.testing.assert_close(built.fn(x), eager(x), rtol=1e-5, atol=1e-5)


def test_bench_sdpa_peer_needs_the_hook(bench_on_cpu):
    run = bench_on_cpu
    square = run.load_example(run.suites.suite("l1-gemm")["l1-square-4096"])
    with pytest.raises(LookupError, match="offers no sdpa_variant"):
        run.build_system("eager-bf16-sdpa", square, [], None, tag="s")
    block = run.load_example(run.suites.suite("l3-minigpt")["l3-minigpt-block"])
    built = run.build_system("eager-bf16-sdpa", block, [32, 4, 16], None, tag="s")
    assert built.precision == "bf16" and built.owner.attn.flash is True


def test_bench_main_times_fact_once_per_ablation_setting(tmp_path, bench_on_cpu, kernels, monkeypatch):
    """bench/run.py's main loop on the CPU (CUDA-only steps replaced): the l3 block
    at a tiny size, the eager peers, and fact once per FACT_ABLATIONS setting; a
    setting that matches no bound pattern is a failed record that says so."""
    run = bench_on_cpu
    source = (ROOT / "examples" / "l3_minigpt_block.py").read_text()
    sizes = (("B = 128", "B = 2"), ("T = 512", "T = 16"), ("C = 768", "C = 32"), ("N_HEAD = 8", "N_HEAD = 4"))
    for full, tiny in sizes:
        assert full in source
        source = source.replace(full, tiny)
    example = tmp_path / "tiny_block.py"
    example.write_text(source)
    composed = tmp_path / "composed"
    composed.mkdir()
    (composed / "model_source.py").write_text(source)
    (composed / "ModelNew.py").write_text(MODEL_NEW)
    c_attn = linear("p1", "attn_c_attn", "ln_1", 96, 32)
    (composed / "fact_manifest.json").write_text(json.dumps({"fact_manifest": 1, "tolerance": 1e-4,
                                                             "patterns": [dict(c_attn, math="bf16x3")]}))

    def make_inputs(module, seed, dist):
        torch.manual_seed(seed)
        inputs = list(module.get_inputs())
        return [torch.randn_like(x) for x in inputs] if dist == "normal" else inputs

    monkeypatch.setitem(run.suites.SUITES, "tiny-l3", {"tiny-block": str(example)})
    monkeypatch.setattr(run, "make_inputs", make_inputs)
    monkeypatch.setattr(run, "time_system", lambda fn, ex, warmup, reps: {"median_ms": 1.0, "mean_ms": 1.0})
    monkeypatch.setattr(run, "poison_allocator", lambda nbytes: None)
    monkeypatch.setattr(run, "cuda_alive", lambda: True)
    monkeypatch.setattr(run, "bf16_autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    code = run.main(["--suite", "tiny-l3", "--out", str(tmp_path / "results"), "--trials", "1", "--reps", "1",
                     "--systems", "eager-fp32,eager-bf16-sdpa,fact", "--fact", f"tiny-block:1e-4={composed}"])
    assert code == 0
    doc = json.loads((tmp_path / "results" / "h100-sxm" / "tiny-l3.json").read_text())
    assert run.schema.validate_results(doc) == []
    by = {(r["system"], r.get("ablation")): r for r in doc["records"]}
    assert sorted(by) == [("eager-bf16-sdpa", None), ("eager-fp32", None),
                          ("fact", "all"), ("fact", "attention"), ("fact", "mlp")]
    sdpa = by[("eager-bf16-sdpa", None)]
    assert sdpa["error"] is None and sdpa["median_ms"] == 1.0 and sdpa["tolerance"] == 1e-2
    full = by[("fact", "all")]
    assert full["correct"] and full["patterns_bound"] == ["p1"] and full["precision"] == "bf16x3"
    assert full["speedups"] == {"eager-fp32": 1.0, "eager-bf16-sdpa": 1.0}
    for setting, selection in (("attention", "rule:attention"), ("mlp", "module:ln_2,module:mlp")):
        rec = by[("fact", setting)]
        assert rec["pattern_selection"] == selection and rec["median_ms"] is None and not rec["correct"]
        assert "matches none of the manifest's patterns: p1 (gemm at attn_c_attn)" in rec["error"]
