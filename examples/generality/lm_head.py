"""A language-model head, fp32: Linear(768, 50257, bias=False) on 4 x 256 tokens
(generality suite).

GPT-2's vocabulary of 50257 makes every output row 201028 bytes long, not a
multiple of 16: the CUTLASS sm90 kernels (TMA stores) cannot write it; FACT's
split kernels store D element pairs where aligned, else elements. The 3-D input
folds into M = 1024. Weight 147 MiB, output 196 MiB.
"""
import torch
import torch.nn as nn

BATCH = 4
TOKENS = 256
EMBED = 768
VOCAB = 50257


class Model(nn.Module):
    def __init__(self, embed: int, vocab: int):
        super().__init__()
        self.lm_head = nn.Linear(embed, vocab, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


def get_inputs():
    return [torch.rand(BATCH, TOKENS, EMBED)]


def get_init_inputs():
    return [EMBED, VOCAB]
