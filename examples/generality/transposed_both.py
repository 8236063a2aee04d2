"""Both operands transposed, fp32: A.T @ B.T with A 4096 x 2048 and B 1024 x 4096
(generality suite).

Each `.T` becomes the operand's layout (A column-major, B column-major), not a
copy. Inputs 48 MiB.
"""
import torch
import torch.nn as nn

M = 2048
K = 4096
N = 1024


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a.T, b.T)


def get_inputs():
    return [torch.rand(K, M), torch.rand(N, K)]


def get_init_inputs():
    return []
