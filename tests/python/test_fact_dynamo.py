"""fact.dynamo: FACT as a torch.compile backend (CPU: registration, refusal with a
warning and eager results, the wiring to fact.optimize, and the rules on the FX
graphs Dynamo produces)."""
import warnings

import pytest

from fact_testutil import discover

torch = pytest.importorskip("torch")

import fact  # noqa: E402
from fact import capture, dynamo  # noqa: E402


class LinearGeluResidual(torch.nn.Module):
    """Linear -> tanh-GELU written out -> Linear -> residual: what a user hands torch.compile."""

    def __init__(self, width=64, hidden=128):
        super().__init__()
        self.fc = torch.nn.Linear(width, hidden)
        self.proj = torch.nn.Linear(hidden, width)

    def forward(self, x):
        h = self.fc(x)
        h = 0.5 * h * (1.0 + torch.tanh(0.7978845608028654 * (h + 0.044715 * torch.pow(h, 3.0))))
        return x + self.proj(h)


def dynamo_graphs(model, *inputs):
    """The (GraphModule, example inputs) pairs Dynamo hands a backend."""
    seen = []

    def recorder(gm, example_inputs):
        seen.append((gm, list(example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=recorder)(*inputs)
    return seen


def test_backend_is_registered_under_its_name():
    assert "fact" in torch._dynamo.list_backends(exclude_tags=())


def test_a_graph_fact_cannot_take_runs_as_captured_with_one_warning():
    model, x = LinearGeluResidual(), torch.rand(2, 8, 64)
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(model, backend="fact")(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    messages = [str(w.message) for w in caught if "fact backend" in str(w.message)]
    assert len(messages) == 1, messages
    assert "runs as captured" in messages[0]
    assert "CUDA" in messages[0]


def test_strict_backend_raises_instead_of_falling_back():
    torch._dynamo.reset()
    with pytest.raises(Exception, match="fact backend"):
        torch.compile(LinearGeluResidual(), backend=dynamo.make_backend(strict=True))(torch.rand(2, 8, 64))


def test_backend_runs_fact_optimize_on_the_graph_and_returns_its_module(monkeypatch):
    calls = []

    class Optimized(torch.nn.Module):
        def __init__(self, gm):
            super().__init__()
            self.gm = gm

        def forward(self, *args):
            calls.append("forward")
            return self.gm(*args)

    def fake_optimize(gm, example_inputs, tolerance=None, out_dir=None):
        calls.append(("optimize", type(gm).__name__, len(example_inputs), tolerance))
        return Optimized(gm)

    monkeypatch.setattr(dynamo, "_refusal", lambda inputs: None)
    monkeypatch.setattr(fact, "optimize", fake_optimize)
    model, x = LinearGeluResidual(), torch.rand(2, 8, 64)
    torch._dynamo.reset()
    out = torch.compile(model, backend=dynamo.make_backend(tolerance=1e-2))(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    # Dynamo lifts the four parameters into graph inputs beside x.
    assert calls[0] == ("optimize", "GraphModule", 5, 1e-2)
    assert calls[1:] == ["forward"]


def test_rules_fire_on_the_graphs_dynamo_captures(tmp_path):
    # Dynamo spells linear as torch._C._nn.linear and the GELU with operator.* and
    # python scalars; the parameters are graph inputs, not module attributes.
    ((gm, example_inputs),) = dynamo_graphs(LinearGeluResidual(), torch.rand(2, 8, 64))
    plan, _ = discover(capture.capture_module(gm, example_inputs), tmp_path)
    gemms = [p for p in plan["patterns"] if p["rule"] == "gemm"]
    assert len(gemms) == 2, [p["rule"] for p in plan["patterns"]]
    assert plan["unmatched"] == []
    fc, proj = sorted(gemms, key=lambda p: p["gemm"]["n"], reverse=True)
    assert fc["gemm"]["n"] == 128 and fc["gemm"]["m"] == 16
    assert fc["epilogue_chain"]["unary_equivalent"] == "gelu_tanh"
    leaves = proj["epilogue_chain"]["leaves"]
    assert len(leaves) == 1, "the residual input is the proj chain's one leaf"
