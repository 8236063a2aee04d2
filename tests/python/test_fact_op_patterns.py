"""CPU tests of the layernorm / attention pattern path on the Python side:
the ctypes mirrors of FactLayerNormProblem / FactAttentionProblem
(include/fact/kernel_abi.h), the payload -> problem translation, the worker's
verification of such candidates (fact.worker_ops, with CPU kernel stand-ins that
compute from the problem's pointers and strides, so a wrong translation gives a
wrong answer), the causal-buffer check, and the runtime binding
(fact.runtime_ops). Payloads come from the real rules through `fact discover`
(the release build; skipped with the reason when it is absent)."""
import ctypes
import json
import re
import warnings

import pytest

from fact_testutil import ROOT, FakeGemm, discover, fact_binary, run_worker

torch = pytest.importorskip("torch")

from fact import capture, kernel, op_kernels, runtime, runtime_ops, worker, worker_ops  # noqa: E402

_C_TYPES = {"int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32, "const void*": ctypes.c_void_p,
            "void*": ctypes.c_void_p, "float": ctypes.c_float}


def header_fields(struct):
    text = (ROOT / "include" / "fact" / "kernel_abi.h").read_text()
    body = re.search(rf"typedef struct {struct} \{{(.*?)\}} {struct};", text, re.S).group(1)
    fields = []
    for decl in re.sub(r"/\*.*?\*/", "", body, flags=re.S).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        match = re.match(r"((?:const\s+)?\w+\s*\*?)\s*(.+)", decl)
        ctype = re.sub(r"\s+", " ", match.group(1)).replace(" *", "*").strip()
        for name in match.group(2).split(","):
            fields.append((name.strip(), ctype))
    return fields


@pytest.mark.parametrize("struct, mirror, count", [("FactLayerNormProblem", op_kernels.FactLayerNormProblem, 13),
                                                   ("FactAttentionProblem", op_kernels.FactAttentionProblem, 24)])
def test_problem_structs_mirror_the_header(struct, mirror, count):
    fields = header_fields(struct)
    assert len(fields) == count
    assert [name for name, _ in fields] == [name for name, _ in mirror._fields_]
    for (name, ctype), (_, pytype) in zip(fields, mirror._fields_):
        assert _C_TYPES[ctype] is pytype, (name, ctype, pytype)


def test_loaders_name_the_abi_entry_points(tmp_path):
    header = (ROOT / "include" / "fact" / "kernel_abi.h").read_text()
    for kind in ("layernorm", "attention"):
        assert f"int fact_{kind}_can_implement(" in header and f"int fact_{kind}_run(" in header
    assert "size_t fact_attention_workspace_size(" in header
    with pytest.raises(kernel.KernelError, match="no such kernel library"):
        op_kernels.load_kernel("layernorm", str(tmp_path / "libabsent.so"))
    with pytest.raises(kernel.KernelError, match="no kernel loader"):
        op_kernels.load_kernel("softmax", str(tmp_path / "lib.so"))


# ---------------------------------------------------------------------------
# CPU kernel stand-ins (fact.runtime.set_kernel_loader / worker loader seam)

def _view(ptr, dims):
    return FakeGemm._view(ptr, dims)


class _FakeOp:
    """A CPU stand-in for a layernorm / attention library; `flaw` names the
    mistake it makes on purpose."""

    device_type = "cpu"
    default_name = ""

    def __init__(self, name=None, flaw=None):
        self.name, self.flaw, self.runs = name or self.default_name, flaw, 0

    def can_implement(self, p):
        return None

    def workspace_size(self, p):
        return 0


class FakeLayerNorm(_FakeOp):
    """LayerNorm (or, with rms, RMSNorm: x / sqrt(mean(x^2) + eps) * weight) from the
    problem's pointers; flaw "no_bias" drops the bias, "layer" makes an RMSNorm
    subtract the mean."""

    default_name = "fake_ln"
    rms = False

    def run(self, p, workspace_ptr, workspace_bytes, stream_ptr):
        import numpy as np

        self.runs += 1
        if self.flaw == "unwritten":
            return
        rows, cols = p.rows, p.cols
        x = _view(p.x, [(rows, p.x_row_stride), (cols, 1)]).astype(np.float64)
        if p.residual:
            x = x + _view(p.residual, [(rows, p.residual_row_stride), (cols, 1)])
            if p.sum:
                _view(p.sum, [(rows, p.sum_row_stride), (cols, 1)])[...] = x.astype(np.float32)
        if not self.rms or self.flaw == "layer":
            x = x - x.mean(axis=1, keepdims=True)
        y = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + p.eps)
        if p.weight:
            y = y * _view(p.weight, [(cols, 1)])
        assert not (self.rms and p.bias), "an RMSNorm binding passes no bias"
        if p.bias and self.flaw != "no_bias":
            y = y + _view(p.bias, [(cols, 1)])
        _view(p.y, [(rows, p.y_row_stride), (cols, 1)])[...] = y.astype(np.float32)


