"""CPU tests of the reference interpreter (fact.reference) and the accuracy
criteria (fact.measure) that decide whether a kernel passes."""
import pytest

import fact_testutil  # noqa: F401  (puts python/ on sys.path)

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from fact import capture, measure, reference  # noqa: E402


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 32)
        self.ln = nn.LayerNorm(32)
        self.w = nn.Parameter(torch.randn(32, 8) / 4)

    def forward(self, x, y):
        h = F.gelu(self.fc(x), approximate="tanh") * 0.5 + 1
        h = self.ln(h).view(x.size(0), 4, 8).permute(0, 2, 1).reshape(-1, 4)
        q, k = torch.chunk(h, 2, dim=1)
        s = torch.softmax(q @ k.t() / 2.0, dim=-1).masked_fill(y > 0.5, 0.0)
        z = torch.addmm(s[:, :1], s, torch.bmm(y.unsqueeze(0), y.unsqueeze(0)).squeeze(0), beta=0.5)
        return torch.baddbmm(z[:, :8].unsqueeze(0), s.unsqueeze(0), y[:, :8].unsqueeze(0), alpha=2.0), \
            torch.sigmoid(z) - torch.tanh(z) + F.silu(z).relu().exp() ** 2 / -z.neg()


def test_reference_matches_torch_on_a_captured_graph():
    torch.manual_seed(0)
    module = Block().eval()
    x, y = torch.randn(6, 16), torch.rand(48, 48)
    ir = capture.capture_module(module, [x, y])
    others = [n["op"] for n in ir["nodes"] if n["op"].startswith("other:")]
    assert sorted(set(others)) == ["other:Tensor.squeeze", "other:Tensor.unsqueeze", "other:operator.gt"]
    # Execute only the canonical part: feed the values of the `other:` nodes from eager.
    gm = capture.trace(module)
    interp_env = {}

    class Keep(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            interp_env[n.name] = result
            return result

    expected = Keep(gm).run(x, y)
    inputs = {"x": x, "y": y}
    for ident, entry in ir["tensors"].items():
        if entry["kind"] == "param":
            inputs[ident] = module.get_parameter(entry["target"])
    canonical = []
    for node in ir["nodes"]:
        if node["op"].startswith("other:"):
            inputs[node["id"]] = interp_env[node["id"]]
        else:
            canonical.append(node)
    got = reference.run_nodes(canonical, inputs, ir["tensors"])
    for out, want in zip(ir["outputs"], expected):
        torch.testing.assert_close(got[out], want, rtol=1e-5, atol=1e-5)
    got64 = reference.run_nodes(canonical, inputs, ir["tensors"], promote64=True)
    assert got64[ir["outputs"][0]].dtype == torch.float64
    torch.testing.assert_close(got64[ir["outputs"][0]].float(), expected[0], rtol=1e-4, atol=1e-4)


def test_run_pattern_and_unsupported_ops():
    ir = {"tensors": {"x": {"kind": "input"}, "w": {"kind": "input"}},
          "nodes": [{"id": "t", "op": "t", "inputs": ["w"], "outputs": ["t"], "attrs": {}},
                    {"id": "mm", "op": "mm", "inputs": ["x", "t"], "outputs": ["mm"], "attrs": {}},
                    {"id": "cs", "op": "other:torch.cumsum", "inputs": ["mm"], "outputs": ["cs"], "attrs": {}}]}
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    (out,) = reference.run_pattern(ir, {"id": "p0", "nodes": ["t", "mm"], "outputs": ["mm"]}, {"x": x, "w": w})
    torch.testing.assert_close(out, x @ w.t())
    with pytest.raises(reference.UnsupportedOp):
        reference.run_pattern(ir, {"id": "p1", "nodes": ["t", "mm", "cs"], "outputs": ["cs"]}, {"x": x, "w": w})
    with pytest.raises(KeyError, match="not in the IR"):
        reference.run_pattern(ir, {"id": "p2", "nodes": ["nope"], "outputs": ["nope"]}, {})


def _gemm_case(seed=0, k=256):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(64, k, generator=g), torch.randn(k, 48, generator=g)
    return a @ b, a.double() @ b.double()


def test_accuracy_passes_eager_itself_and_fails_wrong_outputs():
    eager, ref64 = _gemm_case()
    ok = measure.accuracy_vs_fp64(eager.clone(), ref64, eager, 1e-4)
    assert ok["passed"] and ok["fail_frac"] == ok["eager_fail_frac"]
    wrong = eager.clone()
    wrong[3, 5] += 1e-2  # one element off: max error far above 2x eager's
    bad = measure.accuracy_vs_fp64(wrong, ref64, eager, 1e-4)
    assert not bad["passed"] and "max_abs_err" in bad["reason"]
    noisy = eager + 1e-3 * torch.randn_like(eager)  # every element off: fail_frac too
    bad = measure.accuracy_vs_fp64(noisy, ref64, eager, 1e-4)
    assert not bad["passed"] and "fail_frac" in bad["reason"]
    # bf16-rounded operands (what plain bf16 tensor cores compute) fail the fp32 tolerance
    a = torch.randn(64, 512, generator=torch.Generator().manual_seed(1))
    b = torch.randn(512, 64, generator=torch.Generator().manual_seed(2))
    bf16 = (a.bfloat16().float() @ b.bfloat16().float())
    assert not measure.accuracy_vs_fp64(bf16, a.double() @ b.double(), a @ b, 1e-4)["passed"]


def test_nan_never_passes():
    eager, ref64 = _gemm_case()
    poisoned = eager.clone()
    poisoned[0, 0] = float("nan")
    acc = measure.accuracy_vs_fp64(poisoned, ref64, eager, 1.0)
    assert not acc["passed"] and acc["nonfinite"] == 1 and acc["max_abs_err"] == float("inf")
    kb = measure.kernelbench_allclose(poisoned, eager, 1.0)
    assert not kb["passed"]
    unwritten = torch.full_like(eager, float("nan"))
    assert not measure.accuracy_vs_fp64(unwritten, ref64, eager, 1e9)["passed"]


def test_kernelbench_allclose_rule():
    eager, _ = _gemm_case()
    assert measure.kernelbench_allclose(eager + 5e-5, eager, 1e-4)["passed"]
    shifted = measure.kernelbench_allclose(eager + 1e-2 * (1 + eager.abs()), eager, 1e-4)
    assert not shifted["passed"] and shifted["max_abs_diff"] > 1e-2
    assert not measure.kernelbench_allclose(eager[:2], eager, 1e-4)["passed"]
    assert measure.default_tolerance(torch.float32) == 1e-4
    assert measure.default_tolerance(torch.bfloat16) == 1e-2


def test_speedup_flag():
    assert measure.speedup_flag(0.1, 2.0) == "speedup > 10x: check"
    assert measure.speedup_flag(1.0, 2.0) is None
