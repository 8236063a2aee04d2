"""ctypes access to one realized kernel library (include/fact/kernel_abi.h, ABI 4)
and the ONE function that turns a plan pattern's "gemm" binding
(docs/CONTRACTS.md §2) plus torch tensors into a FactGemmProblem: the worker
uses `problem_from_binding`, the runtime the `ProblemBinder` it delegates to.

Hazard: FactGemmProblem below mirrors the C struct field by field; the CPU
test tests/python/test_kernel_abi.py parses the header and compares.
"""
from __future__ import annotations

import ctypes
import os
from typing import Mapping

ABI_VERSION = 4

EPILOGUE_KINDS = {"none": 0, "bias": 1, "c": 2}

MAX_LEAVES = 8  # FACT_GEMM_MAX_LEAVES


class FactEpilogueLeaf(ctypes.Structure):
    _fields_ = [
        ("ptr", ctypes.c_void_p),
        ("ld", ctypes.c_int64),
        ("batch_stride", ctypes.c_int64),
    ]


class FactGemmProblem(ctypes.Structure):
    _fields_ = [
        ("batch", ctypes.c_int64),
        ("m", ctypes.c_int64),
        ("n", ctypes.c_int64),
        ("k", ctypes.c_int64),
        ("a", ctypes.c_void_p),
        ("ld_a", ctypes.c_int64),
        ("batch_stride_a", ctypes.c_int64),
        ("b", ctypes.c_void_p),
        ("ld_b", ctypes.c_int64),
        ("batch_stride_b", ctypes.c_int64),
        ("d", ctypes.c_void_p),
        ("ld_d", ctypes.c_int64),
        ("batch_stride_d", ctypes.c_int64),
        ("e", ctypes.c_void_p),
        ("ld_e", ctypes.c_int64),
        ("batch_stride_e", ctypes.c_int64),
        ("alpha", ctypes.c_float),
        ("beta", ctypes.c_float),
        ("num_leaves", ctypes.c_int32),
        ("leaves", FactEpilogueLeaf * MAX_LEAVES),
        ("d_image", ctypes.c_void_p),
        ("a_image", ctypes.c_void_p),
    ]

    def describe(self) -> str:
        return (f"batch={self.batch} m={self.m} n={self.n} k={self.k} ld_a={self.ld_a} "
                f"ld_b={self.ld_b} ld_d={self.ld_d} ld_e={self.ld_e} alpha={self.alpha} beta={self.beta}")


class KernelError(RuntimeError):
    """A kernel library failure: `code` from the ABI call, text from fact_last_error()."""

    def __init__(self, message: str, code: int = -1):
        super().__init__(message)
        self.code = code


class BindingError(ValueError):
    """Run-time tensors do not fit a pattern's gemm binding (shape, stride, dtype, device)."""


class KernelLibrary:
    """One kernel library of the FACT ABI (include/fact/kernel_abi.h): loads it,
    declares the entry points every library exports (fact_abi_version,
    fact_variant_name, fact_last_error) and the subclass's own (`_declare`), and
    checks the ABI version. Raises KernelError when the file is missing, does not
    load, does not export the `abi` entry points or has another ABI version."""

    device_type = "cuda"
    abi = "kernel"  # names the entry points in the "does not export" error

    def __init__(self, library_path: str):
        self.path = os.path.abspath(library_path)
        if not os.path.isfile(self.path):
            raise KernelError(f"{self.path}: no such kernel library")
        try:
            self._lib = ctypes.CDLL(self.path, mode=getattr(os, "RTLD_LOCAL", 0) | getattr(os, "RTLD_NOW", 0))
        except OSError as exc:
            raise KernelError(f"cannot load {self.path}: {exc}") from exc
        lib = self._lib
        try:
            lib.fact_abi_version.restype = ctypes.c_int
            lib.fact_abi_version.argtypes = []
            lib.fact_variant_name.restype = ctypes.c_char_p
            lib.fact_variant_name.argtypes = []
            lib.fact_last_error.restype = ctypes.c_char_p
            lib.fact_last_error.argtypes = []
            self._declare(lib)
        except AttributeError as exc:
            raise KernelError(f"{self.path} does not export the FACT {self.abi} ABI: {exc}") from exc
        version = lib.fact_abi_version()
        if version != ABI_VERSION:
            raise KernelError(f"{self.path}: kernel ABI version {version}, this FACT expects {ABI_VERSION}")
        self.name = (lib.fact_variant_name() or b"").decode(errors="replace")

    def _declare(self, lib) -> None:
        """Sets restype/argtypes of the subclass's entry points (AttributeError when one is missing)."""
        raise NotImplementedError

    def last_error(self) -> str:
        text = self._lib.fact_last_error()
        return text.decode(errors="replace") if text else ""

    def _rejection(self, code: int) -> str:
        """The reason of a nonzero can_implement `code`."""
        return self.last_error() or f"can_implement returned {code}"

    def _run_failed(self, code: int) -> KernelError:
        return KernelError(f"{self.name}: run failed ({code}): {self.last_error()}", code)


