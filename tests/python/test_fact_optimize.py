"""CPU tests of fact.optimize's orchestration with a stand-in `fact` binary
($FACT_BIN): stage order and arguments, the manifest handed to the runtime,
and the message when the binary is missing."""
import json
import os
import stat

import pytest

import fact_testutil  # noqa: F401

torch = pytest.importorskip("torch")

import fact  # noqa: E402

FAKE_CLI = r"""#!/usr/bin/env python3
import json, os, sys
log = os.environ["FAKE_FACT_LOG"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
command, src = sys.argv[1], sys.argv[2]
out = sys.argv[sys.argv.index("-o") + 1]
if command == "discover":
    ir = json.load(open(src))
    assert ir["fact_ir"] == 1 and ir["nodes"][0]["op"] == "linear"
    json.dump({"fact_plan": 1, "ir": src, "patterns": []}, open(out, "w"))
elif command == "realize":
    json.dump({"fact_realized": 1, "plan": src, "patterns": []}, open(out, "w"))
elif command == "compose":
    os.makedirs(out, exist_ok=True)
    pattern = {"id": "p0", "nodes": ["fc"], "inputs": ["x", "fc_weight", "fc_bias"], "outputs": ["fc"],
               "library": "libs/libgone.so",
               "gemm": {"batch": 1, "m": 4, "n": 8, "k": 16,
                        "a": {"tensor": "x", "layout": "row", "ld": 16, "batch_stride": 0},
                        "b": {"tensor": "fc_weight", "layout": "col", "ld": 16, "batch_stride": 0},
                        "d": {"tensor": "fc", "ld": 8, "batch_stride": 0},
                        "epilogue": {"kind": "bias", "tensor": "fc_bias", "alpha": 1.0, "beta": 1.0}}}
    json.dump({"fact_manifest": 1, "patterns": [pattern]}, open(os.path.join(out, "fact_manifest.json"), "w"))
elif command == "optimize":
    os.makedirs(out, exist_ok=True)
else:
    sys.exit(2)
"""


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x):
        return self.fc(x)


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    binary = tmp_path / "fact"
    binary.write_text(FAKE_CLI)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FACT_BIN", str(binary))
    monkeypatch.setenv("FAKE_FACT_LOG", str(log))
    return log


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_optimize_module_runs_the_stages_and_installs(fake_cli, tmp_path):
    module = Small()
    x = torch.randn(4, 16)
    expected = module(x)
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="pattern p0 falls back to PyTorch: library failed to load"):
        result = fact.optimize(module, (x,), tolerance=1e-2, out_dir=out)
    assert result is module
    made = calls(fake_cli)
    assert [c[0] for c in made] == ["discover", "realize", "compose"]
    assert made[0][1] == str(out / "graph.json") and made[0][-2:] == ["--tolerance", "0.01"]
    assert made[2][-2:] == ["-o", str(out / "composed")]
    assert json.loads((out / "graph.json").read_text())["tensors"]["x"]["shape"] == [4, 16]
    torch.testing.assert_close(module(x), expected)


def test_optimize_file_runs_fact_optimize(fake_cli, tmp_path):
    source = tmp_path / "model.py"
    source.write_text("class Model: pass\n")
    out = fact.optimize(str(source), out_dir=tmp_path / "o")
    assert calls(fake_cli) == [["optimize", str(source), "-o", str(tmp_path / "o")]]
    assert out == tmp_path / "o"
    with pytest.raises(fact.FactError, match="no such file"):
        fact.optimize(str(tmp_path / "nope.py"))


def test_missing_binary_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("FACT_BIN", str(tmp_path / "absent"))
    with pytest.raises(fact.FactError, match=r"not found at .*absent.*cmake --preset release"):
        fact.optimize(Small(), (torch.randn(2, 16),))


def test_stage_failure_names_the_stage(fake_cli, tmp_path, monkeypatch):
    binary = tmp_path / "fact"
    binary.write_text("#!/bin/sh\necho 'no rule matched anything' >&2\nexit 2\n")
    with pytest.raises(fact.FactError, match=r"\(discover\) exited with 2:\nno rule matched anything"):
        fact.optimize(Small(), (torch.randn(2, 16),), out_dir=tmp_path / "o")
    assert os.path.exists(tmp_path / "o" / "graph.json")


def test_module_without_a_source_file_gets_a_placeholder(fake_cli, tmp_path):
    dynamic = type("Dynamic", (Small,), {"__module__": "fact_test_module_that_is_not_imported"})
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="library failed to load"):
        fact.optimize(dynamic(), (torch.randn(4, 16),), out_dir=out)
    source = json.loads((out / "graph.json").read_text())["source"]
    assert source == str(out / "module_source.py") and "captured live" in (out / "module_source.py").read_text()
