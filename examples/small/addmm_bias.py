"""addmm with a bias vector and scalars, fp32 (tests and the README demo).

out = beta * bias + alpha * (x @ w), with bias a length-N vector broadcast over
rows: the `addmm` rule maps it to a GEMM with a `bias` epilogue
(CONTRACTS.md §2). Inputs: x is 512 x 768, w is 768 x 1024 (~4.5 MiB in all).
"""
import torch
import torch.nn as nn

M = 512
K = 768
N = 1024


class Model(nn.Module):
    def __init__(self, alpha: float, beta: float):
        super().__init__()
        self.alpha = alpha
        self.beta = beta

    def forward(self, bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.addmm(bias, x, w, beta=self.beta, alpha=self.alpha)


def get_inputs():
    return [torch.rand(N), torch.rand(M, K), torch.rand(K, N)]


def get_init_inputs():
    return [0.5, 2.0]
