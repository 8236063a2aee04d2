"""CPU tests of the runtime's operand hand-offs (fact.runtime._HandoffEntry,
docs/CONTRACTS.md §7.1) with fake kernels whose "image" is the dense fp32
matrix: the pair (GEMM -> GEMM, LayerNorm -> GEMM) or the chain of pairs
(GEMM -> GEMM -> GEMM, LayerNorm -> GEMM -> GEMM) becomes one call, each
producer writes an image and the next GEMM reads it, results and gradients
equal eager, and every way a pair cannot run (switched off, an ablation,
another format, an older library, a refusal, a failed launch) keeps the
patterns correct on their own."""
import warnings

import pytest

from fact_testutil import FakeGemm, bias_epilogue, gemm_binding

torch = pytest.importorskip("torch")
nn = torch.nn

from fact import kernel, op_kernels, runtime, runtime_ops  # noqa: E402
from test_fact_op_patterns import FakeLayerNorm  # noqa: E402  (numpy y = layer_norm(x) from the pointers)

FORMAT = "fake-dense-v1"


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 48)
        self.proj = nn.Linear(48, 16)

    def forward(self, x):
        return self.proj(self.fc(x))


def pattern(pid, root, a, m, n, k):
    return {"id": pid, "rule": "gemm", "root": root, "nodes": [root], "inputs": [a, f"{root}_weight", f"{root}_bias"],
            "outputs": [root], "dtype": "float32", "library": f"lib{root}.so", "variant": "fake", "math": "f32",
            "gemm": gemm_binding(m, n, k, a, f"{root}_weight", root, bias_epilogue(f"{root}_bias"))}


def manifest(rows=32, handoff_format=FORMAT):
    return {"fact_manifest": 1,
            "patterns": [pattern("p0", "fc", "x", rows, 48, 32), pattern("p1", "proj", "fc", rows, 16, 48)],
            "handoffs": [{"producer": "p0", "consumer": "p1", "tensor": "fc", "format": handoff_format}]}


