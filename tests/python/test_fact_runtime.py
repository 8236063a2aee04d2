"""CPU tests of fact.runtime.install with a fake kernel (the
set_kernel_loader seam): nodes replaced by fact_gemm (torch.ops.fact.gemm), results equal
to eager, state_dict untouched, every fallback warns and stays correct."""
import warnings

import pytest

from fact_testutil import FakeGemm, bias_epilogue, gemm_binding

torch = pytest.importorskip("torch")
nn = torch.nn

from fact import kernel, runtime  # noqa: E402



class LinearModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 16)
        self.w = nn.Parameter(torch.randn(24, 16))
        self.register_buffer("offset", torch.zeros(24))

    def forward(self, x):
        h = torch.relu(self.lin(x))
        return h @ self.w.t() + self.offset


def linear_pattern(library="libgemm_lin.so"):
    return {"id": "p0", "rule": "gemm", "root": "lin", "nodes": ["lin"], "inputs": ["x", "lin_weight", "lin_bias"],
            "outputs": ["lin"], "dtype": "float32", "library": library, "variant": "fake", "math": "f32",
            "gemm": gemm_binding(32, 16, 32, "x", "lin_weight", "lin", bias_epilogue("lin_bias"))}


def matmul_t_pattern(library="libgemm_mt.so"):
    return {"id": "p1", "rule": "gemm", "root": "matmul", "nodes": ["t", "matmul"], "inputs": ["relu", "w"],
            "outputs": ["matmul"], "dtype": "float32", "library": library, "variant": "fake", "math": "f32",
            "gemm": gemm_binding(32, 24, 16, a="relu")}


def manifest(*patterns):
    return {"fact_manifest": 1, "patterns": list(patterns)}


@pytest.fixture
def fakes():
    made = {}

    def loader(path):
        if "missing" in path:
            raise kernel.KernelError(f"cannot load {path}: no such file")
        made[path.rsplit("/", 1)[-1]] = fake = FakeGemm(epilogue="bias" if "lin" in path else "none",
                                                        reject=made.get("reject"))
        return fake

    previous = runtime.set_kernel_loader(loader)
    yield made
    runtime.set_kernel_loader(previous)


def targets(module):
    return [n.target for n in module._fact_graph_module.graph.nodes if n.op in ("call_function", "call_module",
                                                                                "call_method")]


