"""Writes tests/fixtures/ir/captured/*.json: IR captured (fact.capture) from
small modules, read by the C++ front-end tests (rules on real captured IR).

    python3 tests/python/make_fixtures.py          # rewrite the fixtures
    python3 tests/python/make_fixtures.py --check  # exit 1 if any is stale

tests/python/test_fact_fixtures.py runs the check, so a capture change that
alters the IR shows up as a failing test until the fixtures are regenerated.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from fact import capture  # noqa: E402

OUT_DIR = ROOT / "tests" / "fixtures" / "ir" / "captured"
SOURCE = "tests/python/make_fixtures.py"


class Mm(nn.Module):
    def forward(self, a, b):
        return torch.mm(a, b)


class LinearBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(128, 64)

    def forward(self, x):
        return self.fc(x)


class Linear3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 96)

    def forward(self, x):
        return self.fc(x)


class MatmulWeightT(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.empty(64, 128))

    def forward(self, x):
        return x @ self.w.t()


class Bmm(nn.Module):
    def forward(self, a, b):
        return torch.bmm(a, b)


class Matmul3d2d(nn.Module):
    def forward(self, x, w):
        return torch.matmul(x, w)


class Addmm(nn.Module):
    def forward(self, bias, x, w):
        return torch.addmm(bias, x, w)


class Unsupported(nn.Module):
    """A GEMM feeding an op no rule covers (cumsum), then a scalar multiply."""

    def forward(self, a, b):
        return torch.cumsum(torch.mm(a, b), dim=1) * 0.5


# name -> (module class, input shapes, dtype)
CASES = {
    "mm": (Mm, [(64, 128), (128, 32)], torch.float32),
    "linear_bias": (LinearBias, [(32, 128)], torch.float32),
    "linear_3d_bf16": (Linear3d, [(4, 16, 64)], torch.bfloat16),
    "matmul_weight_t": (MatmulWeightT, [(32, 128)], torch.float32),
    "bmm": (Bmm, [(4, 32, 64), (4, 64, 16)], torch.float32),
    "matmul_3d_2d": (Matmul3d2d, [(4, 16, 64), (64, 32)], torch.float32),
    "addmm": (Addmm, [(32,), (16, 64), (64, 32)], torch.float32),
    "unsupported_op": (Unsupported, [(16, 64), (64, 32)], torch.float32),
}


def build(name):
    cls, shapes, dtype = CASES[name]
    with torch.device("meta"):
        module = cls().to(dtype)
        inputs = [torch.rand(shape, dtype=dtype) for shape in shapes]
    return capture.capture_module(module, inputs, source=f"{SOURCE}::{cls.__name__}")


def render(ir):
    return json.dumps(ir, indent=1) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        path = OUT_DIR / f"{name}.json"
        text = render(build(name))
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale fixtures (run python3 tests/python/make_fixtures.py):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
