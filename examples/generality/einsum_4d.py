"""A 4-D tensor times a matrix written as einsum, fp32: "bijl,lk->bijk" with
b, i, j, l, k = 8, 64, 128, 512, 768 (generality suite).

The contraction is one GEMM: b, i, j fold into M = 65536 rows (one stride), l is
K, k is N. Inputs 130 MiB, output 192 MiB.
"""
import torch
import torch.nn as nn

B, I, J, L, K = 8, 64, 128, 512, 768


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bijl,lk->bijk", a, b)


def get_inputs():
    return [torch.rand(B, I, J, L), torch.rand(L, K)]


def get_init_inputs():
    return []
