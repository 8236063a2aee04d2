"""Small MLP: Linear -> GELU -> Linear, fp32 (tests and the README demo).

Two GEMMs with bias (the `linear` rule) around an exact-erf GELU, which no
GEMM rule covers on its own: discover lists it as unmatched and the composed
module runs it in PyTorch. Inputs: x is 256 x 512 (512 KiB); weights are
2048 x 512 and 512 x 2048 (4 MiB each).
"""
import torch
import torch.nn as nn

BATCH = 256
IN_FEATURES = 512
HIDDEN = 2048
OUT_FEATURES = 512


class Model(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def get_inputs():
    return [torch.rand(BATCH, IN_FEATURES)]


def get_init_inputs():
    return [IN_FEATURES, HIDDEN, OUT_FEATURES]
