"""The two-stage model of tests/python/test_fact_ablation.py as a KernelBench-style
file (Model, get_inputs, get_init_inputs, FACT_ABLATIONS): the tests import it
and copy it beside a manifest for bench/run.py."""
import torch
import torch.nn as nn


class Stage(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(32, 16)

    def forward(self, x):
        return torch.relu(self.lin(x))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage = Stage()
        self.head = nn.Linear(16, 8)

    def forward(self, x):
        return self.head(self.stage(x))


def get_inputs():
    return [torch.randn(32, 32)]


def get_init_inputs():
    return []


FACT_ABLATIONS = {"all": "all", "head": "module:head"}
