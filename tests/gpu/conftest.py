"""Each GPU test runs against a registry of its own.

A warm `fact realize` reuses the verification and timing the registry recorded for
a cached winner (docs/CONTRACTS.md, `verification_reused`). With the user's default
registry a GPU test could pass on a verification that an earlier run (or an earlier
test) made. Every test here gets a fresh, empty registry (FACT_REGISTRY, inherited by
the `fact` subprocesses and by fact.optimize), so its kernels are verified by the test
itself. The kernel cache stays shared: it is keyed by source, flags and toolchain,
and a cached binary is verified like a fresh one.

The tests' modules are small, and on small problems PyTorch is often faster than any
kernel: realize would then leave those patterns in PyTorch (FACT_SLOWER=fallback, the
default) and the tests would check nothing of FACT's. They run with FACT_SLOWER=keep,
so the kernels they compose are bound and checked; test_slower_kernel_falls_back
(test_end_to_end.py) checks the default.
"""
import pytest


@pytest.fixture(autouse=True)
def fresh_registry(tmp_path, monkeypatch):
    path = tmp_path / "fact-registry.sqlite"
    monkeypatch.setenv("FACT_REGISTRY", str(path))
    monkeypatch.setenv("FACT_SLOWER", "keep")
    return path
