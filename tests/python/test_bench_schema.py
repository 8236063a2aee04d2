"""CPU tests of the benchmark harness: results schema (DESIGN.md), suite table, CLI edges.

No GPU: examples are imported and run under torch.device("meta"), so even the
1 GiB inputs of the L1 workloads allocate nothing.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import run, schema, suites  # noqa: E402

torch = pytest.importorskip("torch")

CARD = "NVIDIA H100 80GB HBM3"


def fake_records():
    """A run's records as bench/run.py builds them, including a failed system."""
    common = {"trials": 5, "reps": 100}
    records = [
        {"workload": "l1-square-4096", "system": "eager-fp32", "tolerance": 1e-4, "precision": "fp32",
         "correct": True, "median_ms": 2.77, "mean_ms": 2.78, "error": None, **common},
        {"workload": "l1-square-4096", "system": "eager-tf32", "tolerance": 1e-2, "precision": "tf32",
         "correct": True, "median_ms": 0.41, "mean_ms": 0.42, "error": None,
         "passes": {"0.0001": False, "0.01": True}, **common},
        {"workload": "l1-square-4096", "system": "eager-bf16", "tolerance": 1e-2, "precision": "bf16",
         "correct": True, "median_ms": 0.25, "mean_ms": 0.26, "error": None, **common},
        {"workload": "l1-square-4096", "system": "inductor-max-autotune", "tolerance": 1e-4,
         "precision": "fp32", "correct": False, "median_ms": None, "mean_ms": None,
         "error": "build: BackendCompilerFailed: boom", **common},
        {"workload": "l1-square-4096", "system": "fact", "tolerance": 1e-4, "precision": "bf16x3",
         "correct": True, "median_ms": 1.0, "mean_ms": 1.01, "error": None,
         "checks": {"0.0001": {"fail_frac": float("nan")}}, **common},
        {"workload": "l1-square-4096", "system": "fact", "tolerance": 1e-2, "precision": "bf16",
         "correct": True, "median_ms": 0.2, "mean_ms": 0.21, "error": None, **common},
    ]
    return records


def test_writer_produces_design_schema(tmp_path):
    optimize = [{"workload": "l1-square-4096", "tolerance": 1e-4, "cold_s": 95.5, "warm_s": 3.2,
                 "host_cores": 16, "cold_rc": 0, "warm_rc": 0}]
    doc = schema.make_results(CARD, "scripts/gpu_run.sh", fake_records(), optimize=optimize,
                              env={"torch": "2.11.0"})
    path = schema.write_results(tmp_path, "l1-gemm", doc)
    assert path == tmp_path / "h100-sxm" / "l1-gemm.json"
    written = json.loads(path.read_text())  # strict JSON: no NaN tokens
    assert written["card"] == CARD
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", written["date"])
    assert written["command"] == "scripts/gpu_run.sh"
    assert len(written["records"]) == 6
    for rec in written["records"]:
        for key in ("workload", "system", "tolerance", "precision", "correct", "median_ms", "mean_ms"):
            assert key in rec, key
        assert rec["system"] in schema.SYSTEMS
        assert isinstance(rec["correct"], bool)
        assert isinstance(rec["tolerance"], float)
        assert rec["median_ms"] is None or rec["median_ms"] > 0
    failed = [r for r in written["records"] if r["median_ms"] is None]
    assert len(failed) == 1 and failed[0]["correct"] is False and failed[0]["error"]
    # A NaN error statistic is kept visible, as a string.
    fact = [r for r in written["records"] if r["system"] == "fact" and r["tolerance"] == 1e-4][0]
    assert fact["checks"]["0.0001"]["fail_frac"] == "nan"
    assert written["optimize"][0] == optimize[0]
    assert schema.validate_results(written) == []


