"""GEMM operands whose tensors list their dims in another order than the layout
implies (docs/CONTRACTS.md §2, `order`): a transpose with a second reader (not
absorbed: the operand is the transposed view itself), a column-major input, and an
absorbed transpose of a column-major input. Discover binds them; the runtime must
check their strides in the tensor's own order and run the kernel instead of
falling back. On the CPU: discover, then install with the CPU stand-in kernel
driven only by the plan's binding (a fallback fails the test), against eager.
Skips when the `fact` binary is not built ($FACT_BIN or build/release/fact)."""
import pytest

from fact_testutil import discover_module, fact_binary, run_with_fake_gemms

torch = pytest.importorskip("torch")
nn = torch.nn


class SharedTranspose(nn.Module):
    def forward(self, x, w):
        wt = w.t()  # two readers: not absorbed, B is the column-major view wt itself
        return x @ wt, wt + 1.0


class ColumnMajorInputs(nn.Module):
    def forward(self, a, p, w):
        # a: a column-major input (A's tensor is the transposed view); p.t(): an absorbed
        # transpose of a column-major tensor (a row-major A bound through p).
        return a @ w, p.t() @ w


CASES = [
    (SharedTranspose, lambda: [torch.randn(16, 32), torch.randn(24, 32)], [("b", "rows_cols")]),
    (ColumnMajorInputs, lambda: [torch.randn(32, 16).t(), torch.randn(16, 32).t(), torch.randn(32, 24)],
     [("a", "cols_rows"), ("a", "rows_cols")]),
]


@pytest.mark.parametrize("module_type,make_inputs,expected_orders", CASES, ids=["shared_transpose", "column_major"])
def test_operands_in_their_tensors_order_run_the_kernel(tmp_path, module_type, make_inputs, expected_orders):
    binary = fact_binary()
    if binary is None:
        pytest.skip("the fact binary is not built")
    torch.manual_seed(0)
    inputs = make_inputs()
    _, _, plan = discover_module(binary, tmp_path, module_type(), inputs)
    gemms = [p for p in plan["patterns"] if p["rule"] == "gemm"]
    assert gemms, plan["unmatched"]
    orders = sorted((role, p["gemm"][role]["order"]) for p in gemms for role in ("a", "b")
                    if "order" in p["gemm"][role])
    assert orders == expected_orders, gemms
    for trial in range(3):
        torch.manual_seed(trial + 1)
        fresh = make_inputs()
        expected = module_type()(*fresh)
        got, kernels = run_with_fake_gemms(module_type(), gemms, fresh)
        assert len(kernels) == len(gemms)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
