"""Irregular GEMM, fp32: 3001 x 1999 times 1999 x 2050 (generality suite).

No extent is a multiple of 4, so no row of A, B or D is 16-byte aligned: TMA and
16-byte copies cannot read them. Realize keeps the kernels that read any fp32
element (the pre split kernels' 4-byte pre-pass copies, sm80 SIMT). Inputs ~40 MiB.
"""
import torch
import torch.nn as nn

M = 3001
K = 1999
N = 2050


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


def get_inputs():
    return [torch.rand(M, K), torch.rand(K, N)]


def get_init_inputs():
    return []
