"""KernelBench level 3: one minGPT transformer block (pre-LN), fp32.

Workload `l3-minigpt-block` of bench/suites.py: B = 128 sequences of T = 512
tokens, width C = 768, 8 heads of 96, dropout 0, input from torch.rand.

    x = x + attn(ln_1(x))      LayerNorm -> Linear(C, 3C) -> split q, k, v -> heads
                               -> softmax(q @ kᵀ / √d, causal) @ v -> Linear(C, C)
    x = x + mlp(ln_2(x))       LayerNorm -> Linear(C, 4C) -> tanh-GELU -> Linear(4C, C)

The attention is written out as minGPT does (q @ kᵀ, scale, masked_fill from a
registered `tril` buffer, softmax, dropout, @ v) and the GELU term by term:
that explicit form is what FACT captures and must fuse.
examples/l3_minigpt_attention.py is the attention module alone; for the same
seed it gets the same parameters as this block's `attn` (LayerNorm's
initialisation draws no random numbers).

Beyond KernelBench's three names the file offers bench/run.py two hooks
(bench/README.md, "Workload hooks"): `sdpa_variant(model)`, the hand rewrite
behind the `eager-bf16-sdpa` peer, and `FACT_ABLATIONS`, the pattern groups
FACT is timed with one at a time.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

B = 128        # batch
T = 512        # sequence length = size of the causal mask buffer
C = 768        # embedding width
N_HEAD = 8     # heads of C / N_HEAD = 96
DROPOUT = 0.0  # attention, residual and MLP dropout


class NewGELU(nn.Module):
    """GELU's tanh approximation written out term by term (minGPT, GPT-2)."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout=DROPOUT):
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


class MLP(nn.Module):
    def __init__(self, n_embd, dropout=DROPOUT):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.act = NewGELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = dropout

    def forward(self, x):
        return F.dropout(self.c_proj(self.act(self.c_fc(x))), p=self.dropout, training=self.training)


class Model(nn.Module):
    """The block: pre-LN attention and MLP, each with a residual connection."""

    def __init__(self, n_embd=C, n_head=N_HEAD, block_size=T):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


def get_inputs():
    return [torch.rand(B, T, C)]


def get_init_inputs():
    return [C, N_HEAD, T]


def sdpa_variant(model):
    """`model` with every attention core as F.scaled_dot_product_attention(..., is_causal=True).

    The hand rewrite a PyTorch user would make; bench/run.py times it under
    bf16 autocast as the `eager-bf16-sdpa` peer. Modifies and returns `model`
    (same parameters, same function).
    """
    for module in model.modules():
        if isinstance(module, CausalSelfAttention):
            module.flash = True
    return model


# Ablation settings bench/run.py times FACT with, one at a time: name -> the
# manifest patterns fact.runtime binds (FACT_PATTERNS selectors: `rule:NAME`,
# `module:PATH`, a pattern id, `all`); every other pattern runs in PyTorch.
# "mlp" is the second half: ln_2 and the two MLP GEMMs with their GELU and
# residual epilogues.
FACT_ABLATIONS = {
    "all": "all",
    "attention": "rule:attention",
    "mlp": "module:ln_2,module:mlp",
}
