"""CPU tests of fact.kernel: the ctypes mirror of include/fact/kernel_abi.h and
the binding -> FactGemmProblem translation shared by worker and runtime."""
import ctypes
import re

import pytest

from fact_testutil import ROOT

from fact import kernel  # noqa: E402

_C_TYPES = {"int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32, "const void*": ctypes.c_void_p,
            "void*": ctypes.c_void_p, "float": ctypes.c_float, "FactEpilogueLeaf": kernel.FactEpilogueLeaf}
HEADER = ROOT / "include" / "fact" / "kernel_abi.h"


def header_fields(struct: str = "FactGemmProblem"):
    """[(name, C type, array length or None)] of `typedef struct <struct> {...}`."""
    text = HEADER.read_text()
    body = re.search(rf"typedef struct {struct} \{{(.*?)\}} {struct};", text, re.S).group(1)
    fields = []
    for decl in body.split(";"):
        decl = re.sub(r"/\*.*?\*/", "", decl, flags=re.S).strip()
        if not decl:
            continue
        match = re.match(r"((?:const\s+)?\w+\s*\*?)\s*(.+)", decl)
        ctype = re.sub(r"\s+", " ", match.group(1)).replace(" *", "*").strip()
        for name in match.group(2).split(","):
            array = re.match(r"(\w+)\s*\[\s*(\w+)\s*\]", name.strip())
            if array:
                length = re.search(rf"#define {array.group(2)} (\d+)", text)
                fields.append((array.group(1), ctype, int(length.group(1)) if length else array.group(2)))
            else:
                fields.append((name.strip(), ctype, None))
    return fields


def check_mirror(struct: str, mirror) -> None:
    fields = header_fields(struct)
    assert [name for name, _, _ in fields] == [name for name, _ in mirror._fields_]
    for (name, ctype, length), (_, pytype) in zip(fields, mirror._fields_):
        expected = _C_TYPES[ctype] if length is None else _C_TYPES[ctype] * length
        if length is None:
            assert expected is pytype, (name, ctype, pytype)
        else:  # ctypes array types are created per call: compare element type and length
            assert pytype._type_ is _C_TYPES[ctype] and pytype._length_ == length, (name, ctype, length, pytype)


def test_problem_struct_mirrors_the_header():
    fields = header_fields()
    assert len(fields) == 22  # ABI 3: the 18 GEMM fields + num_leaves + leaves[] + d_image + a_image
    check_mirror("FactGemmProblem", kernel.FactGemmProblem)
    check_mirror("FactEpilogueLeaf", kernel.FactEpilogueLeaf)
    header = HEADER.read_text()
    assert f"#define FACT_KERNEL_ABI_VERSION {kernel.ABI_VERSION}" in header
    assert kernel.ABI_VERSION == 4
    assert f"#define FACT_GEMM_MAX_LEAVES {kernel.MAX_LEAVES}" in header
    for kind, value in kernel.EPILOGUE_KINDS.items():
        assert re.search(rf"FACT_EPILOGUE_{kind.upper()} = {value}\b", header)