class GemmKernel(KernelLibrary):
    """One variant library. `device_type` is what its pointers must live on.

    The runtime accepts any object with this interface (see
    fact.runtime.set_kernel_loader): can_implement(problem) -> None | reason,
    workspace_size(problem) -> int, run(problem, workspace_ptr, workspace_bytes,
    stream_ptr) raising KernelError, attributes `name` and `device_type`."""

    def _declare(self, lib) -> None:
        lib.fact_gemm_can_implement.restype = ctypes.c_int
        lib.fact_gemm_can_implement.argtypes = [ctypes.POINTER(FactGemmProblem)]
        lib.fact_gemm_workspace_size.restype = ctypes.c_size_t
        lib.fact_gemm_workspace_size.argtypes = [ctypes.POINTER(FactGemmProblem)]
        lib.fact_gemm_run.restype = ctypes.c_int
        lib.fact_gemm_run.argtypes = [ctypes.POINTER(FactGemmProblem), ctypes.c_void_p,
                                      ctypes.c_size_t, ctypes.c_void_p]
        lib.fact_gemm_image_format.restype = ctypes.c_char_p
        lib.fact_gemm_image_format.argtypes = []
        lib.fact_gemm_image_bytes.restype = ctypes.c_size_t
        lib.fact_gemm_image_bytes.argtypes = [ctypes.POINTER(FactGemmProblem), ctypes.c_int]

    def can_implement(self, problem: FactGemmProblem) -> str | None:
        """None when the variant can run `problem`, else the library's reason."""
        code = self._lib.fact_gemm_can_implement(ctypes.byref(problem))
        if code == 0:
            return None
        return self._rejection(code)

    def workspace_size(self, problem: FactGemmProblem) -> int:
        return int(self._lib.fact_gemm_workspace_size(ctypes.byref(problem)))

    def image_format(self) -> str:
        """The operand-image format the variant reads (a_image) and writes
        (d_image); "" when it does neither (kernel_abi.h)."""
        return (self._lib.fact_gemm_image_format() or b"").decode(errors="replace")

    def image_bytes(self, problem: FactGemmProblem, role: int) -> int:
        """Bytes of `problem`'s A image (role 0) or of its D as the next GEMM's A image (role 1)."""
        return int(self._lib.fact_gemm_image_bytes(ctypes.byref(problem), role))

    def run(self, problem: FactGemmProblem, workspace_ptr: int, workspace_bytes: int, stream_ptr: int) -> None:
        code = self._lib.fact_gemm_run(ctypes.byref(problem), ctypes.c_void_p(workspace_ptr or None),
                                       ctypes.c_size_t(workspace_bytes), ctypes.c_void_p(stream_ptr or None))
        if code != 0:
            raise self._run_failed(code)


# ---------------------------------------------------------------------------
# Binding -> problem

def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool,
             "int8": torch.int8, "uint8": torch.uint8}
    if name not in table:
        raise BindingError(f"unknown dtype {name!r}")
    return table[name]


def strides_match(tensor, logical) -> bool:
    """True when `tensor`'s elements sit where `logical` says.

    `logical` lists (size, stride) per logical dimension, innermost first; a
    logical dimension may span several tensor dimensions (a 3-D operand whose
    batch is folded into M). Size-1 dimensions carry no addressing."""
    tdims = [(int(s), int(st)) for s, st in zip(tensor.shape, tensor.stride()) if s != 1][::-1]
    i = 0
    for size, stride in logical:
        if size == 1:
            continue
        covered = 1
        while covered < size:
            if i >= len(tdims):
                return False
            tsize, tstride = tdims[i]
            if tstride != stride * covered:
                return False
            covered *= tsize
            i += 1
        if covered != size:
            return False
    return i == len(tdims)


def _leaf_spec(fused: Mapping | None, role: str) -> Mapping:
    for spec in (fused or {}).get("inputs", []):
        if spec["name"] == role and int(spec.get("abi_leaf", -1)) >= 0:
            return spec
    raise BindingError(f"no epilogue leaf {role!r} in the binding")


