"""KernelBench level 1: batched matrix product C[b] = A[b] @ B[b], fp32.

Workload `l1-bmm-128x512x1024x2048` of bench/suites.py: batch 128, A is
512 x 1024, B is 1024 x 2048 (A: 256 MiB, B: 1 GiB, C: 512 MiB). Inputs come
from torch.rand on the current default device.
"""
import torch
import torch.nn as nn

BATCH = 128
M = 512
K = 1024
N = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.bmm(A, B)


def get_inputs():
    return [torch.rand(BATCH, M, K), torch.rand(BATCH, K, N)]


def get_init_inputs():
    return []
