"""CPU tests of fact.capture: op spellings -> canonical ops, shapes, strides,
params, consts, and the one-line errors of `python -m fact.capture`."""
import json
import subprocess
import sys
import textwrap

import pytest

from fact_testutil import ROOT, node_by_id, ops_of

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from fact import capture  # noqa: E402


def cap(module, *inputs):
    return capture.capture_module(module, list(inputs))


class Spellings(nn.Module):
    """Every GEMM spelling the contract names, each on its own output."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 16)
        self.w = nn.Parameter(torch.randn(16, 32))

    def forward(self, x, y, z):
        return (torch.matmul(x, self.w.t()), x @ self.w.T, x.matmul(self.w.transpose(0, 1)),
                torch.mm(x, self.w.t()), x.mm(self.w.permute(1, 0)), torch.bmm(y, z), self.lin(x),
                F.linear(x, self.w), torch.addmm(self.lin.bias, x, self.w.t(), beta=0.5, alpha=2.0))


def test_gemm_spellings_are_canonical():
    x, y, z = torch.randn(8, 32), torch.randn(2, 8, 32), torch.randn(2, 32, 4)
    ir = cap(Spellings(), x, y, z)
    assert ir["fact_ir"] == 1 and ir["module"] == "Spellings"
    expected = ["t", "matmul", "t", "matmul", "transpose", "matmul", "t", "mm", "permute", "mm", "bmm",
                "linear", "linear", "t", "addmm"]
    assert ops_of(ir) == expected
    origins = [n["origin"] for n in ir["nodes"]]
    assert origins[:6] == ["Tensor.t", "torch.matmul", "Tensor.T", "operator.matmul", "Tensor.transpose",
                           "Tensor.matmul"]
    assert "torch.nn.Linear" in origins and "torch.nn.functional.linear" in origins
    lin = node_by_id(ir, "lin")
    assert lin["inputs"] == ["x", "lin_weight", "lin_bias"]
    assert ir["tensors"]["lin_weight"] == {"shape": [16, 32], "dtype": "float32", "strides": [32, 1],
                                           "kind": "param", "target": "lin.weight"}
    flin = node_by_id(ir, "linear")
    assert flin["inputs"] == ["x", "w"] and flin["attrs"] == {"bias": None}
    addmm = node_by_id(ir, "addmm")
    assert addmm["attrs"] == {"beta": 0.5, "alpha": 2.0}
    assert addmm["inputs"][0] == "lin_bias"  # the get_attr of self.lin.bias, shared with lin
    assert node_by_id(ir, "transpose")["attrs"] == {"dim0": 0, "dim1": 1}
    assert node_by_id(ir, "permute")["attrs"] == {"dims": [1, 0]}
    # transposed views keep eager's strides
    assert ir["tensors"]["t"]["shape"] == [32, 16] and ir["tensors"]["t"]["strides"] == [1, 32]
    assert ir["tensors"]["bmm"]["shape"] == [2, 8, 4] and ir["tensors"]["bmm"]["strides"] == [32, 4, 1]
    assert ir["tensors"]["x"] == {"shape": [8, 32], "dtype": "float32", "strides": [32, 1], "kind": "input",
                                  "index": 0}
    assert ir["tensors"]["z"]["index"] == 2
    assert len(ir["outputs"]) == 9


class Elementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.GELU(approximate="tanh")
        self.relu = nn.ReLU()
        self.ln = nn.LayerNorm(8)
        self.sm = nn.Softmax(dim=1)

    def forward(self, x, mask):
        a = 2 * x + torch.tanh(x) - x / 3.0
        b = torch.add(a, x, alpha=0.5).sub(1).mul(x).div(2).neg().relu()
        c = F.gelu(b) + self.act(b) + self.relu(b) + torch.sigmoid(b) + F.silu(b) + b.exp() + b ** 2
        d = self.ln(c).view(x.size(0), 2, 4).reshape(-1, 8).contiguous()
        e = torch.softmax(d, -1) + F.softmax(d, dim=-1) + d.softmax(1) + self.sm(d)
        first, second = e.chunk(2, dim=1)
        left, right = torch.split(e, [3, 5], dim=1)
        f = e.masked_fill(mask, -1e9)
        return first, second, left, right, f[:, 1:3], torch.cumsum(f, dim=0)


def test_elementwise_spellings_consts_and_attrs():
    x = torch.randn(4, 8)
    mask = torch.zeros(4, 8, dtype=torch.bool)
    ir = cap(Elementwise(), x, mask)
    ops = ops_of(ir)
    for op in ("mul", "add", "tanh", "sub", "div", "neg", "relu", "gelu", "sigmoid", "silu", "exp", "pow",
               "layer_norm", "view", "reshape", "contiguous", "softmax", "chunk", "split", "getitem",
               "masked_fill"):
        assert op in ops, op
    assert "other:torch.cumsum" in ops
    assert not any(op.startswith("other:") and op != "other:torch.cumsum" for op in ops), ops
    mul = node_by_id(ir, "mul")  # 2 * x: the scalar is a const tensor, in argument order
    const = ir["tensors"][mul["inputs"][0]]
    assert const == {"shape": [], "dtype": "int64", "strides": [], "kind": "const", "value": 2}
    assert mul["inputs"][1] == "x"
    truediv = node_by_id(ir, "truediv")
    assert ir["tensors"][truediv["inputs"][1]]["value"] == 3.0
    assert ir["tensors"][truediv["inputs"][1]]["dtype"] == "float32"
    assert node_by_id(ir, "add")["attrs"] == {"alpha": 1}
    assert [n["attrs"] for n in ir["nodes"] if n["op"] == "add" and n["origin"] == "torch.add"] == [{"alpha": 0.5}]
    gelus = [n for n in ir["nodes"] if n["op"] == "gelu"]
    assert [g["attrs"]["approximate"] for g in gelus] == ["none", "tanh"]
    view = node_by_id(ir, "view")
    assert view["attrs"] == {"shape": [4, 2, 4]}  # x.size(0) folded to its value
    assert ir["tensors"]["view"]["shape"] == [4, 2, 4]
    softmaxes = [n for n in ir["nodes"] if n["op"] == "softmax"]
    assert [s["attrs"]["dim"] for s in softmaxes] == [-1, -1, 1, 1]
    assert all(s["attrs"]["dtype"] is None for s in softmaxes)
    ln = node_by_id(ir, "ln")
    assert ln["inputs"][1:] == ["ln_weight", "ln_bias"] and ln["origin"] == "torch.nn.LayerNorm"
    assert ln["attrs"] == {"normalized_shape": [8], "eps": 1e-5}
    chunk = node_by_id(ir, "chunk")
    assert chunk["attrs"] == {"chunks": 2, "dim": 1}
    assert [e["shape"] for e in ir["tensors"]["chunk"]["elements"]] == [[4, 4], [4, 4]]
    split = node_by_id(ir, "split")
    assert split["attrs"] == {"split_size_or_sections": [3, 5], "dim": 1}
    fill = node_by_id(ir, "masked_fill")
    assert fill["inputs"][1] == "mask" and ir["tensors"][fill["inputs"][2]]["value"] == -1e9
    slices = [n for n in ir["nodes"] if n["op"] == "getitem" and isinstance(n["attrs"]["index"], list)]
    assert slices[0]["attrs"]["index"] == [{"slice": [None, None, None]}, {"slice": [1, 3, None]}]
    assert ir["tensors"][slices[0]["id"]]["strides"] == [8, 1]
    assert ir["tensors"]["mask"]["dtype"] == "bool"
    json.dumps(ir)  # the IR is plain JSON


def test_three_d_matmul_and_half_dtypes():
    class M(nn.Module):
        def forward(self, x, w):
            return x @ w

    ir = cap(M(), torch.randn(2, 8, 16, dtype=torch.bfloat16), torch.randn(16, 4, dtype=torch.bfloat16))
    assert ops_of(ir) == ["matmul"]
    out = ir["tensors"][ir["outputs"][0]]
    assert out == {"shape": [2, 8, 4], "dtype": "bfloat16", "strides": [32, 4, 1], "kind": "value"}


def test_capture_allocates_nothing_on_meta():
    class Huge(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1 << 16, 1 << 16)  # 16 GiB of weight if it were real

        def forward(self, x):
            return self.lin(x)

    with torch.device("meta"):
        module = Huge()
        x = torch.rand(1 << 16, 1 << 16)
    ir = cap(module, x)
    assert ir["tensors"]["lin"]["shape"] == [1 << 16, 1 << 16]


def _run_cli(tmp_path, source):
    path = tmp_path / "model.py"
    if source is not None:
        path.write_text(textwrap.dedent(source))
    out = tmp_path / "graph.json"
    env = {"PYTHONPATH": str(ROOT / "python"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "fact.capture", str(path), "-o", str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    return result, out


GOOD = """
import torch
import torch.nn as nn