def operand_layout(gemm: Mapping, role: str, fused: Mapping | None = None):
    """Logical (size, stride) dims, innermost first, of operand `role` (a, b,
    d, e, or an epilogue-chain leaf l<k> of `fused`, the pattern's
    fused_epilogue: docs/CONTRACTS.md §6)."""
    batch, m, n, k = (int(gemm[key]) for key in ("batch", "m", "n", "k"))
    if role not in ("a", "b", "d", "e"):
        spec = _leaf_spec(fused, role)
        kind = spec["kind"]
        dims = {"row": [(n, 1)], "col": [(m, 1)], "scalar": [],
                "matrix": [(n, 1), (m, int(spec.get("ld", 0)))]}.get(kind)
        if dims is None:
            raise BindingError(f"epilogue leaf {role!r} has unknown kind {kind!r}")
        batch_stride = int(spec.get("batch_stride", 0))
        if batch > 1 and batch_stride != 0:
            dims.append((batch, batch_stride))
        return dims
    if role == "e":
        spec = gemm["epilogue"]
        if spec["kind"] == "bias":
            return [(n, 1)]
        dims = [(n, 1), (m, int(spec["ld"]))]
    else:
        spec = gemm[role]
        ld = int(spec["ld"])
        layout = spec.get("layout", "row")
        rows, cols = {"a": (m, k), "b": (k, n), "d": (m, n)}[role]
        row_stride, col_stride = (ld, 1) if layout == "row" else (1, ld)
        # Innermost first in the order the bound tensor lists its dims: (rows, cols), or
        # (cols, rows) for a column-major operand bound before an absorbed transpose;
        # "order" says where the tensor differs from that (docs/CONTRACTS.md §2).
        order = spec.get("order") or ("rows_cols" if layout == "row" else "cols_rows")
        dims = [(cols, col_stride), (rows, row_stride)] if order == "rows_cols" else \
            [(rows, row_stride), (cols, col_stride)]
    batch_stride = int(spec.get("batch_stride", 0))
    if batch > 1 and batch_stride != 0:
        dims.append((batch, batch_stride))
    return dims


def leaf_roles(fused: Mapping | None) -> list[tuple[str, str]]:
    """[(leaf name, tensor id)] of a fused epilogue in ABI order (leaves[i])."""
    specs = [spec for spec in (fused or {}).get("inputs", []) if int(spec.get("abi_leaf", -1)) >= 0]
    specs.sort(key=lambda spec: int(spec["abi_leaf"]))
    if [int(spec["abi_leaf"]) for spec in specs] != list(range(len(specs))):
        raise BindingError("fused epilogue leaves are not numbered 0..k-1")
    if len(specs) > MAX_LEAVES:
        raise BindingError(f"{len(specs)} epilogue leaves; the ABI passes at most {MAX_LEAVES}")
    return [(spec["name"], spec["tensor"]) for spec in specs]


def binding_tensor_ids(gemm: Mapping, fused: Mapping | None = None) -> dict[str, str]:
    """{role: tensor id} of the operands a binding reads (a, b, e when used,
    and the epilogue-chain leaves l<k> of a fused epilogue)."""
    ids = {"a": gemm["a"]["tensor"], "b": gemm["b"]["tensor"]}
    epilogue = gemm.get("epilogue") or {"kind": "none"}
    if epilogue.get("kind", "none") != "none":
        ids["e"] = epilogue["tensor"]
    for name, tensor in leaf_roles(fused):
        ids[name] = tensor
    return ids


def check_operand(gemm: Mapping, role: str, tensor, fused: Mapping | None = None) -> None:
    layout = operand_layout(gemm, role, fused)
    if not strides_match(tensor, layout):
        raise BindingError(f"operand {role} (shape {list(tensor.shape)}, strides {list(tensor.stride())}) "
                           f"does not match the binding's layout {layout}")


