"""Two-operand torch.einsum as a GEMM pattern, on the CPU: capture records it as
`other:torch.einsum` (list form flattened), the reference interpreter executes
it (the worker's eager and fp64 baselines), and end to end discover -> runtime
install with a CPU stand-in kernel driven only by the plan's gemm binding
reproduces eager for N-D operands, transposed layouts and swapped operands.
The end-to-end tests skip when the `fact` binary is not built ($FACT_BIN or
build/release/fact)."""
import pytest

from fact_testutil import discover_module, fact_binary, node_by_id, run_with_fake_gemms, verify_with_fake_gemm

torch = pytest.importorskip("torch")
nn = torch.nn

from fact import capture, reference, runtime  # noqa: E402


class Einsums(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(32, 24) / 8)

    def forward(self, x, q, k, a, b, c, d):
        y = torch.einsum("bijl,lk->bijk", x, self.w)         # m = (b, i, j): one GEMM, M = 24
        s = torch.einsum("bhqd,bhkd->bhqk", q, k)             # batched, B column-major
        t = torch.einsum("bij,bkj->bki", [a, b])              # list form; n before m: operands swap
        u = torch.relu(torch.einsum("k i, k j -> i j", c, d))  # A column-major, relu left to the chain
        v = torch.einsum("ik,jk->ij", c, c)                   # one tensor as both operands: c @ c^T
        return y, s, t, u, v


def inputs():
    return [torch.randn(2, 3, 4, 32), torch.randn(2, 2, 8, 16), torch.randn(2, 2, 12, 16),
            torch.randn(2, 8, 16), torch.randn(2, 12, 16), torch.randn(16, 8), torch.randn(16, 12)]


def test_capture_records_einsum_with_flattened_operands():
    ir = capture.capture_module(Einsums(), inputs())
    nodes = [n for n in ir["nodes"] if n["op"] == "other:torch.einsum"]
    assert len(nodes) == 5
    listed = nodes[2]
    assert listed["attrs"]["args"] == ["bij,bkj->bki", {"tensor": "a"}, {"tensor": "b"}]
    assert listed["inputs"] == ["a", "b"]


def test_reference_runs_einsum_in_the_input_dtype_and_in_float64():
    ir = capture.capture_module(Einsums(), inputs())
    node = next(n for n in ir["nodes"] if n["op"] == "other:torch.einsum" and n["inputs"] == ["q", "k"])
    q, k = torch.randn(2, 2, 8, 16), torch.randn(2, 2, 12, 16)
    for promote64 in (False, True):
        env = reference.run_nodes([node], {"q": q, "k": k}, ir["tensors"], promote64=promote64)
        out = env[node["outputs"][0]]
        assert out.dtype == (torch.float64 if promote64 else torch.float32)
        torch.testing.assert_close(out.float(), q @ k.transpose(-1, -2), rtol=1e-5, atol=1e-5)


def test_discovered_einsum_patterns_install_and_match_eager(tmp_path):
    torch.manual_seed(0)
    module = Einsums()
    example = inputs()
    ir, _graph, plan = discover_module(fact_binary(), tmp_path, module, example)
    einsums = {n["id"] for n in ir["nodes"] if n["op"] == "other:torch.einsum"}
    assert {p["root"] for p in plan["patterns"]} == einsums, (plan.get("rejections"), plan.get("unmatched"))
    assert all(p["rule"] == "gemm" for p in plan["patterns"])
    by_inputs = {tuple(node_by_id(ir, p["root"])["inputs"]): p for p in plan["patterns"]}
    assert by_inputs[("x", "w")]["gemm"]["m"] == 24 and by_inputs[("x", "w")]["gemm"]["batch"] == 1
    assert by_inputs[("q", "k")]["gemm"]["b"]["layout"] == "col"
    assert by_inputs[("a", "b")]["gemm"]["a"]["tensor"] == "b"  # swapped
    assert by_inputs[("c", "d")]["gemm"]["a"]["layout"] == "col"
    assert len(by_inputs[("c", "d")]["nodes"]) == 2  # the relu joined as its epilogue chain
    assert by_inputs[("c", "c")]["inputs"] == ["c"]

    expected = module(*example)
    got, kernels = run_with_fake_gemms(module, plan["patterns"], example)
    assert sorted(runtime.installed_patterns(module)) == sorted(p["id"] for p in plan["patterns"])
    assert len(kernels) == 5 and all(k.runs == 1 for k in kernels.values())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_worker_verifies_einsum_patterns_with_a_correct_kernel(tmp_path):
    _ir, graph, plan = discover_module(fact_binary(), tmp_path, Einsums(), inputs())
    assert len(plan["patterns"]) == 5
    for pattern in plan["patterns"]:
        result = verify_with_fake_gemm(graph, pattern)
        assert result["status"] == "ok", (pattern["root"], result)