def test_install_replaces_nodes_and_keeps_state_dict(fakes):
    torch.manual_seed(0)
    module = LinearModel()
    x = torch.randn(4, 8, 32)
    expected = module(x)
    keys = list(module.state_dict().keys())
    params = [id(p) for p in module.parameters()]
    runtime.install(module, manifest(linear_pattern(), matmul_t_pattern()))
    assert runtime.installed_patterns(module) == ["p0", "p1"]
    found = targets(module)
    assert found.count(runtime.fact_gemm) == 2
    assert "lin" not in found and "t" not in found and torch.matmul not in found
    assert list(module.state_dict().keys()) == keys
    assert [id(p) for p in module.parameters()] == params
    assert all(not name.startswith("_fact") for name, _ in module.named_modules())
    got = module(x)  # parameters require grad: through torch.ops.fact.gemm
    assert fakes["libgemm_lin.so"].runs == 1 and fakes["libgemm_mt.so"].runs == 1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()  # eager autograd through the installed patterns
    reference = LinearModel()
    reference.load_state_dict(module.state_dict())
    LinearModel.forward(reference, x).sum().backward()
    for name, param in reference.named_parameters():
        torch.testing.assert_close(module.get_parameter(name).grad, param.grad, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # inference: the kernel is called directly
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs == 2
    # a non-contiguous input with the same values: made contiguous, still on the kernel
    x_strided = x.transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(module(x_strided), expected, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs == 3
    # .to()/.cuda() replace buffer tensors: the installed forward must read them live
    module._apply(lambda t: t.clone())
    module.offset.fill_(3.0)
    torch.testing.assert_close(module(x), expected + 3.0, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs == 4
    runtime.uninstall(module)
    torch.testing.assert_close(module(x), expected + 3.0, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs == 4


def test_load_failure_falls_back_with_a_warning(fakes):
    module = LinearModel()
    x = torch.randn(4, 8, 32)
    expected = module(x)
    with pytest.warns(RuntimeWarning, match=r"pattern p0 falls back to PyTorch: library failed to load"):
        runtime.install(module, manifest(linear_pattern("libmissing.so"), matmul_t_pattern()))
    assert runtime.installed_patterns(module) == ["p1"]
    assert "lin" in targets(module)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)


def test_pattern_with_an_epilogue_chain_binds_its_gemm_core(fakes):
    # The `+ offset` absorbed into the pattern as an epilogue chain: the kernel
    # computes D only, so only the GEMM core is replaced and the add keeps running.
    module = LinearModel()
    x = torch.randn(4, 8, 32)
    expected = module(x)
    chained = matmul_t_pattern()
    chained["nodes"] = ["t", "matmul", "add"]
    chained["inputs"] = ["relu", "w", "offset"]
    chained["outputs"] = ["add"]
    runtime.install(module, manifest(chained))
    assert runtime.installed_patterns(module) == ["p1"]
    found = targets(module)
    assert "t" not in found and torch.matmul not in found and found.count(runtime.fact_gemm) == 1
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_mt.so"].runs == 1


def test_stale_manifest_and_runtime_rejections_fall_back(fakes):
    module = LinearModel()
    x = torch.randn(4, 8, 32)
    expected = module(x)
    stale = matmul_t_pattern()
    stale["nodes"] = ["t_7", "matmul"]
    with pytest.warns(RuntimeWarning, match=r"pattern p1 falls back.*t_7"):
        runtime.install(module, manifest(linear_pattern(), stale))
    # a different batch at run time no longer fits the binding (m = 32 was captured)
    small = torch.randn(2, 8, 32)
    with pytest.warns(RuntimeWarning, match=r"pattern p0 falls back to PyTorch: .*operand a"):
        out = module(small)
    torch.testing.assert_close(out, LinearModel.forward(module, small), rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs == 0
    # can_implement rejecting the real pointers at run time: an input view at
    # an odd element offset is not 16-byte aligned (install passed: real
    # variants reject null pointers, so install checks placeholder addresses)
    fakes["reject"] = lambda p: (None if p.a and p.a % 16 == 0 and p.d % 16 == 0
                                 else "null or misaligned pointer")
    module2 = LinearModel()
    module2.load_state_dict(module.state_dict())
    runtime.install(module2, manifest(linear_pattern()))
    assert runtime.installed_patterns(module2) == ["p0"]
    torch.testing.assert_close(module2(x), expected, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs == 1
    shifted = torch.empty(x.numel() + 1)[1:].view_as(x).copy_(x)
    with pytest.warns(RuntimeWarning, match=r"can_implement: null or misaligned pointer"):
        torch.testing.assert_close(module2(shifted), expected, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs == 1
    # rejecting the binding itself at install time
    fakes["reject"] = lambda p: "k must be a multiple of 64"
    module3 = LinearModel()
    with pytest.warns(RuntimeWarning, match=r"can_implement rejects the binding: k must be"):
        runtime.install(module3, manifest(linear_pattern()))
    assert runtime.installed_patterns(module3) == []
    broken = linear_pattern()
    del broken["gemm"]["a"]
    with pytest.warns(RuntimeWarning, match=r"malformed manifest entry \(KeyError"):
        runtime.install(LinearModel(), manifest(broken))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module3(x)


def test_torch_compile_traces_the_custom_op_without_graph_breaks(fakes):
    module = LinearModel()
    x = torch.randn(4, 8, 32)
    expected = module(x)
    runtime.install(module, manifest(linear_pattern(), matmul_t_pattern()))
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    got = compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert fakes["libgemm_lin.so"].runs >= 1
    # gradients flow through the op (computed from the original nodes)
    got.sum().backward()
    reference = LinearModel()
    reference.load_state_dict(module.state_dict())
    LinearModel.forward(reference, x).sum().backward()
    torch.testing.assert_close(module.lin.weight.grad, reference.lin.weight.grad, rtol=1e-4, atol=1e-4)