class NormProj(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(32)
        self.proj = nn.Linear(32, 16)
        with torch.no_grad():
            self.ln.weight.normal_()
            self.ln.bias.normal_()

    def forward(self, x):
        return self.proj(self.ln(x))


def layernorm_pattern(pid, rows):
    """What `fact discover` writes for NormProj's LayerNorm (x [.., 32] -> ln)."""
    return {"id": pid, "rule": "layernorm", "root": "ln", "nodes": ["ln"], "inputs": ["x", "ln_weight", "ln_bias"],
            "outputs": ["ln"], "dtype": "float32", "library": "libln.so", "variant": "fake", "math": "f32",
            "layernorm": {"rows": rows, "cols": 32, "eps": 1e-5, "element": "float32", "weight": "ln_weight",
                          "bias": "ln_bias", "x": {"tensor": "x", "row_stride": 32}, "residual": None,
                          "y": {"tensor": "ln", "row_stride": 32}}}


def ln_manifest(rows=32):
    return {"fact_manifest": 1,
            "patterns": [layernorm_pattern("p0", rows), pattern("p1", "proj", "ln", rows, 16, 32)],
            "handoffs": [{"producer": "p0", "consumer": "p1", "tensor": "ln", "format": FORMAT,
                          "producer_rule": "layernorm"}]}


def call_targets(module):
    return [n.target for n in module._fact_graph_module.graph.nodes if n.op == "call_function"]


PAIRS = {  # producer rule -> (module class, manifest, producer library)
    "gemm": (Mlp, manifest, "libfc.so"),
    "layernorm": (NormProj, ln_manifest, "libln.so"),
}


class ImageLayerNorm(FakeLayerNorm):
    """FakeLayerNorm that also writes y as an operand image (kernel_abi.h ABI 4) in
    FakeGemm's stand-in format, the dense row-major fp32 rows x cols matrix, so a
    FakeGemm consumer reads y back. `extra_bytes` skews image_bytes, `reject` is
    image_can_implement's reason, `fail` makes run_image raise."""

    def __init__(self, formats=(FORMAT,), extra_bytes=0, reject=None, fail=None):
        super().__init__()
        self.formats, self.extra_bytes, self.reject, self.fail = list(formats), extra_bytes, reject, fail
        self.image_writes = 0

    def image_formats(self):
        return list(self.formats)

    def image_bytes(self, p, image_format):
        return 4 * p.rows * p.cols + self.extra_bytes if image_format in self.formats else 0

    def image_can_implement(self, p, image_format):
        if p.y or p.y_row_stride:
            return "an image problem binds no y"
        if image_format not in self.formats:
            return f"{image_format} is not written"
        return self.reject

    def run_image(self, p, image_format, image_ptr, stream_ptr):
        if self.fail:
            raise kernel.KernelError(self.fail)
        assert self.reject is None, "run_image after image_can_implement refused"
        dense = op_kernels.FactLayerNormProblem.from_buffer_copy(p)
        dense.y, dense.y_row_stride = image_ptr, p.cols
        self.run(dense, 0, 0, stream_ptr)
        self.image_writes += 1


@pytest.fixture
def fakes():
    made, settings = {}, {"formats": {}, "reject": None, "layernorm": ImageLayerNorm, "gemm": {}}

    def loader(path):
        name = path.rsplit("/", 1)[-1]
        if name == "libln.so":
            made[name] = settings["layernorm"]()
            return made[name]
        made[name] = settings["gemm"].get(name, FakeGemm)(epilogue="bias", reject=settings["reject"],
                                                          image_format=settings["formats"].get(name, FORMAT))
        return made[name]

    previous = runtime.set_kernel_loader(loader)
    yield made, settings
    runtime.set_kernel_loader(previous)


def calls(module):
    return [n for n in module._fact_graph_module.graph.nodes if n.target is runtime.fact_gemm]


def test_pair_runs_as_one_call_through_the_image(fakes):
    made, _ = fakes
    torch.manual_seed(0)
    module = Mlp()
    x = torch.randn(4, 8, 32)
    expected = module(x)
    runtime.install(module, manifest(), strict=True)
    assert runtime.installed_patterns(module) == ["p0", "p1"]
    assert runtime.installed_handoffs(module) == ["p0->p1"]
    assert len(calls(module)) == 1
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    fc, proj = made["libfc.so"], made["libproj.so"]
    assert (fc.image_writes, proj.image_reads) == (1, 1)
    assert fc.runs == proj.runs == 1
    # Training: the forward still runs the pair, the gradients are the original nodes'.
    got = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    reference = Mlp()
    reference.load_state_dict(module.state_dict())
    Mlp.forward(reference, x).sum().backward()
    for name, param in reference.named_parameters():
        torch.testing.assert_close(module.get_parameter(name).grad, param.grad, rtol=1e-4, atol=1e-4)
    assert (fc.image_writes, proj.image_reads) == (2, 2)


@pytest.mark.parametrize("rule", PAIRS)
def test_switched_off_or_ablated_pairs_run_apart_without_a_warning(fakes, monkeypatch, rule):
    made, _ = fakes
    module_class, make_manifest, producer_library = PAIRS[rule]
    x = torch.randn(32, 32)
    for kwargs, env, bound in (({"handoffs": False}, None, ["p0", "p1"]), ({}, "0", ["p0", "p1"]),
                               ({"patterns": "p1"}, None, ["p1"])):
        module = module_class()
        expected = module(x)
        if env is None:
            monkeypatch.delenv(runtime.HANDOFFS_ENV, raising=False)
        else:
            monkeypatch.setenv(runtime.HANDOFFS_ENV, env)
        made.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runtime.install(module, make_manifest(), **kwargs)
        assert runtime.installed_patterns(module) == bound and runtime.installed_handoffs(module) == []
        with torch.no_grad():
            torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
        assert made["libproj.so"].image_reads == 0
        assert getattr(made.get(producer_library), "image_writes", 0) == 0


def test_a_library_with_another_format_keeps_the_pair_apart(fakes):
    made, settings = fakes
    settings["formats"]["libproj.so"] = "another-format"
    module = Mlp()
    x = torch.randn(32, 32)
    expected = module(x)
    with pytest.warns(RuntimeWarning, match=r"hand-off p0->p1 not used: the libraries' image formats"):
        runtime.install(module, manifest())
    assert runtime.installed_handoffs(module) == [] and len(calls(module)) == 2
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="hand-off p0->p1"):
        runtime.install(Mlp(), manifest(), strict=True)