def test_problem_struct_layout_matches_the_c_compiler(tmp_path):
    """Byte offsets and size of FactGemmProblem as a C compiler lays it out
    (the ABI 2 leaves array after alpha/beta/num_leaves is where padding hides)."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")
    if cc is None:
        pytest.skip("no C compiler on PATH to lay out the header's struct")
    names = [name for name, _ in kernel.FactGemmProblem._fields_]
    prints = "".join(f'  printf("{n} %zu\\n", offsetof(FactGemmProblem, {n}));\n' for n in names)
    source = tmp_path / "layout.c"
    source.write_text("#include <stddef.h>\n#include <stdio.h>\n#include \"fact/kernel_abi.h\"\n"
                      "int main(void) {\n" + prints +
                      '  printf("sizeof %zu\\n", sizeof(FactGemmProblem));\n'
                      '  printf("leaf %zu\\n", sizeof(FactEpilogueLeaf));\n  return 0;\n}\n')
    binary = tmp_path / "layout"
    subprocess.run([cc, "-x", "c", "-I", str(ROOT / "include"), str(source), "-o", str(binary)], check=True)
    out = dict(line.split() for line in subprocess.run([str(binary)], check=True, capture_output=True,
                                                        text=True).stdout.splitlines())
    for name in names:
        assert int(out[name]) == getattr(kernel.FactGemmProblem, name).offset, name
    assert int(out["sizeof"]) == ctypes.sizeof(kernel.FactGemmProblem)
    assert int(out["leaf"]) == ctypes.sizeof(kernel.FactEpilogueLeaf)


def test_loading_a_missing_or_foreign_library_raises(tmp_path):
    with pytest.raises(kernel.KernelError, match="no such kernel library"):
        kernel.GemmKernel(str(tmp_path / "libnothing.so"))
    import ctypes.util
    import os

    libm = ctypes.util.find_library("m")
    if libm:
        for base in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"):
            path = os.path.join(base, libm)
            if os.path.exists(path):
                with pytest.raises(kernel.KernelError, match="does not export the FACT kernel ABI"):
                    kernel.GemmKernel(path)
                break


_LAYERNORM_STUB = r"""
#include <string.h>
#include "fact/kernel_abi.h"
static const char* error = "";
int fact_abi_version(void) { return FACT_KERNEL_ABI_VERSION; }
const char* fact_variant_name(void) { return "layernorm_stub"; }
const char* fact_last_error(void) { return error; }
int fact_layernorm_can_implement(const FactLayerNormProblem* p) { (void)p; return 0; }
int fact_layernorm_run(const FactLayerNormProblem* p, void* stream) { (void)p; (void)stream; return 0; }
#ifdef WITH_IMAGES
const char* fact_layernorm_image_formats(void) { return "fmt-a;fmt-b"; }
size_t fact_layernorm_image_bytes(const FactLayerNormProblem* p, const char* format) {
  return strcmp(format, "fmt-b") == 0 ? (size_t)(p->rows * p->cols * 2) : 0;
}
int fact_layernorm_image_can_implement(const FactLayerNormProblem* p, const char* format) {
  if (p->y) { error = "y must be null in image mode"; return 3; }
  if (strcmp(format, "fmt-b") != 0) { error = "format not written"; return 4; }
  return 0;
}
int fact_layernorm_run_image(const FactLayerNormProblem* p, const char* format, void* image, void* stream) {
  (void)format; (void)stream;
  if (!image) { error = "no image"; return 5; }
  memset(image, 0x5a, (size_t)(p->rows * p->cols * 2));
  return 0;
}
#endif
"""


def layernorm_stub(tmp_path, with_images: bool):
    """A LayerNorm library built from _LAYERNORM_STUB (ABI 4 image exports only with `with_images`)."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH to build a stub library")
    source = tmp_path / "stub.c"
    source.write_text(_LAYERNORM_STUB)
    library = tmp_path / f"liblayernorm_stub{'_images' if with_images else ''}.so"
    subprocess.run([cc, "-shared", "-fPIC", "-I", str(ROOT / "include"), *(["-DWITH_IMAGES"] if with_images else []),
                    str(source), "-o", str(library)], check=True)
    from fact import op_kernels

    return op_kernels.LayerNormKernel(str(library)), op_kernels


def test_layernorm_image_entry_points(tmp_path):
    lib, op_kernels = layernorm_stub(tmp_path, with_images=True)
    header = HEADER.read_text()
    for export in ("const char* fact_layernorm_image_formats(void);", "size_t fact_layernorm_image_bytes(",
                   "int fact_layernorm_image_can_implement(", "int fact_layernorm_run_image("):
        assert export in header
    assert lib.image_formats() == ["fmt-a", "fmt-b"]
    problem = op_kernels.FactLayerNormProblem(rows=4, cols=8)
    assert (lib.image_bytes(problem, "fmt-b"), lib.image_bytes(problem, "fmt-a")) == (64, 0)
    assert lib.image_can_implement(problem, "fmt-b") is None
    assert lib.image_can_implement(problem, "fmt-a") == "format not written"
    image = (ctypes.c_uint8 * 64)()
    lib.run_image(problem, "fmt-b", ctypes.addressof(image), 0)
    assert bytes(image) == b"\x5a" * 64
    with pytest.raises(kernel.KernelError, match="no image"):
        lib.run_image(problem, "fmt-b", 0, 0)
    problem.y = 4096
    assert lib.image_can_implement(problem, "fmt-b") == "y must be null in image mode"


def test_a_layernorm_library_without_image_exports_writes_no_image(tmp_path):
    lib, op_kernels = layernorm_stub(tmp_path, with_images=False)
    problem = op_kernels.FactLayerNormProblem(rows=4, cols=8)
    assert lib.image_formats() == []
    assert lib.image_bytes(problem, "fmt-b") == 0
    assert "writes no operand images" in lib.image_can_implement(problem, "fmt-b")
    with pytest.raises(kernel.KernelError, match="writes no operand images"):
        lib.run_image(problem, "fmt-b", 4096, 0)
    assert lib.can_implement(problem) is None  # the plain LayerNorm still loads and runs