@pytest.mark.parametrize("mutate, expect", [
    (lambda r: r.pop("precision"), "missing 'precision'"),
    (lambda r: r.update(system="eager-fp16"), "unknown system"),
    (lambda r: r.update(median_ms=None), "null times"),
    (lambda r: r.update(correct="yes"), "'correct' has type str"),
    (lambda r: r.update(tolerance=0.0), "tolerance must be > 0"),
    (lambda r: r.update(median_ms=True), "'median_ms' is a bool"),
])
def test_validate_rejects_bad_records(tmp_path, mutate, expect):
    records = fake_records()
    mutate(records[0])
    doc = schema.make_results(CARD, "cmd", records)
    problems = schema.validate_results(doc)
    assert any(expect in p for p in problems), problems
    with pytest.raises(ValueError, match="schema"):
        schema.write_results(tmp_path, "l1-gemm", doc)
    assert not (tmp_path / "h100-sxm" / "l1-gemm.json").exists()


def test_validate_rejects_duplicates_and_bad_top_level():
    records = fake_records()
    records.append(dict(records[0]))
    doc = schema.make_results("", "cmd", records, date="25-11-2026")
    problems = schema.validate_results(doc)
    assert any("duplicate" in p for p in problems)
    assert any("'card'" in p for p in problems)
    assert any("'date'" in p for p in problems)
    bad_opt = schema.make_results(CARD, "cmd", fake_records(), optimize=[{"workload": "w", "cold_s": 1.0}])
    assert any("warm_s" in p for p in schema.validate_results(bad_opt))


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H200", "h200-sxm"),
    ("NVIDIA GH200 480GB", "gh200"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm"),
    ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090"),
])
def test_card_slug(name, slug):
    assert schema.card_slug(name) == slug


def test_merge_keeps_other_workloads_whole(tmp_path):
    old_records = fake_records() + [
        {"workload": "l1-bmm-128x512x1024x2048", "system": "eager-fp32", "tolerance": 1e-4,
         "precision": "fp32", "correct": True, "median_ms": 5.3, "mean_ms": 5.4}]
    base = schema.make_results(CARD, "old", old_records,
                               optimize=[{"workload": "l1-square-4096", "tolerance": 1e-4, "cold_s": 1.0,
                                          "warm_s": 1.0, "host_cores": 16}])
    schema.write_results(tmp_path, "l1-gemm", base)
    loaded = schema.load_results(tmp_path / "h100-sxm" / "l1-gemm.json")
    new = schema.make_results(CARD, "new", [
        {"workload": "l1-square-4096", "system": "eager-fp32", "tolerance": 1e-4, "precision": "fp32",
         "correct": True, "median_ms": 2.5, "mean_ms": 2.6}],
        optimize=[{"workload": "l1-square-4096", "tolerance": 1e-4, "cold_s": 9.0, "warm_s": 2.0,
                   "host_cores": 16}])
    path = schema.write_results(tmp_path, "l1-gemm", new, base=loaded)
    merged = json.loads(path.read_text())
    square = [r for r in merged["records"] if r["workload"] == "l1-square-4096"]
    # The whole old square workload is replaced (claims compare systems of one run).
    assert len(square) == 1 and square[0]["median_ms"] == 2.5
    assert [r["median_ms"] for r in merged["records"] if r["workload"].startswith("l1-bmm")] == [5.3]
    assert merged["optimize"] == new["optimize"]
    assert merged["command"] == "new"
    assert [r["command"] for r in merged["runs"]] == ["old", "new"]
    with pytest.raises(ValueError, match="cannot merge"):
        schema.merge_results(schema.make_results("NVIDIA H200", "x", []), new)


def test_speedups_and_flags():
    records = [r for r in fake_records() if r["system"] != "inductor-max-autotune"]
    records.append({"workload": "l1-square-4096", "system": "inductor-default", "tolerance": 1e-4,
                    "precision": "fp32", "correct": True, "median_ms": 0.2, "mean_ms": 0.2})
    run.add_speedups(records)
    by = {(r["system"], r["tolerance"]): r for r in records}
    assert by[("eager-fp32", 1e-4)]["speedup_vs_eager_fp32"] == 1.0
    assert by[("fact", 1e-4)]["speedup_vs_eager_fp32"] == pytest.approx(2.77)
    # fact at 1e-2 against the faster of eager-tf32 (0.41) and eager-bf16 (0.25).
    assert by[("fact", 1e-2)]["speedup_vs_best_lowp_eager"] == pytest.approx(1.25)
    assert "speedup_vs_best_lowp_eager" not in by[("fact", 1e-4)]
    # 2.77 / 0.2 = 13.85x: over 10x gets a second look.
    assert "second look" in by[("inductor-default", 1e-4)]["flag"]
    assert "flag" not in by[("fact", 1e-4)]