def test_a_refused_image_problem_runs_the_pair_unfused(fakes):
    made, settings = fakes
    settings["reject"] = lambda problem: "no images today" if problem.d_image else None
    module = Mlp()
    x = torch.randn(32, 32)
    expected = module(x)
    runtime.install(module, manifest())
    assert runtime.installed_handoffs(module) == ["p0->p1"]
    with pytest.warns(RuntimeWarning, match=r"hand-off p0->p1 runs unfused: p0's can_implement: no images today"):
        with torch.no_grad():
            got = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert made["libfc.so"].image_writes == 0 and made["libfc.so"].runs == 1 and made["libproj.so"].runs == 1


@pytest.mark.parametrize("rule", PAIRS)
def test_a_second_reader_of_the_intermediate_keeps_the_pair_apart(fakes, rule):
    module_class, make_manifest, _ = PAIRS[rule]
    producer = "fc" if rule == "gemm" else "ln"

    class TwoReaders(module_class):
        def forward(self, x):
            h = getattr(self, producer)(x)
            return self.proj(h), h.sum()

    module = TwoReaders()
    x = torch.randn(32, 32)
    expected = module(x)
    with pytest.warns(RuntimeWarning, match=r"read by more than the consumer's A"):
        runtime.install(module, make_manifest())
    assert runtime.installed_patterns(module) == ["p0", "p1"] and runtime.installed_handoffs(module) == []
    with torch.no_grad():
        for got, want in zip(module(x), expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# LayerNorm producer (manifest producer_rule "layernorm")

def test_layernorm_problem_for_an_image_binds_no_y():
    ln = layernorm_pattern("p0", 32)["layernorm"]
    x, weight, bias = torch.randn(4, 8, 32), torch.randn(32), torch.randn(32)
    tensors = {"x": x, "ln_weight": weight, "ln_bias": bias}
    p = op_kernels.layernorm_problem(ln, tensors, {}, y_as_image=True)
    assert (p.y, p.y_row_stride) == (None, 0)
    assert (p.rows, p.cols, p.x, p.x_row_stride, p.weight) == (32, 32, x.data_ptr(), 32, weight.data_ptr())
    with pytest.raises(kernel.BindingError, match="operand y was not provided"):
        op_kernels.layernorm_problem(ln, tensors, {})
    with pytest.raises(kernel.BindingError, match="float64"):
        op_kernels.layernorm_problem(ln, dict(tensors, x=x.double()), {}, y_as_image=True)


def test_layernorm_writes_the_consumers_image_and_matches_the_unfused_pair(fakes):
    made, _ = fakes
    torch.manual_seed(0)
    module = NormProj()
    apart = NormProj()
    apart.load_state_dict(module.state_dict())
    x = torch.randn(4, 8, 32)
    expected = module(x)
    runtime.install(module, ln_manifest(), strict=True)
    assert runtime.installed_patterns(module) == ["p0", "p1"]
    assert runtime.installed_handoffs(module) == ["p0->p1"]
    targets = call_targets(module)
    assert targets.count(runtime.fact_gemm) == 1 and len(targets) == 1, targets  # no fact_pattern, no getitem
    with torch.no_grad():
        got = module(x)
    ln, proj = made["libln.so"], made["libproj.so"]
    assert (ln.image_writes, ln.runs, proj.image_reads, proj.runs) == (1, 1, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    runtime.install(apart, ln_manifest(), strict=True, handoffs=False)
    with torch.no_grad():
        assert torch.equal(got, apart(x))


def test_shape_readers_of_the_layernorm_output_read_its_input_instead(fakes):
    """minGPT's attention reads b, t, c = ln_1(x).size(): the hand-off still fuses, the
    size() reads x (same shape), and a value reader still keeps the pair apart."""
    made, _ = fakes

    class SizedNormProj(NormProj):
        def forward(self, x):
            y = self.ln(x)
            b, t, c = y.size()
            return self.proj(y).view(b * t, -1) * c

    torch.manual_seed(0)
    module = SizedNormProj()
    x = torch.randn(4, 8, 32)
    expected = module(x)
    runtime.install(module, ln_manifest(), strict=True)
    assert runtime.installed_handoffs(module) == ["p0->p1"]
    sizes = [n for n in module._fact_graph_module.graph.nodes if n.op == "call_method" and n.target == "size"]
    assert [n.args[0].name for n in sizes] == ["x"], sizes
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert made["libln.so"].image_writes == 1

    class SizeAndValue(NormProj):
        def forward(self, x):
            y = self.ln(x)
            return self.proj(y) * y.size(-1) + y.mean()

    module = SizeAndValue()
    with pytest.warns(RuntimeWarning, match=r"read by more than the consumer's A"):
        runtime.install(module, ln_manifest())
    assert runtime.installed_handoffs(module) == []


def test_an_attention_program_reading_the_layernorm_outputs_size_still_lets_it_hand_off(fakes, tmp_path):
    """minGPT's pre-LN attention: `b, t, c = x.size()` on ln_1's output becomes an operand
    of the installed attention pattern (its program recomputes b, t, c from it). The
    LayerNorm -> c_attn hand-off still fuses: the attention reads x (same shape) instead."""
    from fact import capture
    from fact_testutil import discover
    from test_fact_op_patterns import FakeAttention, load_fixture_module, pattern_of

    attention = load_fixture_module("attn_mingpt")

    class PreLnAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(attention.C)
            self.attn = attention.Model()

        def forward(self, x):
            return self.attn(self.ln(x))

    torch.manual_seed(0)
    model = PreLnAttention()
    (x,) = attention.get_inputs()
    expected = model(x)
    plan, _ = discover(capture.capture_module(model, [x]), tmp_path)
    ln = pattern_of(plan, "layernorm")
    y = ln["layernorm"]["y"]["tensor"]
    c_attn = [p for p in plan["patterns"] if p["rule"] == "gemm" and p["gemm"]["a"]["tensor"] == y]
    assert len(c_attn) == 1, plan["patterns"]
    names = {ln["id"]: "libln.so", c_attn[0]["id"]: "libc_attn.so", pattern_of(plan, "attention")["id"]: "libatt.so"}
    manifest = {"fact_manifest": 1,
                "patterns": [dict(p, library=names[p["id"]], variant="fake", math="f32")
                             for p in plan["patterns"] if p["id"] in names],
                "handoffs": [{"producer": ln["id"], "consumer": c_attn[0]["id"], "tensor": y, "format": FORMAT,
                              "producer_rule": "layernorm"}]}
    made, _ = fakes
    fake_attention = FakeAttention()
    previous = runtime.set_kernel_loader(lambda path: fake_attention if path.endswith("libatt.so")
                                         else made.setdefault(path.rsplit("/", 1)[-1], ImageLayerNorm()
                                                              if path.endswith("libln.so")
                                                              else FakeGemm(epilogue="bias", image_format=FORMAT)))
    try:
        runtime.install(model, manifest, strict=True)
    finally:
        runtime.set_kernel_loader(previous)
    assert runtime.installed_handoffs(model) == [f"{ln['id']}->{c_attn[0]['id']}"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert made["libln.so"].image_writes == 1 and fake_attention.runs == 1


def test_layernorm_pair_gradients_come_from_the_original_programs(fakes):
    made, _ = fakes
    torch.manual_seed(0)
    module, reference = NormProj(), NormProj()
    reference.load_state_dict(module.state_dict())
    x = torch.randn(32, 32, requires_grad=True)
    x_reference = x.detach().clone().requires_grad_()
    expected = reference(x_reference)
    expected.sum().backward()
    runtime.install(module, ln_manifest(), strict=True)
    got = module(x)
    assert made["libln.so"].image_writes == 1  # the forward ran the fused pair
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    torch.testing.assert_close(x.grad, x_reference.grad, rtol=1e-4, atol=1e-4)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(module.get_parameter(name).grad, param.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layernorm, reason", [
    (lambda: ImageLayerNorm(extra_bytes=256), r"image sizes differ: p1 reads 4096 bytes, p0 writes 4352"),
    (lambda: ImageLayerNorm(reject="no images today"), r"p0's image_can_implement: no images today"),
    (lambda: ImageLayerNorm(fail="the launch broke"), r"launch failed: the launch broke"),
], ids=["image-size-mismatch", "image-can-implement-refuses", "launch-fails"])
def test_a_layernorm_pair_that_cannot_run_fused_runs_unfused(fakes, layernorm, reason):
    made, settings = fakes
    settings["layernorm"] = layernorm
    module = NormProj()
    x = torch.randn(32, 32)
    expected = module(x)
    runtime.install(module, ln_manifest(), strict=True)
    assert runtime.installed_handoffs(module) == ["p0->p1"]
    with pytest.warns(RuntimeWarning, match=r"hand-off p0->p1 runs unfused: " + reason):
        with torch.no_grad():
            got = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    ln, proj = made["libln.so"], made["libproj.so"]
    assert (ln.image_writes, ln.runs, proj.image_reads, proj.runs) == (0, 1, 0, 1)


@pytest.mark.parametrize("layernorm, consumer_format", [
    (lambda: ImageLayerNorm(formats=["another-format"]), FORMAT),
    (ImageLayerNorm, "another-format"),
    (FakeLayerNorm, FORMAT),  # a library from before ABI 4: no image entry points at all
], ids=["format-not-written", "consumer-reads-another", "older-layernorm-library"])
def test_libraries_without_the_format_keep_the_layernorm_pair_apart(fakes, layernorm, consumer_format):
    made, settings = fakes
    settings["layernorm"] = layernorm
    settings["formats"]["libproj.so"] = consumer_format
    module = NormProj()
    x = torch.randn(32, 32)
    expected = module(x)
    with pytest.warns(RuntimeWarning, match=r"hand-off p0->p1 not used: the LayerNorm library writes image formats"):
        runtime.install(module, ln_manifest())
    assert runtime.installed_patterns(module) == ["p0", "p1"] and runtime.installed_handoffs(module) == []
    assert runtime.fact_gemm in call_targets(module) and len(call_targets(module)) == 3  # + fact_pattern, getitem
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert made["libln.so"].runs == 1 and made["libproj.so"].image_reads == 0
    with pytest.raises(RuntimeError, match="hand-off p0->p1"):
        runtime.install(NormProj(), ln_manifest(), strict=True)


# ---------------------------------------------------------------------------
# Chains: pairs that share a pattern run as one call

class DeepMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 48)
        self.mid = nn.Linear(48, 24)
        self.proj = nn.Linear(24, 16)

    def forward(self, x):
        return self.proj(self.mid(self.fc(x)))


def deep_manifest(rows=32):
    return {"fact_manifest": 1,
            "patterns": [pattern("p0", "fc", "x", rows, 48, 32), pattern("p1", "mid", "fc", rows, 24, 48),
                         pattern("p2", "proj", "mid", rows, 16, 24)],
            "handoffs": [{"producer": "p0", "consumer": "p1", "tensor": "fc", "format": FORMAT},
                         {"producer": "p1", "consumer": "p2", "tensor": "mid", "format": FORMAT}]}


class NormMlp(NormProj):
    """A pre-LN block's ln_2 -> c_fc -> c_proj."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 48)
        self.proj = nn.Linear(48, 16)

    def forward(self, x):
        return self.proj(self.fc(self.ln(x)))


def norm_mlp_manifest(rows=32):
    return {"fact_manifest": 1,
            "patterns": [layernorm_pattern("p0", rows), pattern("p1", "fc", "ln", rows, 48, 32),
                         pattern("p2", "proj", "fc", rows, 16, 48)],
            "handoffs": [{"producer": "p0", "consumer": "p1", "tensor": "ln", "format": FORMAT,
                          "producer_rule": "layernorm"},
                         {"producer": "p1", "consumer": "p2", "tensor": "fc", "format": FORMAT,
                          "producer_rule": "gemm"}]}


CHAINS = {  # head rule -> (module class, manifest, libraries of the head, the middle GEMM, the last GEMM)
    "gemm": (DeepMlp, deep_manifest, ("libfc.so", "libmid.so", "libproj.so")),
    "layernorm": (NormMlp, norm_mlp_manifest, ("libln.so", "libfc.so", "libproj.so")),
}


def image_counts(made, libraries):
    """(images written, images read, launches) of each library, in chain order."""
    return [(getattr(made[name], "image_writes", 0), getattr(made[name], "image_reads", 0), made[name].runs)
            for name in libraries]


@pytest.mark.parametrize("rule", CHAINS)
def test_a_chain_runs_as_one_call_through_every_image(fakes, rule):
    made, _ = fakes
    module_class, make_manifest, libraries = CHAINS[rule]
    torch.manual_seed(0)
    module, apart, reference = module_class(), module_class(), module_class()
    apart.load_state_dict(module.state_dict())
    reference.load_state_dict(module.state_dict())
    x = torch.randn(4, 8, 32)
    expected = module(x)
    runtime.install(module, make_manifest(), strict=True)
    assert runtime.installed_patterns(module) == ["p0", "p1", "p2"]
    assert runtime.installed_handoffs(module) == ["p0->p1", "p1->p2"]
    assert call_targets(module) == [runtime.fact_gemm]  # one call; no fact_pattern, no getitem
    with torch.no_grad():
        got = module(x)
    # The middle GEMM's one launch read image 0 and wrote image 1.
    assert image_counts(made, libraries) == [(1, 0, 1), (1, 1, 1), (0, 1, 1)]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    runtime.install(apart, make_manifest(), strict=True, handoffs=False)
    assert runtime.installed_handoffs(apart) == []
    with torch.no_grad():
        assert torch.equal(got, apart(x))
    assert image_counts(made, libraries) == [(0, 0, 1), (0, 0, 1), (0, 0, 1)]  # apart's own libraries
    # Training: the forward runs the fused chain, the gradients are the original programs'.
    x_grad, x_reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    made_before = {name: made[name] for name in libraries}
    runtime.install(module, make_manifest(), strict=True)
    trained = module(x_grad)
    assert image_counts(made, libraries) == [(1, 0, 1), (1, 1, 1), (0, 1, 1)]
    assert all(made[name] is not made_before[name] for name in libraries)
    torch.testing.assert_close(trained, expected, rtol=1e-5, atol=1e-5)
    trained.sum().backward()
    module_class.forward(reference, x_reference).sum().backward()
    torch.testing.assert_close(x_grad.grad, x_reference.grad, rtol=1e-4, atol=1e-4)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(module.get_parameter(name).grad, param.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rule, configure, refused, fused, counts", [
    # proj's library reads another format: p0 -> p1 fuses, mid writes fp32 for proj.
    ("gemm", lambda settings: settings["formats"].update({"libproj.so": "another-format"}),
     r"hand-off p1->p2 not used: the libraries' image formats", ["p0->p1"], [(1, 0, 1), (0, 1, 1), (0, 0, 1)]),
    # a LayerNorm library from before ABI 4 writes no image: ln writes fp32, fc -> proj fuses.
    ("layernorm", lambda settings: settings.update({"layernorm": FakeLayerNorm}),
     r"hand-off p0->p1 not used: the LayerNorm library writes image formats", ["p1->p2"],
     [(0, 0, 1), (1, 0, 1), (0, 1, 1)]),
], ids=["second-link-formats-differ", "older-layernorm-library"])
def test_a_chain_splits_at_the_pair_the_libraries_cannot_pass(fakes, rule, configure, refused, fused, counts):
    made, settings = fakes
    module_class, make_manifest, libraries = CHAINS[rule]
    configure(settings)
    torch.manual_seed(0)
    module = module_class()
    x = torch.randn(32, 32)
    expected = module(x)
    with pytest.warns(RuntimeWarning, match=refused):
        runtime.install(module, make_manifest())
    assert runtime.installed_patterns(module) == ["p0", "p1", "p2"]
    assert runtime.installed_handoffs(module) == fused
    assert len([t for t in call_targets(module) if t in (runtime.fact_gemm, runtime_ops.fact_pattern)]) == 2
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert image_counts(made, libraries) == counts
    with pytest.raises(RuntimeError, match=refused.split(" not used")[0]):
        runtime.install(module_class(), make_manifest(), strict=True)


class ImageReaderThatFails(FakeGemm):
    """FakeGemm whose launches reading an image fail."""

    def run(self, p, *args):
        if p.a_image:
            raise kernel.KernelError("the launch broke")
        super().run(p, *args)


def test_a_failed_launch_runs_the_whole_chain_unfused_with_one_warning(fakes):
    made, settings = fakes
    settings["gemm"]["libproj.so"] = ImageReaderThatFails
    module_class, make_manifest, libraries = CHAINS["gemm"]
    torch.manual_seed(0)
    module = module_class()
    x = torch.randn(32, 32)
    expected = module(x)
    runtime.install(module, make_manifest(), strict=True)
    assert runtime.installed_handoffs(module) == ["p0->p1", "p1->p2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            got = [module(x) for _ in range(2)]
    assert [str(w.message) for w in caught] == [
        "fact: hand-off p0->p1->p2 runs unfused: launch failed: the launch broke"]
    for value in got:
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    # Per call: the fused launches up to the failing one, then every stage on its own.
    assert image_counts(made, libraries) == [(2, 0, 4), (2, 2, 4), (0, 0, 2)]
