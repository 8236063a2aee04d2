"""Benchmark suites: suite name -> ordered {workload name: example file}.

Workload names are DESIGN.md's; example paths are relative to the repository
root and must be KernelBench-format files (`class Model`, `get_inputs()`,
`get_init_inputs()`). tests/python/test_bench_schema.py checks every entry.
This module is plain data: importing it loads neither torch nor CUDA.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUITES = {
    # Issue 2's GEMM workloads: fp32 inputs from torch.rand.
    "l1-gemm": {
        "l1-square-4096": "examples/l1_square_4096.py",
        "l1-bmm-128x512x1024x2048": "examples/l1_bmm_128x512x1024x2048.py",
        "l1-largek-256x256x524288": "examples/l1_largek_256x256x524288.py",
    },
    # Issue 3's transformer workloads: a minGPT pre-LN block (B=128, T=512,
    # C=768, 8 heads) and its attention module alone; fp32 inputs from torch.rand.
    "l3-minigpt": {
        "l3-minigpt-block": "examples/l3_minigpt_block.py",
        "l3-minigpt-attention": "examples/l3_minigpt_attention.py",
    },
    # Modules of shapes and spellings no issue names (examples/generality): misaligned
    # rows (irregular extents, a 50257-wide LM head), einsum, an element-wise chain that
    # reads the GEMM's output twice, both operands transposed; fp32 from torch.rand.
    "generality": {
        "gen-irregular-3001x2050x1999": "examples/generality/irregular_matmul.py",
        "gen-lm-head-1024x50257x768": "examples/generality/lm_head.py",
        "gen-einsum-bijl-lk": "examples/generality/einsum_4d.py",
        "gen-gemm-sigmoid-scale-residual": "examples/generality/gemm_sigmoid_scale_residual.py",
        "gen-transposed-both": "examples/generality/transposed_both.py",
        "gen-llama-block": "examples/generality/llama_block.py",
        "gen-llama-block-bf16": "examples/generality/llama_block_bf16.py",
    },
    # Small models (a few MB of inputs) for quick end-to-end checks of the
    # harness and of composed modules with fallback ops.
    "small": {
        "small-linear-gelu-mlp": "examples/small/linear_gelu_mlp.py",
        "small-transposed-matmul": "examples/small/transposed_matmul.py",
        "small-addmm-bias": "examples/small/addmm_bias.py",
    },
}

# Peers bench/run.py runs by default beyond its base five (eager fp32/TF32/bf16,
# inductor default and max-autotune in fp32): the suite's claims compare
# against these too. Names from DESIGN.md's list of systems.
EXTRA_PEERS = {
    "l3-minigpt": ("eager-bf16-sdpa", "inductor-default-bf16", "inductor-max-autotune-bf16"),
}


def suite(name):
    """The {workload: absolute Path} table of suite `name`; KeyError names the known suites."""
    if name not in SUITES:
        raise KeyError(f"unknown suite '{name}'; known suites: {', '.join(sorted(SUITES))}")
    return {w: ROOT / p for w, p in SUITES[name].items()}


def find_workload(workload):
    """(suite name, absolute example Path) of `workload` in any suite, or None."""
    for sname, table in SUITES.items():
        if workload in table:
            return sname, ROOT / table[workload]
    return None
