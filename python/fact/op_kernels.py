"""ctypes access to LayerNorm and attention kernel libraries (include/fact/kernel_abi.h:
FactLayerNormProblem / FactAttentionProblem and their entry points) and the
functions that turn a plan pattern's `layernorm` / `attention` payload
(docs/CONTRACTS.md §2.1) plus torch tensors into a problem struct. The worker
(fact.worker_ops) and the runtime (fact.runtime_ops) both build problems here.

Hazard: the Structure classes mirror the C structs field by field; the CPU test
tests/python/test_fact_op_kernels.py parses the header and compares.
"""
from __future__ import annotations

import ctypes
from typing import Mapping

from . import kernel as _kernel
from .kernel import BindingError, KernelError


class FactLayerNormProblem(ctypes.Structure):
    _fields_ = [
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("x", ctypes.c_void_p),
        ("x_row_stride", ctypes.c_int64),
        ("residual", ctypes.c_void_p),
        ("residual_row_stride", ctypes.c_int64),
        ("sum", ctypes.c_void_p),
        ("sum_row_stride", ctypes.c_int64),
        ("weight", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("y_row_stride", ctypes.c_int64),
        ("eps", ctypes.c_float),
    ]


class FactAttentionProblem(ctypes.Structure):
    _fields_ = [
        ("batch", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("seq_q", ctypes.c_int64),
        ("seq_k", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("head_dim_v", ctypes.c_int64),
        ("q", ctypes.c_void_p),
        ("q_stride_batch", ctypes.c_int64),
        ("q_stride_head", ctypes.c_int64),
        ("q_stride_seq", ctypes.c_int64),
        ("k", ctypes.c_void_p),
        ("k_stride_batch", ctypes.c_int64),
        ("k_stride_head", ctypes.c_int64),
        ("k_stride_seq", ctypes.c_int64),
        ("v", ctypes.c_void_p),
        ("v_stride_batch", ctypes.c_int64),
        ("v_stride_head", ctypes.c_int64),
        ("v_stride_seq", ctypes.c_int64),
        ("o", ctypes.c_void_p),
        ("o_stride_batch", ctypes.c_int64),
        ("o_stride_head", ctypes.c_int64),
        ("o_stride_seq", ctypes.c_int64),
        ("scale", ctypes.c_float),
        ("causal", ctypes.c_int32),
    ]


class _OpLibrary(_kernel.KernelLibrary):
    """A kernel library exporting fact_<kind>_can_implement / _run (and, for
    attention, _workspace_size). Same interface as fact.kernel.GemmKernel:
    can_implement(problem) -> None | reason, workspace_size(problem), run(problem,
    workspace_ptr, workspace_bytes, stream_ptr) raising KernelError."""

    kind = ""
    problem_type: type = ctypes.Structure
    has_workspace = False

    @property
    def abi(self) -> str:
        return self.kind

    def _declare(self, lib) -> None:
        ptr = ctypes.POINTER(self.problem_type)
        self._can = getattr(lib, f"fact_{self.kind}_can_implement")
        self._can.restype = ctypes.c_int
        self._can.argtypes = [ptr]
        self._run = getattr(lib, f"fact_{self.kind}_run")
        self._run.restype = ctypes.c_int
        if self.has_workspace:
            self._workspace = getattr(lib, f"fact_{self.kind}_workspace_size")
            self._workspace.restype = ctypes.c_size_t
            self._workspace.argtypes = [ptr]
            self._run.argtypes = [ptr, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        else:
            self._run.argtypes = [ptr, ctypes.c_void_p]

    def can_implement(self, problem) -> str | None:
        code = self._can(ctypes.byref(problem))
        return None if code == 0 else self._rejection(code)

    def workspace_size(self, problem) -> int:
        return int(self._workspace(ctypes.byref(problem))) if self.has_workspace else 0

    def run(self, problem, workspace_ptr: int, workspace_bytes: int, stream_ptr: int) -> None:
        if self.has_workspace:
            code = self._run(ctypes.byref(problem), ctypes.c_void_p(workspace_ptr or None),
                             ctypes.c_size_t(workspace_bytes), ctypes.c_void_p(stream_ptr or None))
        else:
            code = self._run(ctypes.byref(problem), ctypes.c_void_p(stream_ptr or None))
        if code != 0:
            raise self._run_failed(code)


class LayerNormKernel(_OpLibrary):
    """A LayerNorm library; besides can_implement / run it may write y as a GEMM's
    pre-split A operand image (ABI 4, docs/CONTRACTS.md §4.1): image_formats,
    image_bytes, image_can_implement, run_image. A library without those exports
    (built before ABI 4) loads and writes no image: image_formats() is empty."""

    kind = "layernorm"
    problem_type = FactLayerNormProblem

    def _declare(self, lib) -> None:
        super()._declare(lib)
        ptr = ctypes.POINTER(FactLayerNormProblem)
        signatures = {
            "fact_layernorm_image_formats": (ctypes.c_char_p, []),
            "fact_layernorm_image_bytes": (ctypes.c_size_t, [ptr, ctypes.c_char_p]),
            "fact_layernorm_image_can_implement": (ctypes.c_int, [ptr, ctypes.c_char_p]),
            "fact_layernorm_run_image": (ctypes.c_int, [ptr, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]),
        }
        found = {name: getattr(lib, name, None) for name in signatures}
        # All four or none: a library exporting only some cannot hand an image on.
        self._image = found if all(found.values()) else None
        for name, function in (self._image or {}).items():
            function.restype, function.argtypes = signatures[name]

    def _image_entry(self, suffix: str):
        return self._image[f"fact_layernorm_{suffix}"] if self._image else None

    def image_formats(self) -> list[str]:
        """The operand-image formats the library writes; [] for none or an older library."""
        formats = self._image_entry("image_formats")
        text = (formats() or b"").decode(errors="replace") if formats else ""
        return [name for name in text.split(";") if name]

    def image_bytes(self, problem: FactLayerNormProblem, format: str) -> int:
        """Bytes of y's image in `format`; 0 when the library does not write it."""
        size = self._image_entry("image_bytes")
        return int(size(ctypes.byref(problem), format.encode())) if size else 0

    def image_can_implement(self, problem: FactLayerNormProblem, format: str) -> str | None:
        """None when run_image can write `problem`'s y in `format`, else the reason."""
        check = self._image_entry("image_can_implement")
        if check is None:
            return f"{self.name} writes no operand images (built before kernel ABI 4)"
        code = check(ctypes.byref(problem), format.encode())
        return None if code == 0 else self._rejection(code)

    def run_image(self, problem: FactLayerNormProblem, format: str, image_ptr: int, stream_ptr: int) -> None:
        """Enqueues the LayerNorm writing y as a `format` image at `image_ptr`
        (image_bytes long, 256-byte aligned) instead of to problem.y; raises KernelError."""
        run = self._image_entry("run_image")
        if run is None:
            raise KernelError(f"{self.name} writes no operand images (built before kernel ABI 4)")
        code = run(ctypes.byref(problem), format.encode(), ctypes.c_void_p(image_ptr or None),
                   ctypes.c_void_p(stream_ptr or None))
        if code != 0:
            raise self._run_failed(code)


class AttentionKernel(_OpLibrary):
    kind = "attention"
    problem_type = FactAttentionProblem
    has_workspace = True


LOADERS = {"layernorm": LayerNormKernel, "attention": AttentionKernel}


def load_kernel(rule: str, library_path: str):
    """The library of a `rule` pattern (KernelError when it does not load)."""
    if rule not in LOADERS:
        raise KernelError(f"no kernel loader for rule {rule!r}")
    return LOADERS[rule](library_path)


# ---------------------------------------------------------------------------
# LayerNorm binding

def row_stride(tensor, cols: int):
    """Elements between rows when `tensor`'s last dim is contiguous (length
    `cols`) and its leading dims collapse into one stride; None otherwise."""
    if tensor.dim() == 0 or int(tensor.shape[-1]) != cols or (cols > 1 and tensor.stride(-1) != 1):
        return None
    rows = tensor.numel() // cols if cols else 0
    if rows <= 1:
        return cols
    dims = [(int(s), int(st)) for s, st in zip(tensor.shape[:-1], tensor.stride()[:-1]) if s != 1]
    stride = dims[-1][1]
    expected = stride
    for size, st in reversed(dims):
        if st != expected:
            return None
        expected *= size
    return stride


def layernorm_tensor_ids(ln: Mapping) -> dict:
    """{role: tensor id} of what a layernorm binding reads: x, or a and b; weight, bias."""
    ids = {}
    residual = ln.get("residual")
    if residual:
        ids["x"], ids["residual"] = residual["a"]["tensor"], residual["b"]["tensor"]
    else:
        ids["x"] = ln["x"]["tensor"]
    for role in ("weight", "bias"):
        if ln.get(role):
            ids[role] = ln[role]
    return ids


def layernorm_output_ids(ln: Mapping) -> list:
    """Pattern output ids in order: the residual sum first when written, then y."""
    residual = ln.get("residual") or {}
    return ([residual["sum"]["tensor"]] if residual.get("sum") else []) + [ln["y"]["tensor"]]


def layernorm_skeleton(ln: Mapping) -> FactLayerNormProblem:
    """The payload's rows, cols and eps with null pointers and zero strides
    (what image_bytes needs before any tensor exists)."""
    problem = FactLayerNormProblem()
    problem.rows, problem.cols, problem.eps = int(ln["rows"]), int(ln["cols"]), float(ln.get("eps", 1e-5))
    return problem


def layernorm_problem(ln: Mapping, tensors: Mapping[str, object], outputs: Mapping[str, object], *,
                      y_as_image: bool = False) -> FactLayerNormProblem:
    """FactLayerNormProblem reading `tensors` (id -> tensor) and writing
    `outputs` (id -> tensor; y, and sum when the payload writes it). Row strides
    come from the tensors themselves (the ABI takes them at run time); raises
    BindingError when a tensor's dtype, device, length or row layout do not fit.
    `y_as_image`: for fact_layernorm_run_image, which writes y as an operand
    image: y is not bound (null, stride 0; a y in `outputs` is ignored), every
    other operand is checked as usual."""
    rows, cols = int(ln["rows"]), int(ln["cols"])
    element = _kernel.torch_dtype(ln.get("element", "float32"))
    problem = layernorm_skeleton(ln)
    device = None
    row_roles = {"x": "x_row_stride", "residual": "residual_row_stride"}
    named = {role: tensors.get(ident) for role, ident in layernorm_tensor_ids(ln).items()}
    out_ids = layernorm_output_ids(ln)
    if len(out_ids) == 2:
        named["sum"] = outputs.get(out_ids[0])
        row_roles["sum"] = "sum_row_stride"
    if not y_as_image:
        named["y"] = outputs.get(out_ids[-1])
        row_roles["y"] = "y_row_stride"
    for role, tensor in named.items():
        if tensor is None:
            raise BindingError(f"layernorm operand {role} was not provided")
        if tensor.dtype != element:
            raise BindingError(f"layernorm operand {role} is {tensor.dtype}, the kernel takes {element}")
        device = device or tensor.device
        if tensor.device != device:
            raise BindingError(f"layernorm operand {role} is on {tensor.device}, others on {device}")
        if role in ("weight", "bias"):
            if tuple(tensor.shape) != (cols,) or (cols > 1 and tensor.stride(0) != 1):
                raise BindingError(f"layernorm {role} {list(tensor.shape)} is not a contiguous vector of {cols}")
        else:
            if tensor.numel() != rows * cols:
                raise BindingError(f"layernorm operand {role} has {tensor.numel()} elements, the binding "
                                   f"{rows} x {cols}")
            stride = row_stride(tensor, cols)
            if stride is None:
                raise BindingError(f"layernorm operand {role} (shape {list(tensor.shape)}, strides "
                                   f"{list(tensor.stride())}) has no single row stride")
            setattr(problem, row_roles[role], stride)
        setattr(problem, role, tensor.data_ptr())
    return problem


# ---------------------------------------------------------------------------
# Attention binding

def attention_tensor_ids(att: Mapping) -> dict:
    """{role: tensor id} of q, k, v (often one packed tensor)."""
    return {role: att[role]["tensor"] for role in ("q", "k", "v")}


def attention_causal(att: Mapping) -> bool:
    return bool(att.get("causal"))


def _extent(spec: Mapping, att: Mapping, role: str) -> int:
    """One past the largest element offset operand `role` addresses."""
    seq = att["seq_k"] if role in ("k", "v") else att["seq_q"]
    dim = att["head_dim_v"] if role in ("v", "o") else att["head_dim"]
    s = spec["strides"]
    return (int(spec.get("offset", 0)) + (att["batch"] - 1) * s["batch"] + (att["heads"] - 1) * s["head"]
            + (seq - 1) * s["seq"] + (dim - 1) * s.get("dim", 1) + 1)


def attention_output_reason(att: Mapping, shape) -> str | None:
    """None when a dense output of `shape` is the layout the payload's o strides address,
    else why not. The strides must be a dense layout of (batch, heads, seq_q, head_dim_v) in
    some order (merged heads [B, T, H*dv] and a bare SDPA's [B, H, T, dv] both are), and
    `shape` must group those sizes in that order: each dim the product of a run of them."""
    sizes = {"batch": att["batch"], "head": att["heads"], "seq": att["seq_q"], "dim": att["head_dim_v"]}
    strides = att["o"]["strides"]
    roles = sorted((r for r in sizes if sizes[r] != 1), key=lambda r: -strides[r])  # outermost first
    inner = 1
    for role in reversed(roles):
        if strides[role] != inner:
            return f"o strides {dict(strides)} are not a dense layout of the output"
        inner *= sizes[role]
    ordered = [sizes[r] for r in roles]
    described = " x ".join(f"{r} {sizes[r]}" for r in roles)
    i = 0
    for d in (int(d) for d in shape if d != 1):
        product = 1
        while product < d and i < len(ordered):
            product *= ordered[i]
            i += 1
        if product != d:
            return f"output {list(shape)} is not the captured [{described}] layout"
    if i != len(ordered):
        return f"output {list(shape)} is not the captured [{described}] layout"
    return None


def attention_problem(att: Mapping, tensors: Mapping[str, object], out) -> FactAttentionProblem:
    """FactAttentionProblem reading q/k/v from `tensors` (id -> tensor) at the
    payload's offsets and strides (pointer = data_ptr + offset * itemsize) and
    writing `out`. The source tensors must be dense (contiguous) as captured:
    the payload's strides were derived from that layout. Raises BindingError."""
    element = _kernel.torch_dtype(att.get("element", "float32"))
    problem = FactAttentionProblem()
    for key in ("batch", "heads", "seq_q", "seq_k", "head_dim", "head_dim_v"):
        setattr(problem, key, int(att[key]))
    problem.scale = float(att["scale"])
    problem.causal = 1 if attention_causal(att) else 0
    device = out.device
    for role, ident in list(attention_tensor_ids(att).items()) + [("o", None)]:
        tensor = out if role == "o" else tensors.get(ident)
        if tensor is None:
            raise BindingError(f"attention operand {role} ({ident}) was not provided")
        if tensor.dtype != element:
            raise BindingError(f"attention operand {role} is {tensor.dtype}, the kernel takes {element}")
        if tensor.device != device:
            raise BindingError(f"attention operand {role} is on {tensor.device}, the output on {device}")
        if not tensor.is_contiguous():
            raise BindingError(f"attention operand {role} ({ident or 'output'}) is not contiguous; the payload's "
                               f"strides address a dense tensor")
        spec = att[role]
        if _extent(spec, att, role) > tensor.numel():
            raise BindingError(f"attention operand {role} ({list(tensor.shape)}) is smaller than the payload "
                               f"addresses ({_extent(spec, att, role)} elements)")
        s = spec["strides"]
        setattr(problem, role, tensor.data_ptr() + int(spec.get("offset", 0)) * tensor.element_size())
        setattr(problem, f"{role}_stride_batch", int(s["batch"]))
        setattr(problem, f"{role}_stride_head", int(s["head"]))
        setattr(problem, f"{role}_stride_seq", int(s["seq"]))
    return problem