def _suite_entries():
    return [(s, w, p) for s, table in suites.SUITES.items() for w, p in table.items()]


@pytest.mark.parametrize("suite_name, workload, rel", _suite_entries())
def test_suite_points_at_kernelbench_examples(suite_name, workload, rel):
    path = ROOT / rel
    assert path.is_file(), f"{suite_name}/{workload}: {rel} does not exist"
    module = run.load_example(path)
    for attr in ("Model", "get_inputs", "get_init_inputs"):
        assert hasattr(module, attr)
    with torch.device("meta"):
        init = list(module.get_init_inputs())
        inputs = list(module.get_inputs())
        model = module.Model(*init)
        out = model(*inputs)
    assert inputs and all(x.device.type == "meta" for x in inputs if torch.is_tensor(x))
    # fp32 workloads (the issues'), or a 16-bit module whose inputs and output share its dtype.
    dtypes = {x.dtype for x in inputs if torch.is_tensor(x)}
    assert len(dtypes) == 1 and dtypes <= {torch.float32, torch.float16, torch.bfloat16}, dtypes
    assert torch.is_tensor(out) and out.dtype in dtypes and out.numel() > 0
    if suite_name == "small":
        total = sum(x.numel() * x.element_size() for x in inputs)
        total += sum(p.numel() * p.element_size() for p in model.parameters())
        assert total < 16 * 2**20, f"{workload}: small examples keep inputs to a few MB ({total} bytes)"


@pytest.mark.parametrize("workload, shapes, out_shape", [
    ("l1-square-4096", [(4096, 4096), (4096, 4096)], (4096, 4096)),
    ("l1-bmm-128x512x1024x2048", [(128, 512, 1024), (128, 1024, 2048)], (128, 512, 2048)),
    ("l1-largek-256x256x524288", [(256, 524288), (524288, 256)], (256, 256)),
])
def test_l1_shapes_match_workload_names(workload, shapes, out_shape):
    module = run.load_example(suites.suite("l1-gemm")[workload])
    with torch.device("meta"):
        inputs = module.get_inputs()
        out = module.Model(*module.get_init_inputs())(*inputs)
    assert [tuple(x.shape) for x in inputs] == shapes
    assert tuple(out.shape) == out_shape


def test_run_order_puts_fact_before_the_inductor_peers():
    # A device call's time limit must not cost FACT's records: Inductor's compiles run last.
    systems = [p for p in run.PEERS]
    entries = [(n, None, None) for n in systems] + [("fact", "spec-1e-4", ("all", "all")),
                                                    ("fact", "spec-1e-2", ("all", "all"))]
    ordered = [e[0] for e in run.run_order(entries)]
    first_inductor = min(i for i, n in enumerate(ordered) if n in run.INDUCTOR_MODES)
    assert ordered.index("fact") < first_inductor
    assert all(n in run.INDUCTOR_MODES for n in ordered[first_inductor:])
    assert [n for n in ordered if n not in run.INDUCTOR_MODES and n != "fact"] == [
        n for n in systems if n not in run.INDUCTOR_MODES]  # eager peers keep their order
    assert [e[1] for e in run.run_order(entries) if e[0] == "fact"] == ["spec-1e-4", "spec-1e-2"]


def test_unknown_suite_is_a_clear_error():
    with pytest.raises(KeyError, match="known suites"):
        suites.suite("nope")
    assert run.main(["--suite", "nope"]) == 2