def problem_from_binding(gemm: Mapping, tensors: Mapping[str, object], out,
                         fused: Mapping | None = None) -> FactGemmProblem:
    """FactGemmProblem for `gemm` (a plan pattern's "gemm" object) reading
    operands from `tensors` (tensor id -> torch.Tensor) and writing `out`,
    after checking every operand's dtype, device and layout.

    Raises BindingError when a tensor's dtype, device, shape or strides do not
    fit the binding: the caller then makes the operand contiguous or falls
    back. Pointers are taken from the tensors, so keep them alive while the
    kernel runs. `fused`: the pattern's fused_epilogue (its leaves are read
    from `tensors` too; `out` is then the chain's output). A caller that
    checked once per input signature (the runtime) keeps a ProblemBinder."""
    epilogue = gemm.get("epilogue") or {"kind": "none"}
    kind = epilogue.get("kind", "none")
    if kind not in EPILOGUE_KINDS:
        raise BindingError(f"unknown epilogue kind {kind!r}")
    operands = {}
    for role, ident in binding_tensor_ids(gemm, fused).items():
        if ident not in tensors:
            raise BindingError(f"operand {role} names tensor {ident!r}, which was not provided")
        operands[role] = tensors[ident]
    operands["d"] = out
    for role, tensor in operands.items():
        wanted = gemm.get(_ELEMENT_KEY.get(role, "element_d"))
        if wanted and tensor.dtype != torch_dtype(wanted):
            raise BindingError(f"operand {role} is {tensor.dtype}, the kernel takes {wanted}")
        if tensor.device != out.device:
            raise BindingError(f"operand {role} is on {tensor.device}, the output on {out.device}")
        check_operand(gemm, role, tensor, fused)
    return ProblemBinder(gemm, fused).problem(tensors, out)


class ProblemBinder:
    """What problem_from_binding computes once per binding: the skeleton (sizes,
    leading dimensions, batch strides, scalars) and which tensor id fills which
    pointer. problem() then only copies the skeleton and sets the pointers; the
    runtime keeps one per input signature (its per-call cost is the host time
    before a kernel launch). No checks: problem_from_binding makes them."""

    __slots__ = ("skeleton", "a", "b", "e", "leaves")

    def __init__(self, gemm: Mapping, fused: Mapping | None = None):
        self.skeleton = problem_skeleton(gemm, fused)
        ids = binding_tensor_ids(gemm, fused)
        self.a, self.b, self.e = ids["a"], ids["b"], ids.get("e")
        self.leaves = [tensor for _name, tensor in leaf_roles(fused)]

    def problem(self, tensors: Mapping[str, object], out, *, a_image: int = 0, d_image: int = 0) -> FactGemmProblem:
        """The problem for `tensors` (tensor id -> torch.Tensor; A may be absent with
        `a_image`) writing `out` (None with `d_image`); keep the tensors alive while
        the kernel runs."""
        problem = FactGemmProblem.from_buffer_copy(self.skeleton)
        problem.a = None if a_image else tensors[self.a].data_ptr()
        problem.b = tensors[self.b].data_ptr()
        problem.d = None if out is None else out.data_ptr()
        if self.e is not None:
            problem.e = tensors[self.e].data_ptr()
        for index, ident in enumerate(self.leaves):
            problem.leaves[index].ptr = tensors[ident].data_ptr()
        problem.a_image = a_image or None
        problem.d_image = d_image or None
        return problem


# dtype key of each role in the gemm binding; leaves and e have D's element type.
_ELEMENT_KEY = {"a": "element_a", "b": "element_b", "d": "element_d", "e": "element_d"}


# Placeholder device addresses for a can_implement check before any data
# exists (install time): distinct, non-null, 1 MiB aligned. can_implement is a
# pure host check (kernel_abi.h): it may test pointer alignment, never
# dereference, so these are safe to pass; never pass them to run().
PLACEHOLDER_ADDRESSES = {"a": 1 << 20, "b": 2 << 20, "d": 3 << 20, "e": 4 << 20}
PLACEHOLDER_LEAF_ADDRESS = 5 << 20  # leaf i at this + i MiB


def placeholder_problem(gemm: Mapping, fused: Mapping | None = None) -> FactGemmProblem:
    """problem_skeleton with PLACEHOLDER_ADDRESSES for the operands the binding
    uses (real variants reject null operand pointers)."""
    problem = problem_skeleton(gemm, fused)
    problem.a, problem.b, problem.d = (PLACEHOLDER_ADDRESSES[r] for r in ("a", "b", "d"))
    if "e" in binding_tensor_ids(gemm):
        problem.e = PLACEHOLDER_ADDRESSES["e"]
    for index, _ in enumerate(leaf_roles(fused)):
        problem.leaves[index].ptr = PLACEHOLDER_LEAF_ADDRESS + (index << 20)
    return problem


