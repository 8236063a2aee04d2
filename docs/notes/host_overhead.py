"""Host time per forward of a module with two installed GEMM patterns whose fake kernels do
nothing (CPU: the runtime's Python path from the call to the kernel launch), with and
without autograd, then a cProfile of the no_grad loop. From the repo root:

    PYTHONPATH=python python3 docs/notes/host_overhead.py
"""
import cProfile
import pstats
import sys
import time

import torch

sys.path.insert(0, "tests/python")
from fact_testutil import FakeGemm, bias_epilogue, gemm_binding  # noqa: E402

from fact import runtime  # noqa: E402


class NoRun(FakeGemm):
    """A kernel whose launch costs nothing: what remains is the runtime's host path."""

    def run(self, p, *args):
        self.runs += 1


class TwoLinears(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(32, 48)
        self.proj = torch.nn.Linear(48, 16)

    def forward(self, x):
        return self.proj(torch.relu(self.fc(x)))


def linear_pattern(pid, root, a, m, n, k):
    return {"id": pid, "rule": "gemm", "root": root, "nodes": [root], "inputs": [a, f"{root}_weight", f"{root}_bias"],
            "outputs": [root], "dtype": "float32", "library": f"lib{root}.so", "variant": "fake", "math": "f32",
            "gemm": gemm_binding(m, n, k, a, f"{root}_weight", root, bias_epilogue(f"{root}_bias"))}


def main(calls=2000):
    runtime.set_kernel_loader(lambda path: NoRun(epilogue="bias"))
    module = TwoLinears()
    runtime.install(module, {"fact_manifest": 1, "patterns": [linear_pattern("p0", "fc", "x", 32, 48, 32),
                                                              linear_pattern("p1", "proj", "relu", 32, 16, 48)]})
    x = torch.randn(32, 32)
    for mode, context in (("autograd on", torch.enable_grad), ("no_grad", torch.no_grad)):
        with context():
            for _ in range(200):
                module(x)
            start = time.perf_counter()
            for _ in range(calls):
                module(x)
            print(f"{mode}: {(time.perf_counter() - start) / calls * 1e6:.1f} us per forward "
                  f"(2 GEMM entries + relu)")
    profile = cProfile.Profile()
    with torch.no_grad():
        profile.runcall(lambda: [module(x) for _ in range(calls)])
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