def test_fact_spec_forms(tmp_path):
    table = suites.suite("l1-gemm")
    explicit = run.FactSpec(f"l1-square-4096:1e-2={tmp_path / 'a'}", table)
    assert (explicit.workload, explicit.tolerance, explicit.directory) == ("l1-square-4096", 1e-2, tmp_path / "a")
    composed = tmp_path / "composed"
    composed.mkdir()
    (composed / "model_source.py").write_bytes(table["l1-largek-256x256x524288"].read_bytes())
    (composed / "fact_manifest.json").write_text(json.dumps({"fact_manifest": 1, "tolerance": 1e-4,
                                                             "patterns": [{"math": "bf16x6"}]}))
    inferred = run.FactSpec(str(composed), table)
    assert (inferred.workload, inferred.tolerance) == ("l1-largek-256x256x524288", 1e-4)
    assert run.composed_precision(composed) == "bf16x6"
    tol_only = run.FactSpec(f"0.01={composed}", table)
    assert (tol_only.workload, tol_only.tolerance) == ("l1-largek-256x256x524288", 1e-2)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "model_source.py").write_text("class Model: pass\n")
    with pytest.raises(ValueError, match="which workload"):
        run.FactSpec(str(stranger), table)
    (composed / "fact_manifest.json").write_text(json.dumps({"fact_manifest": 1, "patterns": []}))
    with pytest.raises(ValueError, match="no tolerance"):
        run.FactSpec(str(composed), table)
    assert run.composed_precision(composed) == "fp32"


def test_optimize_times_loader(tmp_path):
    good = tmp_path / "t.json"
    good.write_text(json.dumps([{"workload": "l1-square-4096", "tolerance": 1e-4, "cold_s": 80.0,
                                 "warm_s": 2.5, "host_cores": 16, "cold_rc": 0, "warm_rc": 0}]))
    assert schema.load_optimize_times(good)[0]["warm_s"] == 2.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"workload": "l1-square-4096", "cold_s": "80"}]))
    with pytest.raises(ValueError, match="cold_s"):
        schema.load_optimize_times(bad)
    assert run.main(["--optimize-times", str(bad)]) == 2


def test_show_prints_a_results_file(tmp_path):
    doc = schema.make_results(CARD, "cmd", fake_records())
    path = schema.write_results(tmp_path, "l1-gemm", doc)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--show", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "inductor-max-autotune" in proc.stdout and "NO" in proc.stdout
    assert "BackendCompilerFailed" in proc.stdout


def test_no_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this checks the CPU-only message")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--suite", "small"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr


def test_runtime_fallbacks_are_named_in_precision():
    rec = {"system": "fact", "precision": "bf16x3+tf32"}
    run.note_fallbacks(rec, [
        "fact: pattern p0 falls back to PyTorch: can_implement rejects the binding: null operand pointer",
        "fact: pattern p0 falls back to PyTorch: launch failed: x",
        "fact: pattern p2 falls back to PyTorch: library failed to load",
        "TensorFloat32 tensor cores for float32 matrix multiplication available but not enabled"])
    assert rec["precision"] == "bf16x3+tf32; fell back to PyTorch fp32: p0, p2"
    assert len(rec["fallbacks"]) == 3
    quiet = {"system": "fact", "precision": "bf16x3"}
    run.note_fallbacks(quiet, ["some other warning"])
    assert quiet == {"system": "fact", "precision": "bf16x3"}


def ablation_records():
    """fact timed once per ablation setting of an l3 workload, beside two peers."""
    base = {"workload": "l3-minigpt-block", "tolerance": 1e-4, "correct": True, "error": None}
    records = [dict(base, system="eager-fp32", precision="fp32", median_ms=30.6, mean_ms=30.7),
               dict(base, system="eager-bf16-sdpa", tolerance=1e-2, precision="bf16", median_ms=2.81, mean_ms=2.9)]
    for name, selection, ms, bound in (("all", "all", 6.0, ["p0", "p1", "p2"]),
                                       ("attention", "rule:attention", 20.0, ["p2"]),
                                       ("mlp", "module:ln_2,module:mlp", 15.0, ["p0", "p1"])):
        records.append(dict(base, system="fact", precision="bf16x3", median_ms=ms, mean_ms=ms,
                            ablation=name, pattern_selection=selection, patterns_bound=bound))
    return records


def test_ablation_records_are_valid_and_distinct(tmp_path):
    doc = schema.make_results(CARD, "cmd", ablation_records())
    assert schema.validate_results(doc) == []
    written = json.loads(schema.write_results(tmp_path, "l3-minigpt", doc).read_text())
    assert [r.get("ablation") for r in written["records"] if r["system"] == "fact"] == ["all", "attention", "mlp"]


