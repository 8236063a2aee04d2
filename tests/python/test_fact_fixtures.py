"""The committed captured-IR fixtures (read by the C++ tests) are what
fact.capture produces today."""
import pytest

pytest.importorskip("torch")

import make_fixtures  # noqa: E402


def test_captured_fixtures_are_current(capsys):
    status = make_fixtures.main(["--check"])
    assert status == 0, capsys.readouterr().out


def test_fixtures_cover_the_gemm_spellings():
    ops = {name: [n["op"] for n in make_fixtures.build(name)["nodes"]] for name in make_fixtures.CASES}
    assert ops["mm"] == ["mm"] and ops["bmm"] == ["bmm"] and ops["addmm"] == ["addmm"]
    assert ops["linear_bias"] == ["linear"] and ops["linear_3d_bf16"] == ["linear"]
    assert ops["matmul_weight_t"] == ["t", "matmul"] and ops["matmul_3d_2d"] == ["matmul"]
    assert ops["unsupported_op"] == ["mm", "other:torch.cumsum", "mul"]