class Model(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, a, b):
        return torch.matmul(a, b)

M = 1 << 17  # 64 GiB per input if get_inputs allocated

def get_inputs():  # device="cuda" / .cuda() as KernelBench files may write: kept on meta
    return [torch.rand(M, M // 4, device="cuda"), torch.rand(M // 4, 64).cuda().to("cuda", torch.float32)]

def get_init_inputs():
    return [3]
"""


def test_cli_writes_ir_without_allocating(tmp_path):
    result, out = _run_cli(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    ir = json.loads(out.read_text())
    assert ir["init_inputs"] == [3] and ir["source"] == str(tmp_path / "model.py")
    assert ir["tensors"]["a"]["shape"] == [1 << 17, 1 << 15]
    assert ir["nodes"][0]["op"] == "matmul"


@pytest.mark.parametrize("source, message", [
    (None, "no such file"),
    ("import torch\ndef get_inputs():\n    return []\n", "no `class Model`"),
    ("import torch.nn as nn\nclass Model(nn.Module):\n    def forward(self, x):\n        return x\n",
     "no `get_inputs()`"),
    ("import torch, torch.nn as nn\nclass Model(nn.Module):\n    def forward(self, x):\n"
     "        if x.sum() > 0:\n            return x\n        return -x\n"
     "def get_inputs():\n    return [torch.rand(4)]\n",
     "could not trace Model.forward at model.py:4"),
    ("import torch, torch.nn as nn\nclass Model(nn.Module):\n    def forward(self, x):\n"
     "        return torch.mm(x, x)\n"
     "def get_inputs():\n    return [torch.rand(4, 3)]\n",
     "shape propagation failed at node 'mm' (torch.mm)"),
])
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys, source, message):
    path = tmp_path / "model.py"
    if source is not None:
        path.write_text(source)
    out = tmp_path / "graph.json"
    assert capture.main([str(path), "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fact.capture: error:"), lines
    assert message in lines[0], lines[0]
    assert not out.exists()
