"""KernelBench level 1: square matrix product C = A @ B with M = N = K = 4096, fp32.

Workload `l1-square-4096` of bench/suites.py. Inputs come from torch.rand, as in
KernelBench; they are created on the current default device, so a harness can
build them directly on the GPU with `with torch.device("cuda"): get_inputs()`.
"""
import torch
import torch.nn as nn

M = 4096
N = 4096
K = 4096


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


def get_inputs():
    return [torch.rand(M, K), torch.rand(K, N)]


def get_init_inputs():
    return []
