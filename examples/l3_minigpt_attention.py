"""KernelBench level 3: minGPT's causal self-attention module alone, fp32.

Workload `l3-minigpt-attention` of bench/suites.py: the `attn` of
examples/l3_minigpt_block.py on its own, x [B, T, C] -> Linear(C, 3C) ->
split q, k, v -> 8 heads -> softmax(q @ kᵀ / √d, causal) @ v -> Linear(C, C),
with B = 128, T = 512, C = 768, dropout 0, input from torch.rand.

The class is the block file's CausalSelfAttention (a KernelBench file stands
alone: `fact compose` copies only this file next to the composed module); for
the same seed it gets the same parameters, and
tests/python/test_l3_examples.py checks that the two stay the same function.
Hooks for bench/run.py (bench/README.md, "Workload hooks"): `sdpa_variant`,
`FACT_ABLATIONS`.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

B = 128        # batch
T = 512        # sequence length = size of the causal mask buffer
C = 768        # embedding width
N_HEAD = 8     # heads of C / N_HEAD = 96
DROPOUT = 0.0  # attention and residual dropout


class Model(nn.Module):
    def __init__(self, n_embd=C, n_head=N_HEAD, block_size=T, dropout=DROPOUT):
        super().__init__()
        assert n_embd % n_head == 0, "the width must split evenly into heads"
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)  # q, k, v of all heads in one GEMM
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head = n_head
        self.n_embd = n_embd
        self.dropout = dropout
        # Lower triangle = the positions a token may attend to.
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))
        # True runs the attention core as one SDPA call (sdpa_variant below);
        # the workload itself, and what FACT captures, is the explicit form.
        self.flash = False

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (b, heads, t, head size)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            att = F.dropout(att, p=self.dropout, training=self.training)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # heads side by side again
        return F.dropout(self.c_proj(y), p=self.dropout, training=self.training)


def get_inputs():
    return [torch.rand(B, T, C)]


def get_init_inputs():
    return [C, N_HEAD, T]


def sdpa_variant(model):
    """`model` with its attention core as F.scaled_dot_product_attention(..., is_causal=True).

    The hand rewrite behind bench/run.py's `eager-bf16-sdpa` peer. Modifies
    and returns `model` (same parameters, same function).
    """
    model.flash = True
    return model


# Ablation settings bench/run.py times FACT with (FACT_PATTERNS selectors):
# everything, or only the fused attention with both linears in PyTorch.
FACT_ABLATIONS = {
    "all": "all",
    "attention": "rule:attention",
}