@pytest.mark.parametrize("mutate, expect", [
    (lambda rs: rs.append(dict(rs[-1])), "duplicate record"),
    (lambda rs: rs[-1].update(ablation=""), "'ablation' must be a non-empty string"),
    (lambda rs: rs[-1].update(ablation=3), "'ablation' must be a non-empty string"),
    (lambda rs: rs[0].update(ablation="all"), "only fact records have an 'ablation'"),
])
def test_validate_rejects_bad_ablation_records(mutate, expect):
    records = ablation_records()
    mutate(records)
    problems = schema.validate_results(schema.make_results(CARD, "cmd", records))
    assert any(expect in p for p in problems), problems


def test_ablation_table_and_speedups_vs_every_peer(tmp_path):
    records = ablation_records()
    run.add_speedups(records)
    fact_all = [r for r in records if r.get("ablation") == "all"][0]
    assert fact_all["speedups"] == {"eager-fp32": pytest.approx(5.1), "eager-bf16-sdpa": pytest.approx(0.4683)}
    table = run.ablation_table(records)
    lines = table.splitlines()
    assert lines[0].startswith("| workload | tol | ablation |") and len(lines) == 2 + 3
    assert "| mlp (module:ln_2,module:mlp) | p0, p1 | yes | 15.0000 | 2.04x | 0.40x |" in table
    assert run.ablation_table(fake_records()) == ""
    path = schema.write_results(tmp_path, "l3-minigpt", schema.make_results(CARD, "cmd", records))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--show-ablations", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == table, proc.stderr
    shown = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--show", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert "fact[attention]" in shown.stdout and "per-pattern ablation" in shown.stdout


def test_peers_per_suite_and_workload_hooks():
    assert set(run.PEERS) <= set(schema.SYSTEMS)
    for extra in suites.EXTRA_PEERS.values():
        assert set(extra) <= set(run.PEERS)
    assert run.default_peers("l1-gemm") == list(run.BASE_PEERS)
    l3 = run.default_peers("l3-minigpt")
    assert l3 == [p for p in run.PEERS]  # every peer, in PEERS order
    assert {"eager-bf16-sdpa", "inductor-default-bf16", "inductor-max-autotune-bf16"} <= set(l3)
    for name in ("eager-bf16-sdpa", "inductor-default-bf16", "inductor-max-autotune-bf16", "eager-tf32"):
        assert run.record_tolerance(name, None) == 1e-2
    assert run.record_tolerance("inductor-max-autotune", None) == 1e-4
    # A 16-bit module holds every peer to KernelBench's 1e-2.
    bf16_block = run.load_example(suites.suite("generality")["gen-llama-block-bf16"])
    fp32_block = run.load_example(suites.suite("generality")["gen-llama-block"])
    assert run.sixteen_bit_inputs(bf16_block) and not run.sixteen_bit_inputs(fp32_block)
    assert run.record_tolerance("inductor-default", None, run.sixteen_bit_inputs(bf16_block)) == 1e-2
    assert run.record_tolerance("inductor-default", None, run.sixteen_bit_inputs(fp32_block)) == 1e-4
    square = run.load_example(suites.suite("l1-gemm")["l1-square-4096"])
    assert "offers no sdpa_variant(model) hook" in run.missing_hook("eager-bf16-sdpa", square)
    assert run.missing_hook("eager-bf16", square) is None
    assert run.ablation_settings(square) == []
    block = run.load_example(suites.suite("l3-minigpt")["l3-minigpt-block"])
    assert run.missing_hook("eager-bf16-sdpa", block) is None


@pytest.mark.parametrize("table, expect", [
    ({}, "non-empty dict"),
    (["all"], "non-empty dict"),
    ({"all": ""}, "is not a (name, FACT_PATTERNS selection) pair"),
    ({"": "all"}, "is not a (name, FACT_PATTERNS selection) pair"),
])
def test_malformed_ablation_tables_are_clear_errors(table, expect):
    import types

    example = types.SimpleNamespace(__file__="examples/x.py", FACT_ABLATIONS=table)
    with pytest.raises(ValueError, match=re.escape(expect)):
        run.ablation_settings(example)
