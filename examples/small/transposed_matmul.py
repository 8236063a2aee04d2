"""Transposed GEMM operands, fp32 (tests and the README demo).

`x @ w.t()` (B operand column-major, as nn.Linear stores weights) and
`torch.matmul(a.transpose(-2, -1), b)` (A operand column-major): discover must
absorb each transpose into the operand layout instead of copying. The two
products are summed so both feed the output. Inputs total ~3 MiB.
"""
import torch
import torch.nn as nn

M = 256
N = 384
K = 512


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y1 = x @ w.t()
        y2 = torch.matmul(a.transpose(-2, -1), b)
        return y1 + y2


def get_inputs():
    # x: M x K, w: N x K (so x @ w.t() is M x N); a: K x M, b: K x N.
    return [torch.rand(M, K), torch.rand(N, K), torch.rand(K, M), torch.rand(K, N)]


def get_init_inputs():
    return []
