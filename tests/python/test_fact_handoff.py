"""CPU tests of the runtime's operand hand-offs (fact.runtime._HandoffEntry,
docs/CONTRACTS.md §7.1) with fake kernels whose "image" is the dense fp32
matrix: the pair becomes one call, the producer writes the image and the
consumer reads it, results and gradients equal eager, and every way the pair
cannot run (switched off, an ablation, another format, a refusal) keeps the two
patterns correct on their own."""
import warnings

import pytest

from fact_testutil import FakeGemm, bias_epilogue, gemm_binding

torch = pytest.importorskip("torch")
nn = torch.nn

from fact import runtime  # noqa: E402

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


@pytest.fixture
def fakes():
    made, settings = {}, {"formats": {}, "reject": None}

    def loader(path):
        name = path.rsplit("/", 1)[-1]
        made[name] = FakeGemm(epilogue="bias", reject=settings["reject"],
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


def test_switched_off_or_ablated_pairs_run_apart_without_a_warning(fakes, monkeypatch):
    made, _ = fakes
    x = torch.randn(32, 32)
    for kwargs, env, handoffs in (({"handoffs": False}, None, []), ({}, "0", []),
                                  ({"patterns": "p1"}, None, [])):
        module = Mlp()
        expected = module(x)
        if env is None:
            monkeypatch.delenv(runtime.HANDOFFS_ENV, raising=False)
        else:
            monkeypatch.setenv(runtime.HANDOFFS_ENV, env)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runtime.install(module, manifest(), **kwargs)
        assert runtime.installed_handoffs(module) == handoffs
        with torch.no_grad():
            torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
        assert made["libproj.so"].image_reads == 0


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


def test_a_second_reader_of_the_intermediate_keeps_the_pair_apart(fakes):
    class TwoReaders(Mlp):
        def forward(self, x):
            h = self.fc(x)
            return self.proj(h), h.sum()

    module = TwoReaders()
    x = torch.randn(32, 32)
    expected = module(x)
    with pytest.warns(RuntimeWarning, match=r"read by more than the consumer's A"):
        runtime.install(module, manifest())
    assert runtime.installed_handoffs(module) == []
    with torch.no_grad():
        for got, want in zip(module(x), expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