def problem_skeleton(gemm: Mapping, fused: Mapping | None = None) -> FactGemmProblem:
    """The binding's sizes, leading dimensions, batch strides and scalars with
    null pointers (filled in by ProblemBinder / placeholder_problem)."""
    epilogue = gemm.get("epilogue") or {"kind": "none"}
    kind = epilogue.get("kind", "none")
    batch = int(gemm["batch"])

    def stride_of(spec):
        return int(spec.get("batch_stride", 0)) if batch > 1 else 0

    problem = FactGemmProblem()
    problem.batch, problem.m, problem.n, problem.k = (int(gemm[key]) for key in ("batch", "m", "n", "k"))
    problem.ld_a, problem.batch_stride_a = int(gemm["a"]["ld"]), stride_of(gemm["a"])
    problem.ld_b, problem.batch_stride_b = int(gemm["b"]["ld"]), stride_of(gemm["b"])
    problem.ld_d, problem.batch_stride_d = int(gemm["d"]["ld"]), stride_of(gemm["d"])
    if kind == "none":
        problem.ld_e, problem.batch_stride_e, problem.beta = 0, 0, 0.0
    else:
        problem.ld_e = int(epilogue.get("ld", 0)) if kind == "c" else 0
        problem.batch_stride_e = stride_of(epilogue)
        problem.beta = float(epilogue.get("beta", 1.0))
    problem.alpha = float(epilogue.get("alpha", 1.0))
    specs = {spec["name"]: spec for spec in (fused or {}).get("inputs", [])}
    roles = leaf_roles(fused)
    problem.num_leaves = len(roles)
    for index, (name, _tensor) in enumerate(roles):
        problem.leaves[index].ld = int(specs[name].get("ld", 0))
        problem.leaves[index].batch_stride = int(specs[name].get("batch_stride", 0)) if batch > 1 else 0
    return problem


def check_binding_meta(gemm: Mapping, tensors: Mapping[str, object], out, fused: Mapping | None = None) -> None:
    """problem_from_binding's dtype/layout checks without touching data
    pointers (works on meta and fake tensors). Raises BindingError."""
    operands = {role: tensors[ident] for role, ident in binding_tensor_ids(gemm, fused).items()}
    operands["d"] = out
    for role, tensor in operands.items():
        wanted = gemm.get(_ELEMENT_KEY.get(role, "element_d"))
        if wanted and tensor.dtype != torch_dtype(wanted):
            raise BindingError(f"operand {role} is {tensor.dtype}, the kernel takes {wanted}")
        check_operand(gemm, role, tensor, fused)


def stream_pointer(device) -> int:
    """The current CUDA stream of `device` as an integer (0 for CPU)."""
    import torch

    if device.type != "cuda":
        return 0
    return int(torch.cuda.current_stream(device).cuda_stream)


def kernel_binding(pattern: dict) -> tuple[list, list, dict | None]:
    """(nodes, outputs, fused_epilogue) a GEMM kernel computes for a plan
    pattern. A pattern realize bound to an EVT variant carries
    `fused_epilogue` (docs/CONTRACTS.md §6): the kernel computes the whole
    epilogue chain, so every node is replaced and the output is the chain's.
    Otherwise the kernel computes the GEMM core (gemm_core). Raises
    ValueError for an inconsistent pattern."""
    fused = pattern.get("fused_epilogue")
    if not fused:
        nodes, outputs = gemm_core(pattern)
        return nodes, outputs, None
    chain = pattern.get("epilogue_chain") or {}
    output = fused.get("output")
    if output != chain.get("output") or list(pattern.get("outputs", [])) != [output]:
        raise ValueError(f"fused epilogue output {output!r} is not the pattern's chain output "
                         f"{chain.get('output')!r} / outputs {pattern.get('outputs')}")
    return list(pattern.get("nodes", [])), [output], fused


def gemm_core(pattern: dict) -> tuple[list, list]:
    """(nodes, outputs) a GEMM-core kernel computes for a plan pattern. A
    pattern whose output is computed after the GEMM (an epilogue chain realize
    did not fuse: no fused_epilogue, see kernel_binding) is bound as its GEMM
    core: its nodes up to and including the root, with D as output; the
    chain's nodes keep running in PyTorch, reading D. Mirrors realize's
    reduction (docs/CONTRACTS.md §6); the worker verifies and the runtime
    installs exactly this core. Raises ValueError when the pattern's root is
    not among its nodes."""
    names = list(pattern.get("nodes", []))
    outputs = list(pattern.get("outputs", []))
    d = pattern["gemm"]["d"]["tensor"]
    if outputs == [d]:
        return names, outputs
    root = pattern.get("root")
    if root not in names:
        raise ValueError(f"pattern root {root!r} is not among its nodes {names}")
    return names[:names.index(root) + 1], [d]
