"""CPU tests of a GEMM pattern whose epilogue chain runs inside the kernel
(fused_epilogue, docs/CONTRACTS.md §6): the ABI 2 leaves of the binding, the
worker verifying a fused candidate against the PyTorch evaluation of every
node of the pattern (a kernel computing only the GEMM core, or dropping a
leaf, is `wrong`), and the runtime replacing the whole chain with leaves read
live from the module.

The stand-in kernel evaluates the chain's SSA values with numpy from the
problem's pointers, so a wrong leaf pointer / ld / order gives a wrong answer;
the reference is the IR's torch nodes (fact.reference), never these values."""
import copy
import ctypes

import pytest

from fact_testutil import FakeGemm, gemm_binding, run_worker

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from fact import capture, kernel, reference, runtime, worker  # noqa: E402


class ChainModel(torch.nn.Module):
    """x @ w.T, then + b (row vector), * scale (column vector), clamp(max=1.5), + r (full matrix)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(48, 64) * 0.2)
        self.b = torch.nn.Parameter(torch.randn(48))
        self.scale = torch.nn.Parameter(torch.randn(32, 1))

    def forward(self, x, r):
        h = x @ self.w.t()
        return torch.clamp((h + self.b) * self.scale, max=1.5) + r


# As `fact discover` writes it for ChainModel (tests/python regenerate nothing: the
# C++ side pins the chain payload in tests/unit/front/test_epilogue_chain.cpp).
CHAIN = {"accumulator": "matmul", "element": "float32", "key": "3f0f3bafdc3e6003",
         "leaves": {"l0": {"shape": [48], "strides": [0, 1], "tensor": "b"},
                    "l1": {"shape": [32, 1], "strides": [1, 0], "tensor": "scale"},
                    "l2": {"shape": [32, 48], "strides": [48, 1], "tensor": "r"}},
         "nodes": ["add", "mul", "clamp", "add_1"], "output": "add_1", "result": "v3", "shape": [32, 48],
         "values": [{"args": [{"ref": "acc"}, {"leaf": "l0"}], "id": "v0", "node": "add", "op": "add"},
                    {"args": [{"ref": "v0"}, {"leaf": "l1"}], "id": "v1", "node": "mul", "op": "mul"},
                    {"args": [{"ref": "v1"}, {"const": None}, {"const": 1.5}], "id": "v2", "node": "clamp",
                     "op": "clamp"},
                    {"args": [{"ref": "v2"}, {"leaf": "l2"}], "id": "v3", "node": "add_1", "op": "add"}]}
# What realize adds (src/realize/epilogue_emit.cpp, fused_epilogue_json).
FUSED = {"key": "3f0f3bafdc3e6003", "output": "add_1",
         "inputs": [{"name": "l0", "tensor": "b", "kind": "row", "ld": 0, "batch_stride": 0, "abi_leaf": 0},
                    {"name": "l1", "tensor": "scale", "kind": "col", "ld": 0, "batch_stride": 0, "abi_leaf": 1},
                    {"name": "l2", "tensor": "r", "kind": "matrix", "ld": 48, "batch_stride": 0, "abi_leaf": 2}]}
PATTERN = {"id": "p0", "rule": "gemm", "root": "matmul", "nodes": ["t", "matmul", "add", "mul", "clamp", "add_1"],
           "inputs": ["x", "w", "b", "scale", "r"], "outputs": ["add_1"], "dtype": "float32",
           "gemm": gemm_binding(32, 48, 64),
           "epilogue_chain": CHAIN, "fused_epilogue": FUSED}


class FakeChainGemm(FakeGemm):
    """D = chain(alpha * A.B, leaves) on the CPU, leaves read from problem.leaves[i]
    by their kind. `drop` names a leaf the kernel 'forgets' (reads as 0)."""

    def __init__(self, fused=FUSED, chain=CHAIN, drop=None, **kw):
        super().__init__(**kw)
        self.fused, self.chain, self.drop = fused, chain, drop

    def run(self, p, *args):
        m, n = p.m, p.n
        assert p.num_leaves == len(self.fused["inputs"])
        a = self._view(p.a, [(m, p.ld_a), (p.k, 1)]).astype(np.float64)
        b = self._view(p.b, [(p.k, 1), (n, p.ld_b)]).astype(np.float64)
        env = {"acc": p.alpha * (a @ b)}
        for spec in self.fused["inputs"]:
            leaf = p.leaves[spec["abi_leaf"]]
            dims = {"row": [(m, 0), (n, 1)], "col": [(m, 1), (n, 0)], "scalar": [(m, 0), (n, 0)],
                    "matrix": [(m, leaf.ld), (n, 1)]}[spec["kind"]]
            value = self._view(leaf.ptr, dims).astype(np.float64)
            env[spec["name"]] = np.zeros_like(value) if spec["name"] == self.drop else value
        for v in self.chain["values"]:
            args = [env[a["ref"]] if "ref" in a else env[a["leaf"]] if "leaf" in a else a["const"]
                    for a in v["args"]]
            if v["op"] == "add":
                env[v["id"]] = args[0] + args[1]
            elif v["op"] == "mul":
                env[v["id"]] = args[0] * args[1]
            elif v["op"] == "clamp":
                x = args[0] if args[1] is None else np.maximum(args[0], args[1])
                env[v["id"]] = x if args[2] is None else np.minimum(x, args[2])
            else:
                raise AssertionError(f"stand-in has no op {v['op']}")
        self._view(p.d, [(m, p.ld_d), (n, 1)])[...] = env[self.chain["result"]].astype(np.float32)
        self.runs += 1


def test_binding_passes_leaves_in_abi_order_with_their_strides():
    x, w = torch.randn(32, 64), torch.randn(48, 64)
    b, scale, r, out = torch.randn(48), torch.randn(32, 1), torch.randn(32, 48), torch.empty(32, 48)
    tensors = {"x": x, "w": w, "b": b, "scale": scale, "r": r}
    p = kernel.problem_from_binding(PATTERN["gemm"], tensors, out, fused=FUSED)
    assert p.num_leaves == 3
    assert [p.leaves[i].ptr for i in range(3)] == [b.data_ptr(), scale.data_ptr(), r.data_ptr()]
    assert (p.leaves[2].ld, p.leaves[0].ld) == (48, 0)
    assert all(p.leaves[i].ptr is None for i in range(3, kernel.MAX_LEAVES))
    assert p.d == out.data_ptr()
    # a plain GEMM binding zeroes the leaves (variants without a chain ignore them)
    assert kernel.problem_from_binding(PATTERN["gemm"], tensors, out).num_leaves == 0
    with pytest.raises(kernel.BindingError, match="operand l2"):
        kernel.problem_from_binding(PATTERN["gemm"], dict(tensors, r=torch.randn(48, 32).t()), out, fused=FUSED)
    with pytest.raises(kernel.BindingError, match="operand l1"):
        kernel.problem_from_binding(PATTERN["gemm"], dict(tensors, scale=torch.randn(48)), out, fused=FUSED)
    placeholder = kernel.placeholder_problem(PATTERN["gemm"], FUSED)
    assert placeholder.num_leaves == 3 and all(placeholder.leaves[i].ptr for i in range(3))
    assert ctypes.sizeof(kernel.FactGemmProblem) > ctypes.sizeof(kernel.FactEpilogueLeaf) * kernel.MAX_LEAVES


def test_kernel_binding_is_the_whole_chain_only_when_fused():
    nodes, outputs, fused = kernel.kernel_binding(PATTERN)
    assert nodes == PATTERN["nodes"] and outputs == ["add_1"] and fused is FUSED
    core = {k: v for k, v in PATTERN.items() if k != "fused_epilogue"}
    assert kernel.kernel_binding(core) == (["t", "matmul"], ["matmul"], None)
    with pytest.raises(ValueError, match="fused epilogue output"):
        kernel.kernel_binding(dict(PATTERN, fused_epilogue=dict(FUSED, output="mul")))


def _ir(tmp_path):
    ir = capture.capture_module(ChainModel(), [torch.randn(32, 64), torch.randn(32, 48)])
    path = tmp_path / "graph.json"
    capture.write_ir(ir, str(path))
    return ir, path


def test_reference_runs_the_full_node_list_including_clamp(tmp_path):
    ir, _ = _ir(tmp_path)
    torch.manual_seed(0)
    model = ChainModel()
    x, r = torch.randn(32, 64), torch.randn(32, 48)
    inputs = {"x": x, "r": r, "w": model.w.detach(), "b": model.b.detach(), "scale": model.scale.detach()}
    (out,) = reference.run_pattern(ir, PATTERN, inputs)
    torch.testing.assert_close(out, model(x, r).detach())


def test_worker_verifies_the_fused_candidate_against_every_node(tmp_path):
    _, ir_path = _ir(tmp_path)

    def loader(path):
        name = path.rsplit("/", 1)[-1].split(".")[0]
        if name == "fused":
            return FakeChainGemm(name=path)
        if name == "dropped_leaf":
            return FakeChainGemm(name=path, drop="l2")
        return FakeGemm(name=path)  # the GEMM core only: not what the fused pattern computes

    results = run_worker(ir_path, PATTERN, loader, ["fused", "dropped_leaf", "core_only"],
                         timing={"warmup": 1, "reps": 2})
    assert results["fused"]["status"] == "ok", results["fused"]
    assert results["fused"]["trials"] == worker.MIN_TRIALS
    assert results["dropped_leaf"]["status"] == "wrong", results["dropped_leaf"]
    assert results["core_only"]["status"] == "wrong", results["core_only"]


def test_runtime_replaces_the_whole_chain_and_reads_leaves_live():
    made = []

    def loader(path):
        made.append(FakeChainGemm(name=path))
        return made[-1]

    previous = runtime.set_kernel_loader(loader)
    try:
        module = ChainModel()
        x, r = torch.randn(32, 64), torch.randn(32, 48)
        expected = module(x, r).detach()
        runtime.install(module, {"fact_manifest": 1, "patterns": [dict(copy.deepcopy(PATTERN), library="libchain.so",
                                                                        variant="fake_evt", math="f32")]},
                        strict=True)
        assert runtime.installed_patterns(module) == ["p0"]
        kinds = [n.target for n in module._fact_graph_module.graph.nodes if n.op == "call_function"]
        assert runtime.fact_gemm in kinds and torch.clamp not in kinds  # the chain is gone from the graph
        with torch.no_grad():
            torch.testing.assert_close(module(x, r), expected, rtol=1e-5, atol=1e-5)
            module.b.add_(1.0)  # leaves are read from the live module at every call
            torch.testing.assert_close(module(x, r), ChainModel.forward(module, x, r), rtol=1e-5, atol=1e-5)
        assert made[0].runs == 2
    finally:
        runtime.set_kernel_loader(previous)
