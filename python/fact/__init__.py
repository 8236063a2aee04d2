"""FACT's Python edge: capture (fact.capture), kernel loading (fact.kernel), the
verification worker (fact.worker), the runtime (fact.runtime) and

    fact.optimize(module_or_file, example_inputs=None, tolerance=None, out_dir=None)

which runs the C++ pipeline (`fact discover / realize / compose`, or
`fact optimize FILE`) and returns the optimized module.

Importing `fact` imports nothing heavy: torch is loaded by the submodules.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

__all__ = ["optimize", "fact_binary", "FactError"]

_REPO = pathlib.Path(__file__).resolve().parents[2]

BUILD_HINT = ("build it with `cmake --preset release && cmake --build --preset release` in "
              f"{_REPO}, or point $FACT_BIN at an existing `fact` binary")


class FactError(RuntimeError):
    """A pipeline stage failed; the message names the stage and its output."""


def fact_binary() -> str:
    """Path of the `fact` CLI: $FACT_BIN, else <repo>/build/release/fact."""
    configured = os.environ.get("FACT_BIN")
    path = pathlib.Path(configured) if configured else _REPO / "build" / "release" / "fact"
    if not path.is_file() or not os.access(path, os.X_OK):
        where = "$FACT_BIN=" + configured if configured else str(path)
        raise FactError(f"the fact CLI was not found at {where}: {BUILD_HINT}")
    return str(path)


def _run(argv: list[str], stage: str) -> None:
    env = dict(os.environ)
    python_dir = str(_REPO / "python")
    env["PYTHONPATH"] = python_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-15:])
        raise FactError(f"`{' '.join(argv)}` ({stage}) exited with {result.returncode}:\n{tail}")


def _tolerance_args(tolerance) -> list[str]:
    return [] if tolerance is None else ["--tolerance", repr(float(tolerance))]


def optimize(module_or_file, example_inputs=None, tolerance=None, out_dir=None):
    """Optimize a module (or a KernelBench-format file) with FACT.

    - nn.Module: captures the live module on `example_inputs` (nothing is
      computed: shapes are propagated with FakeTensors), runs `fact discover`,
      `fact realize` and `fact compose` on the IR, and returns the same module
      with fact.runtime.install applied (its forward now runs the kernels).
    - path of a .py file: runs `fact optimize FILE` and returns the output
      folder (ModelNew.py, fact_manifest.json, libs/, report.md).

    `tolerance`: atol = rtol for the module's output (default: KernelBench's
    rule, 1e-4 for fp32 and 1e-2 for fp16/bf16). `out_dir`: where stage files
    go (default: a new temporary folder)."""
    binary = fact_binary()
    out = pathlib.Path(out_dir) if out_dir is not None else pathlib.Path(tempfile.mkdtemp(prefix="fact-"))
    out.mkdir(parents=True, exist_ok=True)

    if isinstance(module_or_file, (str, os.PathLike)):
        source = pathlib.Path(module_or_file).resolve()
        if not source.is_file():
            raise FactError(f"{source}: no such file")
        _run([binary, "optimize", str(source), "-o", str(out), *_tolerance_args(tolerance)], "optimize")
        return out

    import torch

    from . import capture, runtime

    if not isinstance(module_or_file, torch.nn.Module):
        raise TypeError(f"fact.optimize takes an nn.Module or a file path, not {type(module_or_file).__name__}")
    if example_inputs is None:
        raise ValueError("fact.optimize(module) needs example_inputs (a tuple of tensors like forward's arguments)")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    module = module_or_file
    ir = capture.capture_module(module, list(example_inputs))
    if not ir.get("source"):
        # A class defined interactively has no source file, but `fact compose`
        # copies one next to ModelNew.py; this module only needs the manifest.
        placeholder = out / "module_source.py"
        placeholder.write_text(f'"""{type(module).__name__} was captured live by fact.optimize; its source file '
                               'is unknown, so the composed ModelNew.py cannot import it."""\n')
        ir["source"] = str(placeholder)
    graph = out / "graph.json"
    capture.write_ir(ir, str(graph))
    plan, realized, composed = out / "plan.json", out / "realized.json", out / "composed"
    _run([binary, "discover", str(graph), "-o", str(plan), *_tolerance_args(tolerance)], "discover")
    _run([binary, "realize", str(plan), "-o", str(realized), *_tolerance_args(tolerance)], "realize")
    if composed.exists():
        shutil.rmtree(composed)
    _run([binary, "compose", str(realized), "-o", str(composed)], "compose")
    manifest = composed / "fact_manifest.json"
    if not manifest.is_file():
        raise FactError(f"`fact compose` wrote no {manifest}")
    return runtime.install(module, str(manifest))