class FakeRmsNorm(FakeLayerNorm):
    default_name = "fake_rms"
    rms = True


class FakeAttention(_FakeOp):
    default_name = "fake_attention"

    def run(self, p, workspace_ptr, workspace_bytes, stream_ptr):
        import numpy as np

        self.runs += 1

        def operand(role, seq, dim):
            return _view(getattr(p, role), [(p.batch, getattr(p, f"{role}_stride_batch")),
                                            (p.heads, getattr(p, f"{role}_stride_head")),
                                            (seq, getattr(p, f"{role}_stride_seq")), (dim, 1)])

        q = operand("q", p.seq_q, p.head_dim).astype(np.float64)
        k = operand("k", p.seq_k, p.head_dim).astype(np.float64)
        v = operand("v", p.seq_k, p.head_dim_v).astype(np.float64)
        scores = p.scale * q @ np.swapaxes(k, -1, -2)
        if p.causal and self.flaw != "ignores_causal":
            keep = np.tril(np.ones((p.seq_q, p.seq_k), dtype=bool))
            scores = np.where(keep, scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        out = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        operand("o", p.seq_q, p.head_dim_v)[...] = out.astype(np.float32)


# ---------------------------------------------------------------------------
# Plans from the real rules

def pattern_of(plan, rule):
    found = [p for p in plan["patterns"] if p["rule"] == rule]
    assert found, f"no {rule} pattern in {[p['rule'] for p in plan['patterns']]}"
    return found[0]


class ResidualLN(torch.nn.Module):
    """x + r feeds the LayerNorm and is read again: the kernel writes the sum too."""

    def __init__(self):
        super().__init__()
        self.ln = torch.nn.LayerNorm(32)
        with torch.no_grad():
            self.ln.weight.normal_()
            self.ln.bias.normal_()

    def forward(self, x, r):
        s = x + r
        return self.ln(s) * s


def load_fixture_module(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"fixture_{name}", ROOT / "tests" / "fixtures" / "modules3" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layernorm_problem_translation(tmp_path):
    plan, _ = discover(capture.capture_module(ResidualLN(), [torch.randn(4, 6, 32), torch.randn(4, 6, 32)]),
                       tmp_path)
    ln = pattern_of(plan, "layernorm")
    assert ln["outputs"] == ["add", "ln"] and ln["layernorm"]["residual"]["sum"]["tensor"] == "add"
    payload = ln["layernorm"]
    x, r = torch.randn(4, 6, 32), torch.randn(4, 6, 32)
    w, b = torch.randn(32), torch.randn(32)
    s, y = torch.empty(4, 6, 32), torch.empty(4, 6, 32)
    p = op_kernels.layernorm_problem(payload, {"x": x, "r": r, "ln_weight": w, "ln_bias": b}, {"add": s, "ln": y})
    assert (p.rows, p.cols, p.x, p.residual, p.sum, p.y) == (24, 32, x.data_ptr(), r.data_ptr(), s.data_ptr(),
                                                             y.data_ptr())
    assert (p.x_row_stride, p.weight, p.bias) == (32, w.data_ptr(), b.data_ptr())
    assert abs(p.eps - 1e-5) < 1e-12
    # A row-strided view (every other row of a wider tensor) keeps its real row stride.
    wide = torch.randn(24, 64)
    p = op_kernels.layernorm_problem(payload, {"x": wide[:, :32], "r": r, "ln_weight": w, "ln_bias": b},
                                     {"add": s, "ln": y})
    assert p.x_row_stride == 64
    with pytest.raises(kernel.BindingError, match="float64"):
        op_kernels.layernorm_problem(payload, {"x": x.double(), "r": r, "ln_weight": w, "ln_bias": b},
                                     {"add": s, "ln": y})
    with pytest.raises(kernel.BindingError, match="no single row stride"):
        op_kernels.layernorm_problem(payload, {"x": x.transpose(0, 1), "r": r, "ln_weight": w, "ln_bias": b},
                                     {"add": s, "ln": y})


def test_worker_verifies_layernorm_candidates(tmp_path):
    plan, ir_path = discover(capture.capture_module(ResidualLN(), [torch.randn(4, 6, 32), torch.randn(4, 6, 32)]),
                             tmp_path)
    ln = pattern_of(plan, "layernorm")

    def loader(path):
        flaw = path.rsplit("/", 1)[-1].split(".")[0]
        return FakeLayerNorm(name=path, flaw=None if flaw == "ok" else flaw)

    results = run_worker(ir_path, ln, loader, ["ok", "unwritten", "no_bias"])
    ok = results["ok"]
    assert ok["status"] == "ok", ok
    assert ok["kb_pass"] and ok["trials"] == worker.MIN_TRIALS and ok["median_ms"] > 0
    assert results["unwritten"]["status"] == "wrong" and "output add" in results["unwritten"]["reason"]
    assert results["no_bias"]["status"] == "wrong" and "output ln" in results["no_bias"]["reason"]


class LlamaRMS(torch.nn.Module):
    """Llama's RMSNorm written out on s = x + r, the sum read again: one rms pattern with
    the input cast, type_as, the weight and the residual sum."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(32) + 0.5)

    def forward(self, x, r):
        s = x + r
        f = s.float()
        y = (f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(s) * self.weight
        return y * s


def rms_case(tmp_path):
    x, r = torch.randn(4, 6, 32), torch.randn(4, 6, 32)
    model = LlamaRMS()
    plan, ir_path = discover(capture.capture_module(model, [x, r]), tmp_path)
    return model, x, r, plan, ir_path, pattern_of(plan, "layernorm")


def test_rmsnorm_pattern_reference_keeps_float64_through_the_casts(tmp_path):
    from fact import reference

    model, x, r, plan, ir_path, rms = rms_case(tmp_path)
    payload = rms["layernorm"]
    assert payload["norm"] == "rms" and payload["bias"] is None and payload["residual"]["sum"] is not None
    assert rms["outputs"] == ["add", rms["layernorm"]["y"]["tensor"]]
    ir = json.loads(ir_path.read_text())
    inputs = {"x": x, "r": r, "weight": model.weight.detach()}
    s, y = reference.run_pattern(ir, rms, inputs)
    s64, y64 = reference.run_pattern(ir, rms, inputs, promote64=True)
    assert y.dtype == torch.float32 and y64.dtype == torch.float64, "x.float() of the fp64 reference stays fp64"
    expected = x.double() + r.double()
    expected = expected / torch.sqrt(expected.pow(2).mean(-1, keepdim=True) + 1e-6) * model.weight.double()
    torch.testing.assert_close(y64, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y, expected.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, x + r)


def test_worker_verifies_rmsnorm_candidates(tmp_path):
    _, _, _, _, ir_path, rms = rms_case(tmp_path)

    def loader(path):
        flaw = path.rsplit("/", 1)[-1].split(".")[0]
        return FakeRmsNorm(name=path, flaw=None if flaw == "ok" else flaw)

    results = run_worker(ir_path, rms, loader, ["ok", "layer", "unwritten"])
    assert results["ok"]["status"] == "ok", results["ok"]
    assert results["ok"]["kb_pass"] and results["ok"]["trials"] == worker.MIN_TRIALS
    assert results["layer"]["status"] == "wrong", results["layer"]
    assert results["unwritten"]["status"] == "wrong" and "output add" in results["unwritten"]["reason"]


def test_runtime_binds_a_written_out_rmsnorm(tmp_path):
    model, x, r, plan, _, rms = rms_case(tmp_path)
    expected = model(x, r)
    fake = FakeRmsNorm()
    install_with(model, manifest_for(plan, {"layernorm"}), {"layernorm": fake}, strict=True)
    assert runtime.installed_patterns(model) == [rms["id"]]
    got = model(x, r)
    assert fake.runs == 1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_capture_writes_rms_norm_with_its_eps():
    class Fused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.RMSNorm(32)
            self.w = torch.nn.Parameter(torch.ones(32))

        def forward(self, x):
            return torch.nn.functional.rms_norm(self.norm(x), [32], self.w, 1e-6)

    ir = capture.capture_module(Fused(), [torch.randn(4, 32)])
    nodes = {n["id"]: n for n in ir["nodes"]}
    assert nodes["norm"]["op"] == "rms_norm" and nodes["rms_norm"]["op"] == "rms_norm"
    assert nodes["norm"]["attrs"] == {"normalized_shape": [32], "eps": torch.finfo(torch.float32).eps}
    assert nodes["norm"]["inputs"] == ["x", "norm_weight"]
    assert nodes["rms_norm"]["attrs"]["eps"] == 1e-6 and nodes["rms_norm"]["inputs"] == ["norm", "w"]


def attention_case(tmp_path):
    fixture = load_fixture_module("attn_mingpt")
    torch.manual_seed(0)
    model = fixture.Model()
    plan, ir_path = discover(capture.capture_module(model, fixture.get_inputs()), tmp_path)
    return fixture, model, plan, ir_path, pattern_of(plan, "attention")


def test_attention_problem_translation(tmp_path):
    _, _, _, _, att = attention_case(tmp_path)
    payload = att["attention"]
    qkv = torch.randn(2, 16, 96)
    out = torch.empty(2, 16, 32)
    p = op_kernels.attention_problem(payload, {payload["q"]["tensor"]: qkv}, out)
    assert (p.batch, p.heads, p.seq_q, p.seq_k, p.head_dim, p.head_dim_v, p.causal) == (2, 4, 16, 16, 8, 8, 1)
    assert (p.q, p.k, p.v) == (qkv.data_ptr(), qkv.data_ptr() + 32 * 4, qkv.data_ptr() + 64 * 4)
    assert (p.q_stride_batch, p.q_stride_head, p.q_stride_seq) == (1536, 8, 96)
    assert (p.o, p.o_stride_batch, p.o_stride_head, p.o_stride_seq) == (out.data_ptr(), 512, 8, 32)
    assert abs(p.scale - 8 ** -0.5) < 1e-7
    with pytest.raises(kernel.BindingError, match="smaller than the payload"):
        op_kernels.attention_problem(payload, {payload["q"]["tensor"]: torch.randn(2, 15, 96)}, out)
    with pytest.raises(kernel.BindingError, match="not contiguous"):
        op_kernels.attention_problem(payload, {payload["q"]["tensor"]: torch.randn(16, 2, 96).transpose(0, 1)}, out)


def test_worker_reference_uses_a_real_causal_buffer(tmp_path):
    _, _, _, ir_path, att = attention_case(tmp_path)
    assert att["attention"]["mask"]["must_verify"]

    def loader(path):
        flaw = path.rsplit("/", 1)[-1].split(".")[0]
        return FakeAttention(name=path, flaw=None if flaw == "ok" else flaw)

    results = run_worker(ir_path, att, loader, ["ok", "ignores_causal"])
    assert results["ok"]["status"] == "ok", results["ok"]
    # Had the bench filled the buffer with noise (or ones), the non-causal kernel could pass.
    assert results["ignores_causal"]["status"] == "wrong", results["ignores_causal"]


def test_reference_frees_its_intermediates_without_the_garbage_collector(tmp_path):
    # The worker runs 10 references per candidate on GiB-sized scores: a reference
    # cycle that holds the evaluation environment until a gc pass ran the H100 out
    # of memory on the minGPT block (B = 128) within a few trials.
    import gc

    _, _, _, ir_path, att = attention_case(tmp_path)
    bench = worker_ops.OpBench(json.loads(ir_path.read_text()), att, torch.device("cpu"))
    for _ in range(5):  # earlier tests' cycles (capture's FakeTensors) may take several passes
        if gc.collect() == 0:
            break
    gc.disable()
    try:
        inputs = bench.make_inputs("normal", 0)
        outputs = bench.eager(inputs, promote64=True)
        del inputs, outputs
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        held = [type(o).__name__ for o in gc.garbage
                if isinstance(o, torch.Tensor) and o.device.type == "cpu" and type(o) is torch.Tensor]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert held == [], f"{len(held)} tensors were only reachable through reference cycles"


def test_causal_buffer_check():
    mask = {"kind": "masked_fill", "buffer": "bias", "rows": [0, 4], "cols": [0, 4], "keep": "nonzero"}
    tril = torch.tril(torch.ones(6, 6)).view(1, 1, 6, 6)
    assert runtime_ops.check_causal_buffer(tril, mask) is None
    assert "not exactly col <= row" in runtime_ops.check_causal_buffer(torch.ones(1, 1, 6, 6), mask)
    assert runtime_ops.check_causal_buffer(~tril.bool(), dict(mask, keep="zero")) is None
    additive = torch.zeros(6, 6).masked_fill(tril[0, 0] == 0, float("-inf"))
    assert runtime_ops.check_causal_buffer(additive, {"kind": "additive", "rows": [0, 6], "cols": [0, 6]}) is None
    assert "other than 0" in runtime_ops.check_causal_buffer(additive + 1, {"kind": "additive", "rows": [0, 6],
                                                                              "cols": [0, 6]})


def manifest_for(plan, rules):
    return {"fact_manifest": 1,
            "patterns": [dict(p, library=f"/k/{p['rule']}.so", variant=p["rule"], math="f32")
                         for p in plan["patterns"] if p["rule"] in rules]}


def install_with(model, manifest, kernels, **kwargs):
    previous = runtime.set_kernel_loader(lambda path: kernels[path.rsplit("/", 1)[-1].split(".")[0]])
    try:
        return runtime.install(model, manifest, **kwargs)
    finally:
        runtime.set_kernel_loader(previous)


def test_runtime_binds_layernorm_with_the_residual_sum(tmp_path):
    model = ResidualLN()
    x, r = torch.randn(4, 6, 32), torch.randn(4, 6, 32)
    plan, _ = discover(capture.capture_module(model, [x, r]), tmp_path)
    expected = model(x, r)
    fake = FakeLayerNorm()
    install_with(model, manifest_for(plan, {"layernorm"}), {"layernorm": fake}, strict=True)
    assert runtime.installed_patterns(model) == [pattern_of(plan, "layernorm")["id"]]
    got = model(x, r)
    assert fake.runs == 1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_runtime_binds_causal_attention_and_refuses_a_non_causal_buffer(tmp_path):
    fixture, model, plan, _, _ = attention_case(tmp_path)
    (x,) = fixture.get_inputs()
    expected = model(x)
    fake = FakeAttention()
    install_with(model, manifest_for(plan, {"attention"}), {"attention": fake}, strict=True)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    assert fake.runs == 1
    left = {n.name for n in model._fact_graph_module.graph.nodes}
    assert not left & {"softmax", "masked_fill", "matmul", "transpose", "size"}, left

    torch.manual_seed(0)
    other = fixture.Model()
    other.bias.fill_(1.0)  # a mask that keeps everything: the causal kernel would be wrong
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install_with(other, manifest_for(plan, {"attention"}), {"attention": FakeAttention()})
    assert runtime.installed_patterns(other) == []
    assert any("not exactly col <= row" in str(w.message) for w in caught)


class BareSdpa(torch.nn.Module):
    """F.scaled_dot_product_attention on (B, H, T, d) inputs, its [B, H, T, d] output returned
    as it is: not the merged-heads layout."""

    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True) * 2.0


def test_runtime_binds_attention_writing_a_bare_sdpa_layout(tmp_path):
    model = BareSdpa()
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    plan, _ = discover(capture.capture_module(model, [q, k, v]), tmp_path)
    att = pattern_of(plan, "attention")["attention"]
    assert att["o"]["strides"] == {"batch": 512, "head": 128, "seq": 8, "dim": 1}
    expected = model(q, k, v)
    fake = FakeAttention()
    install_with(model, manifest_for(plan, {"attention"}), {"attention": fake}, strict=True)
    torch.testing.assert_close(model(q, k, v), expected, atol=1e-5, rtol=1e-5)
    assert fake.runs == 1


def test_attention_output_layout_check():
    merged = {"batch": 2, "heads": 4, "seq_q": 16, "head_dim_v": 8,
              "o": {"strides": {"batch": 512, "head": 8, "seq": 32, "dim": 1}}}
    bhtd = dict(merged, o={"strides": {"batch": 512, "head": 128, "seq": 8, "dim": 1}})
    for att, shape in ((merged, (2, 16, 32)), (merged, (2, 16, 4, 8)), (merged, (32, 32)),
                       (bhtd, (2, 4, 16, 8)), (bhtd, (8, 16, 8))):
        assert op_kernels.attention_output_reason(att, shape) is None, (att["o"], shape)
    assert "not the captured [batch 2 x seq 16 x head 4 x dim 8]" in op_kernels.attention_output_reason(
        merged, (2, 4, 16, 8))
    assert "not the captured [batch 2 x head 4 x seq 16 x dim 8]" in op_kernels.attention_output_reason(
        bhtd, (2, 16, 32))
    assert "not the captured" in op_kernels.attention_output_reason(merged, (2, 16, 33))
    padded = dict(merged, o={"strides": {"batch": 600, "head": 8, "seq": 32, "dim": 1}})
    assert "not a dense layout" in op_kernels.attention_output_reason(padded, (2, 16, 32))
