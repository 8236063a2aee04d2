"""Linear -> sigmoid -> scale -> add the Linear's own output, fp32 (generality suite).

The element-wise chain after the GEMM reads the accumulator twice (sigmoid(x) *
scale + x); discover matches it as one epilogue chain, realize generates the
epilogue from it. x is 1024 x 4096, the weight 4096 x 4096 (64 MiB).
"""
import torch
import torch.nn as nn

BATCH = 1024
IN_FEATURES = 4096
OUT_FEATURES = 4096
SCALE = 2.0


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__()
        self.gemm = nn.Linear(in_features, out_features)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gemm(x)
        original = x
        x = torch.sigmoid(x)
        x = x * self.scale
        return x + original


def get_inputs():
    return [torch.rand(BATCH, IN_FEATURES)]


def get_init_inputs():
    return [IN_FEATURES, OUT_FEATURES, SCALE]
