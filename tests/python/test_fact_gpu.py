"""GPU tests of the Python edge with real ABI libraries: a naive CUDA GEMM
(tests/python/gpu/naive_gemm.cu, exported through templates/fact_export.cuh)
compiled with nvcc, loaded by fact.kernel, verified and timed by
`python -m fact.worker`, installed into a module by fact.runtime.

Skips (saying why) without a CUDA device or without nvcc; set
$FACT_NAIVE_LIB_DIR to a folder of prebuilt lib<name>.so to run without nvcc.
"""
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest

from fact_testutil import ROOT, bias_epilogue, gemm_binding

torch = pytest.importorskip("torch")

if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)

from fact import capture, kernel, runtime  # noqa: E402

# name -> (row A, row B, epilogue, bug)
VARIANTS = {"naive_tn": (1, 0, 0, 0), "naive_tn_bias": (1, 0, 1, 0), "naive_nn": (1, 1, 0, 0),
            "naive_tn_bug": (1, 0, 0, 1)}


def _nvcc():
    for candidate in (os.environ.get("FACT_NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    prebuilt = os.environ.get("FACT_NAIVE_LIB_DIR")
    if prebuilt:
        paths = {name: os.path.join(prebuilt, f"lib{name}.so") for name in VARIANTS}
        if all(os.path.exists(p) for p in paths.values()):
            return paths
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set FACT_NVCC or FACT_NAIVE_LIB_DIR)")
    major, minor = torch.cuda.get_device_capability()
    out = tmp_path_factory.mktemp("naive")
    paths = {}
    for name, (row_a, row_b, epi, bug) in VARIANTS.items():
        path = out / f"lib{name}.so"
        command = [nvcc, "-O2", "-shared", "-Xcompiler", "-fPIC", "-std=c++17", f"-I{ROOT / 'templates'}",
                   f"-I{ROOT / 'include'}", f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}",
                   f"-DFACT_ROW_A={row_a}", f"-DFACT_ROW_B={row_b}", f"-DFACT_EPI={epi}", f"-DFACT_BUG={bug}",
                   f'-DFACT_NAME="{name}"', str(ROOT / "tests" / "python" / "gpu" / "naive_gemm.cu"),
                   "-o", str(path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        paths[name] = str(path)
    return paths


def test_gemm_kernel_ctypes(libs):
    k = kernel.GemmKernel(libs["naive_tn_bias"])
    assert k.name == "naive_tn_bias"
    empty = kernel.FactGemmProblem()
    assert k.can_implement(empty) == "empty problem"
    assert k.workspace_size(empty) == 0
    with pytest.raises(kernel.KernelError, match="empty problem"):
        k.run(empty, 0, 0, kernel.stream_pointer(torch.device("cuda")))


class MatmulT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.empty(192, 128))

    def forward(self, x):
        return x @ self.w.t()


PATTERN = {"id": "p0", "rule": "gemm", "root": "matmul", "nodes": ["t", "matmul"], "inputs": ["x", "w"],
           "outputs": ["matmul"], "dtype": "float32",
           "gemm": gemm_binding(256, 192, 128)}


def test_worker_verifies_and_times_on_the_gpu(libs, tmp_path):
    with torch.device("meta"):
        module, x = MatmulT(), torch.rand(256, 128)
    ir_path = tmp_path / "graph.json"
    capture.write_ir(capture.capture_module(module, [x]), str(ir_path))
    names = ["naive_tn", "naive_tn_bug", "naive_nn"]
    candidates = [{"name": n, "library": libs[n], "math": "f32"} for n in names]
    candidates.append({"name": "gone", "library": str(tmp_path / "libgone.so"), "math": "f32"})
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"fact_job": 1, "ir": str(ir_path), "pattern": PATTERN, "tolerance": 1e-4,
                               "trials": 5, "timing": {"warmup": 3, "reps": 20}, "candidates": candidates}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    result = subprocess.run([sys.executable, "-m", "fact.worker", "--job", str(job)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    results = {line["name"]: line for line in lines if line["event"] == "result"}
    assert [line["event"] for line in lines] == ["begin", "result"] * 4
    ok = results["naive_tn"]
    assert ok["status"] == "ok", ok
    assert ok["median_ms"] > 0 and ok["baseline_median_ms"] > 0 and ok["kb_pass"]
    assert results["naive_tn_bug"]["status"] == "wrong", results["naive_tn_bug"]
    assert results["naive_nn"]["status"] == "wrong", results["naive_nn"]
    assert results["gone"]["status"] == "launch_error"
    print(json.dumps(results, indent=1))


class Linear3d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(128, 64)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_runtime_runs_the_kernel_on_the_gpu(libs):
    torch.manual_seed(0)
    module = Linear3d().cuda()
    x = torch.randn(4, 64, 128, device="cuda")
    expected = module(x)
    pattern = {"id": "p0", "rule": "gemm", "nodes": ["fc"], "inputs": ["x", "fc_weight", "fc_bias"],
               "outputs": ["fc"], "library": libs["naive_tn_bias"], "variant": "naive_tn_bias", "math": "f32",
               "gemm": gemm_binding(256, 64, 128, "x", "fc_weight", "fc", bias_epilogue("fc_bias"))}
    keys = list(module.state_dict())
    runtime.install(module, {"fact_manifest": 1, "patterns": [pattern]}, strict=True)
    assert list(module.state_dict()) == keys
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any fallback would warn
        got = module(x)
        torch.cuda.synchronize()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)
    # a non-contiguous input is made contiguous; a CPU input falls back with a warning
    torch.testing.assert_close(module(x.transpose(0, 1).contiguous().transpose(0, 1)), expected,
                               rtol=1e-4, atol=1e-4)
    module_cpu_input = x.cpu()
    module.cpu()
    with pytest.warns(RuntimeWarning, match="operands are on cpu"):
        torch.testing.assert_close(module(module_cpu_input), expected.cpu(), rtol=1e-4, atol=1e-4)
