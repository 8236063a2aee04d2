"""GPU: `torch.compile(model, backend=fact)` end to end.

Dynamo hands FACT the captured FX graph (parameters arrive as graph inputs);
the backend realizes its patterns and returns the graph with the kernels
bound. The compiled module must match eager on fresh random inputs and the
composed manifest must bind at least one pattern (a backend that silently
ran everything in PyTorch would pass the numeric check alone). strict=True:
a FACT failure raises here instead of falling back with a warning.

Same requirements as test_end_to_end.py; each test skips and says which is missing.
"""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_end_to_end import _MISSING, ROOT, _load  # noqa: E402

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))


def test_torch_compile_backend_binds_fact_kernels(tmp_path):
    import torch

    import fact.dynamo

    example = _load(ROOT / "examples" / "small" / "linear_gelu_mlp.py", "dynamo_linear_gelu_mlp")
    torch.manual_seed(0)
    model = example.Model(*example.get_init_inputs()).cuda().eval()
    backend = fact.dynamo.make_backend(tolerance=1e-4, out_dir=tmp_path / "fact", strict=True)
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        for trial in range(5):
            torch.manual_seed(100 + trial)
            with torch.device("cuda"):
                (x,) = example.get_inputs()
            out = compiled(x)
            expected = model(x)
            assert not torch.isnan(out).any(), f"trial {trial}: NaN in the compiled output"
            assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4), (
                f"trial {trial}: max abs diff {(out - expected).abs().max().item():.3e}")
    manifests = sorted((tmp_path / "fact").rglob("fact_manifest.json"))
    assert manifests, f"no fact_manifest.json under {tmp_path / 'fact'}: the backend composed nothing"
    bound = [p for m in manifests for p in json.loads(m.read_text())["patterns"]]
    assert bound, "the backend bound no FACT pattern"
    print("bound:", [(p.get("id"), p.get("rule"), p.get("variant")) for p in bound])