torch = pytest.importorskip("torch")


def binding(batch, m, n, k, a, b, d, epilogue=None, dtype="float32"):
    return {"batch": batch, "m": m, "n": n, "k": k, "a": a, "b": b, "d": d,
            "epilogue": epilogue or {"kind": "none", "tensor": None, "ld": 0, "batch_stride": 0,
                                     "alpha": 1.0, "beta": 0.0},
            "element_a": dtype, "element_b": dtype, "element_d": dtype}


def test_strides_match_folds_batch_into_m_and_rejects_transposes():
    x = torch.empty(4, 8, 32)
    assert kernel.strides_match(x, [(32, 1), (32, 32)])           # row A, m = 4*8 folded
    assert not kernel.strides_match(x.transpose(0, 1), [(32, 1), (32, 32)])
    w = torch.empty(16, 32)
    assert kernel.strides_match(w, [(32, 1), (16, 32)])           # B col (n x k weight), ld = 32
    assert not kernel.strides_match(w.t(), [(32, 1), (16, 32)])
    assert kernel.strides_match(torch.empty(1, 16), [(16, 1)])    # size-1 dims carry no addressing
    assert not kernel.strides_match(torch.empty(16, 2), [(16, 1)])


def test_problem_from_binding_linear_3d_with_bias():
    x, w, bias = torch.randn(4, 8, 32), torch.randn(16, 32), torch.randn(16)
    out = torch.empty(4, 8, 16)
    gemm = binding(1, 32, 16, 32, {"tensor": "x", "layout": "row", "ld": 32, "batch_stride": 0},
                   {"tensor": "w", "layout": "col", "ld": 32, "batch_stride": 0},
                   {"tensor": "y", "ld": 16, "batch_stride": 0},
                   {"kind": "bias", "tensor": "bias", "ld": 0, "batch_stride": 0, "alpha": 1.0, "beta": 1.0})
    p = kernel.problem_from_binding(gemm, {"x": x, "w": w, "bias": bias}, out)
    assert (p.batch, p.m, p.n, p.k, p.ld_a, p.ld_b, p.ld_d, p.ld_e) == (1, 32, 16, 32, 32, 32, 16, 0)
    assert (p.a, p.b, p.d, p.e) == (x.data_ptr(), w.data_ptr(), out.data_ptr(), bias.data_ptr())
    assert (p.alpha, p.beta) == (1.0, 1.0)
    with pytest.raises(kernel.BindingError, match="operand a"):
        kernel.problem_from_binding(gemm, {"x": x.transpose(0, 1), "w": w, "bias": bias}, out)
    with pytest.raises(kernel.BindingError, match="float64"):
        kernel.problem_from_binding(gemm, {"x": x.double(), "w": w, "bias": bias}, out)
    with pytest.raises(kernel.BindingError, match="not provided"):
        kernel.problem_from_binding(gemm, {"x": x, "w": w}, out)


def test_problem_from_binding_batched_shared_operand():
    a, b = torch.randn(3, 8, 16), torch.randn(16, 4)
    out = torch.empty(3, 8, 4)
    gemm = binding(3, 8, 4, 16, {"tensor": "a", "layout": "row", "ld": 16, "batch_stride": 128},
                   {"tensor": "b", "layout": "row", "ld": 4, "batch_stride": 0},
                   {"tensor": "o", "ld": 4, "batch_stride": 32})
    p = kernel.problem_from_binding(gemm, {"a": a, "b": b}, out)
    assert (p.batch, p.batch_stride_a, p.batch_stride_b, p.batch_stride_d, p.e, p.beta) == (3, 128, 0, 32, None, 0.0)
    skeleton = kernel.problem_skeleton(gemm)
    assert (skeleton.a, skeleton.m, skeleton.batch_stride_a) == (None, 8, 128)
    placeholder = kernel.placeholder_problem(gemm)  # install-time check: non-null, aligned, no E
    assert placeholder.a and placeholder.b and placeholder.d and placeholder.e is None
    assert all(ptr % 256 == 0 for ptr in (placeholder.a, placeholder.b, placeholder.d))
    assert placeholder.batch_stride_a == 128
