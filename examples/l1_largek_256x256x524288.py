"""KernelBench level 1: matrix product with a very long reduction, fp32.

Workload `l1-largek-256x256x524288` of bench/suites.py: M = N = 256,
K = 524288 (A and B are 512 MiB each, C is 256 KiB). Long sums are where
tensor-core modes lose accuracy (see BASELINES.md), so this file checks the
fp32-faithful path. Inputs come from torch.rand on the current default device.
"""
import torch
import torch.nn as nn

M = 256
N = 256
K = 524288


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


def get_inputs():
    return [torch.rand(M, K), torch.rand(K, N)]


def get_init_inputs():
    return []
