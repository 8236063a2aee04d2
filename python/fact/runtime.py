"""Installs realized kernels into a live module (docs/CONTRACTS.md §7).

    fact.runtime.install(module, "OUT/fact_manifest.json")

re-traces the module with fact.capture.trace (so fx node names equal the IR
ids), replaces each manifest pattern's nodes by one call of `fact_gemm(operands,
entry)` -- the custom op `torch.ops.fact.gemm` (with a fake impl for
torch.compile and an autograd formula), called directly in eager inference --
and makes `module.forward` run the rewritten graph. A pattern carrying
`fused_epilogue` (its kernel runs the whole epilogue chain, docs/CONTRACTS.md
§6) replaces every node up to the chain's output; the chain's leaves become
kernel operands read live from the module / graph like A and B. The
GraphModule is stored with object.__setattr__, so it is NOT a submodule:
state_dict keys and parameters stay exactly the module's.

Ablation: `install(..., patterns="rule:attention")` or $FACT_PATTERNS binds
only the patterns select_patterns() names; the rest run in PyTorch.

Operand hand-offs (manifest "handoffs", docs/CONTRACTS.md §7.1): an installed
producer (a GEMM or LayerNorm pattern) and the GEMM pattern reading its output
as A, whose libraries share an image format, are fused: the producer writes
the consumer's pre-split A operand instead of its output. Fused pairs that
share a pattern (LayerNorm -> GEMM -> GEMM) become one call running the whole
chain (_HandoffEntry). `install(..., handoffs=False)` or $FACT_HANDOFFS=0 keeps
every pattern on its own.

Fallbacks (each one warns once, naming the pattern and the reason):
- at install: the library fails to load, its can_implement rejects the
  binding, the pattern's nodes are not in the re-traced graph -> the original
  nodes stay;
- at run time: operands whose dtype/device/strides do not fit the binding
  (after making them contiguous), can_implement rejecting the real pointers,
  a failed launch -> the op runs the original nodes instead.

Test seam: `set_kernel_loader(fn)` replaces `fact.kernel.GemmKernel` as the
function `library path -> kernel object`; the object needs `name`,
`device_type`, `can_implement`, `workspace_size` and `run` (see GemmKernel).

Hazard: the rewritten forward reads parameters, buffers and submodules from
the module at every call, but the patterns' kernels were chosen for the
captured shapes and dtypes: a module converted to another dtype falls back
(with a warning) until it is optimized again.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import types
import warnings
from typing import Any, Mapping

import torch
import torch.fx

from . import capture as _capture
from . import kernel as _kernel

_kernel_loader = _kernel.GemmKernel
_ENTRIES: dict[int, "_PatternEntry"] = {}
_ids = itertools.count()
_lock = threading.Lock()


def set_kernel_loader(loader):
    """Test seam: replace the library loader; returns the previous one."""
    global _kernel_loader
    previous, _kernel_loader = _kernel_loader, loader
    return previous


class _Fallback(Exception):
    pass


class _Ref:
    """A reference to another node's value inside a pattern program."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


_SHAPE_METHODS = ("size", "dim", "numel")
_SHAPE_ATTRIBUTES = ("shape", "ndim")


def _is_shape_read(op: str, target, args) -> bool:
    """A step or node that reads only the shape of its first argument."""
    import builtins

    if op == "call_method":
        return target in _SHAPE_METHODS
    return op == "call_function" and target is builtins.getattr and len(args) > 1 and args[1] in _SHAPE_ATTRIBUTES


def _non_tensor(node: torch.fx.Node) -> bool:
    """True for nodes that evidently produce python values (size(), .shape, .item()
    and arithmetic on them); such values cannot be custom-op tensor operands."""
    import builtins
    import operator

    if _is_shape_read(node.op, node.target, node.args):
        return True
    if node.op == "call_method" and node.target in ("tolist", "item"):
        return True
    if node.op == "call_function" and node.target is builtins.getattr:
        return node.args[1] in ("dtype", "device", "is_cuda")
    if node.op == "call_function" and getattr(node.target, "__module__", None) in ("_operator", "operator"):
        nodes = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if node.target is operator.getitem:
            return bool(nodes) and _non_tensor(nodes[0])
        return bool(nodes) and all(_non_tensor(a) for a in nodes)
    return False


class _Plan:
    """What execute() needs for one input signature, computed once."""

    __slots__ = ("shape", "strides", "dtype", "contiguous", "binder", "workspace_bytes")

    def __init__(self, shape, strides, dtype, contiguous, binder):
        self.shape, self.strides, self.dtype = shape, strides, dtype
        self.contiguous = contiguous  # binding ids to make contiguous first
        self.binder = binder          # fact.kernel.ProblemBinder: the problem without the pointers
        self.workspace_bytes = None   # from the kernel, on first use

    def bound(self, id_slots, operands) -> dict:
        """{binding tensor id: tensor} from `operands`, made contiguous where the plan
        says; slots holding None (a hand-off consumer's A) are left out."""
        return {ident: (operands[i].contiguous() if ident in self.contiguous else operands[i])
                for ident, i in id_slots.items() if operands[i] is not None}

    def new_output(self, device):
        if self.strides is None:
            return torch.empty(self.shape, dtype=self.dtype, device=device)
        return torch.empty_strided(self.shape, self.strides, dtype=self.dtype, device=device)


def _signature(operands) -> tuple:
    """The key an entry caches its per-call plan under: every operand's shape, strides, dtype, device."""
    return tuple((tuple(t.shape), tuple(t.stride()), t.dtype, t.device) for t in operands)


def _meta_like(tensor):
    return torch.empty_strided(tuple(tensor.shape), tuple(tensor.stride()), dtype=tensor.dtype, device="meta")


class _EntryBase:
    """What an installed pattern keeps (GEMM: _PatternEntry; layernorm /
    attention: fact.runtime_ops.OpEntry): its kernel, binding and the original
    program, and the one-warning-per-reason fallback."""

    def __init__(self, pattern: dict, kern, root, steps, operand_keys, external, id_slots, module_params):
        self.pattern = pattern
        self.pid = pattern.get("id", "?")
        self.kernel = kern
        self.root = root
        self.steps = steps                # [(name, op, target, args, kwargs)] with _Ref placeholders
        self.operand_keys = operand_keys  # [("node", name) | ("attr", target)]
        self.external = external          # {external node name: operand index}
        self.id_slots = id_slots          # {binding tensor id: operand index}
        self.module_params = module_params  # {module target: [(param name, operand index)]}
        self._plans: dict = {}
        self._warned: set = set()

    # -- the original nodes -------------------------------------------------
    def _run_steps(self, operands) -> dict:
        """Runs the original program on `operands`; {node name: value}."""
        env = {name: operands[i] for name, i in self.external.items()}

        def resolve(value):
            return torch.fx.node.map_aggregate(value, lambda v: env[v.name] if isinstance(v, _Ref) else v)

        for name, op, target, args, kwargs in self.steps:
            args, kwargs = resolve(args), resolve(kwargs)
            if op == "call_function":
                value = target(*args, **kwargs)
            elif op == "call_method":
                value = getattr(args[0], target)(*args[1:], **kwargs)
            else:  # call_module: parameters come from the operands (fake-mode safe)
                module = self.root.get_submodule(target)
                params = {pname: operands[i] for pname, i in self.module_params.get(target, [])}
                value = torch.func.functional_call(module, params, tuple(args), kwargs)
            env[name] = value
        return env

    @staticmethod
    def _unaliased(out, operands):
        if any(out is o for o in operands) or getattr(out, "_base", None) is not None:
            out = out.clone()  # a custom op's output must not alias its inputs
        return out

    # -- kernel path --------------------------------------------------------
    def operand_device(self, operands):
        """The device of the first kernel operand (GEMM: A), where the kernel runs."""
        return operands[next(iter(self.id_slots.values()))].device

    def device_mismatch(self, operands, device, skip=()) -> str | None:
        """Why the kernel operands (but slots in `skip`) cannot run on `device`; None when they can."""
        if device.type != getattr(self.kernel, "device_type", "cuda"):
            return f"operands are on {device.type}, the kernel runs on {self.kernel.device_type}"
        if any(operands[i].device != device for i in self.id_slots.values() if i not in skip):
            return "kernel operands are on different devices"
        return None

    def warn(self, reason: str, depth: int = 0) -> None:
        """Warns once per reason; `depth` = frames between the caller's execute and here."""
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"fact: pattern {self.pid} falls back to PyTorch: {reason}", RuntimeWarning,
                          stacklevel=3 + depth)

    def launch(self, problem, device, operands, result, plan=None):
        """Runs the kernel on `problem` and returns `result` (the outputs it writes);
        on a can_implement refusal or a launch failure, warns once and returns the
        original program's value instead. A `plan` with a `workspace_bytes` field
        caches the workspace size for its input signature."""
        why = self.kernel.can_implement(problem)
        if why is not None:
            self.warn(f"can_implement: {why}", depth=1)
            return self.run_original(operands)
        size = getattr(plan, "workspace_bytes", None)
        if size is None:
            size = self.kernel.workspace_size(problem)
            if plan is not None:
                plan.workspace_bytes = size
        workspace = torch.empty(size, dtype=torch.uint8, device=device) if size else None
        try:
            self.kernel.run(problem, workspace.data_ptr() if size else 0, size, _kernel.stream_pointer(device))
        except _kernel.KernelError as exc:
            self.warn(f"launch failed: {exc}", depth=1)
            return self.run_original(operands)
        return result


class _PatternEntry(_EntryBase):
    """One installed GEMM pattern: its kernel, binding and the original program."""

    def __init__(self, pattern: dict, kern, root, steps, output_name, operand_keys, external, id_slots,
                 module_params):
        super().__init__(pattern, kern, root, steps, operand_keys, external, id_slots, module_params)
        self.output_name = output_name
        self.gemm = pattern["gemm"]
        # The pattern's fused_epilogue when its kernel runs the whole epilogue chain
        # (leaves bound like operands; docs/CONTRACTS.md §6), else None.
        self.fused = pattern.get("fused_epilogue") or None
        self.a_slot = id_slots[self.gemm["a"]["tensor"]]

    def run_original(self, operands):
        return self._unaliased(self._run_steps(operands)[self.output_name], operands)

    # -- kernel path --------------------------------------------------------
    def _plan(self, operands):
        """Per input signature: (out shape, out strides, dtype, contiguous roles) or a reason."""
        key = _signature(operands)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        device = operands[self.a_slot].device
        plan = self.device_mismatch(operands, device)
        if plan is None:
            plan = self.plan_for_meta([_meta_like(t) for t in operands])
        self._plans[key] = plan
        return plan

    def plan_for_meta(self, meta):
        """The _Plan (or the reason for none) of operands given as meta tensors."""
        with torch.no_grad():
            out = self.run_original(meta)
        return self._fit(meta, out)

    def _fit(self, meta, out):
        """Which operands must be made contiguous (and whether the output must
        be allocated dense) for the binding to address them; a str = no fit."""
        gemm = self.gemm
        tensors = {}
        contiguous = set()
        for role, ident in _kernel.binding_tensor_ids(gemm, self.fused).items():
            tensor = meta[self.id_slots[ident]]
            layout = _kernel.operand_layout(gemm, role, self.fused)
            if not _kernel.strides_match(tensor, layout):
                tensor = torch.empty(tuple(tensor.shape), dtype=tensor.dtype, device="meta")
                if not _kernel.strides_match(tensor, layout):
                    return (f"operand {role} ({ident}) of shape {list(tensor.shape)} does not fit the "
                            f"binding's layout {layout}")
                contiguous.add(ident)
            tensors[ident] = tensor
        dense_out = not _kernel.strides_match(out, _kernel.operand_layout(gemm, "d"))
        if dense_out:
            out = torch.empty(tuple(out.shape), dtype=out.dtype, device="meta")
        try:
            _kernel.check_binding_meta(gemm, tensors, out, self.fused)
        except _kernel.BindingError as exc:
            return f"run-time operands do not fit the binding: {exc}"
        return _Plan(tuple(out.shape), None if dense_out else tuple(out.stride()), out.dtype, contiguous,
                     _kernel.ProblemBinder(gemm, self.fused))

    def execute(self, operands):
        if self.kernel is None:
            return self.run_original(operands)
        plan = self._plan(operands)
        if isinstance(plan, str):
            self.warn(plan)
            return self.run_original(operands)
        device = operands[self.a_slot].device
        out = plan.new_output(device)
        # Kept until the launch: the problem points into these (contiguous copies included).
        tensors = plan.bound(self.id_slots, operands)
        # The plan checked dtypes and layouts for this exact input signature.
        problem = plan.binder.problem(tensors, out)
        return self.launch(problem, device, operands, out, plan)


class _HandoffStage:
    """One pattern of a hand-off chain (docs/CONTRACTS.md §7.1) and how _HandoffEntry
    drives it. Stage 0 is a producer of any manifest `producer_rule`; every later
    stage is a GEMM reading the previous stage's image (FactGemmProblem.a_image).
    Every stage but the last writes its output as the next stage's image in
    `image_format` (the last: None, it writes the chain's output).

    One subclass per `producer_rule` (_GemmStage, which every later stage is too;
    fact.runtime_ops.LayerNormStage) supplies: at install, from the installed entry
    and call node, `producer_refusal`, `produced_node`, `same_shape_input`,
    `format_refusal`; per call `plan`, `produced_meta`, `image_written`, `problem`,
    `refusal`, `workspace`, `run`, `output_of`."""

    def __init__(self, entry, n_operands: int, image_format: str | None):
        self.entry = entry
        self.n_operands = n_operands  # its operands in the chain's call (a later stage's without its A)
        self.image_format = image_format

    # -- install-time checks (the installed entry and call node) ---------------
    @staticmethod
    def producer_refusal(producer) -> str | None:
        """Why `producer` (an installed entry) cannot be this kind's producer; None when it can."""
        raise NotImplementedError

    @staticmethod
    def produced_node(p_call):
        """The graph node holding the producer's output (None when there is no single one)."""
        raise NotImplementedError

    @staticmethod
    def same_shape_input(producer, p_call):
        """An operand node of `p_call` with the shape of the producer's output (what its
        shape-only readers read instead once the output is not materialised), or None."""
        raise NotImplementedError

    @staticmethod
    def format_refusal(producer, consumer, image_format) -> str | None:
        """Why the two libraries cannot pass an `image_format` image; None when they can."""
        raise NotImplementedError

    # -- per call -------------------------------------------------------------
    def plan(self, ops, device, image_meta):
        """The stage's plan for this input signature, or the reason for none. `image_meta`:
        a meta tensor shaped like the A it reads from an image (None for stage 0, which
        reads its operands on its own device); `device`: the chain's."""
        raise NotImplementedError

    def produced_meta(self, plan):
        """A meta tensor shaped like the stage's output under `plan`."""
        raise NotImplementedError

    def image_written(self, plan) -> int:
        """Bytes of the image the stage writes under `plan`."""
        raise NotImplementedError

    def problem(self, plan, ops, out, a_image: int, d_image: int):
        """(problem, tensors it points into) reading A from `a_image` (0: from `ops`) and
        writing `out` (None: the image at `d_image`); raises fact.kernel.BindingError."""
        raise NotImplementedError

    def refusal(self, problem) -> str | None:
        """The library's refusal of `problem`, "<check>: <reason>"; None = ok."""
        raise NotImplementedError

    def workspace(self, problem) -> int:
        raise NotImplementedError

    def run(self, problem, d_image: int, workspace_ptr: int, workspace_bytes: int, stream: int):
        """Enqueues the stage on `stream`; raises fact.kernel.KernelError."""
        raise NotImplementedError

    def output_of(self, value):
        """The next stage's A from what the entry's execute / run_original returns."""
        raise NotImplementedError


class _GemmStage(_HandoffStage):
    """A GEMM stage: reads A from the previous stage's image (a_image) unless it is
    stage 0, and writes D as the next stage's image (d_image) unless it is the last."""

    @staticmethod
    def producer_refusal(producer) -> str | None:
        if not isinstance(producer, _PatternEntry):
            return f"the producer {producer.pid} is not an installed GEMM pattern"
        return None

    @staticmethod
    def produced_node(p_call):
        return p_call

    @staticmethod
    def same_shape_input(producer, p_call):
        return None  # D's shape is no operand's

    @staticmethod
    def format_refusal(producer, consumer, image_format) -> str | None:
        formats = {getattr(entry.kernel, "image_format", lambda: "")() for entry in (producer, consumer)}
        if formats != {image_format}:
            return f"the libraries' image formats {sorted(formats)} are not the manifest's {image_format!r}"
        return None

    def plan(self, ops, device, image_meta):
        entry = self.entry
        if image_meta is None:
            return entry._plan(ops)
        why = entry.device_mismatch(ops, device, skip=(entry.a_slot,))
        if why:
            return why
        plan = entry.plan_for_meta([image_meta if i == entry.a_slot else _meta_like(t) for i, t in enumerate(ops)])
        a_ident = entry.gemm["a"]["tensor"]
        if not isinstance(plan, str) and a_ident in plan.contiguous:
            return f"it would copy its A ({a_ident}) first"
        return plan

    def produced_meta(self, plan):
        return torch.empty_strided(plan.shape, plan.strides or _dense_strides(plan.shape), dtype=plan.dtype,
                                   device="meta")

    def image_written(self, plan) -> int:
        return self.entry.kernel.image_bytes(plan.binder.skeleton, 1)

    def image_read(self, plan) -> int:
        """Bytes of the image the stage reads as A under `plan` (every stage after the first)."""
        return self.entry.kernel.image_bytes(plan.binder.skeleton, 0)

    def problem(self, plan, ops, out, a_image, d_image):
        tensors = plan.bound(self.entry.id_slots, ops)
        return plan.binder.problem(tensors, out, a_image=a_image, d_image=d_image), tensors

    def refusal(self, problem) -> str | None:
        why = self.entry.kernel.can_implement(problem)
        return None if why is None else f"can_implement: {why}"

    def workspace(self, problem) -> int:
        return self.entry.kernel.workspace_size(problem)

    def run(self, problem, d_image, workspace_ptr, workspace_bytes, stream):
        self.entry.kernel.run(problem, workspace_ptr, workspace_bytes, stream)

    def output_of(self, value):
        return value


class _HandoffPlan:
    """Per input signature of a hand-off chain: each stage's plan, the bytes of each
    image (image i: written by stage i, read by stage i + 1) and the workspace size."""

    __slots__ = ("stages", "image_bytes", "workspace_bytes")

    def __init__(self, stages, image_bytes):
        self.stages, self.image_bytes = stages, image_bytes
        self.workspace_bytes = None


class _HandoffEntry:
    """A chain of installed patterns run as one unit (docs/CONTRACTS.md §7.1): stage
    0 writes its output as image 0, each later stage (a GEMM) reads image i - 1 as its
    pre-split A and writes image i, the last writes the chain's output; the tensors
    between them are never materialised. A pair is a chain of two. Operands: stage
    0's, then each later stage's without its A. Whatever the chain cannot do (a
    shape a plan rejects, image sizes that differ, a refusal, a failed launch) warns
    once and runs every stage unfused, each with its own fallbacks; gradients and the
    fake run the original programs."""

    def __init__(self, stages: list):
        self.stages = stages
        self.pid = "->".join(stage.entry.pid for stage in stages)
        self.root = stages[0].entry.root
        self._plans: dict = {}
        self._warned: set = set()

    def warn(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"fact: hand-off {self.pid} runs unfused: {reason}", RuntimeWarning, stacklevel=4)

    def _split(self, operands) -> list:
        """Each stage's operand list; a later stage's A slot holds None."""
        split, start = [], 0
        for index, stage in enumerate(self.stages):
            ops = list(operands[start:start + stage.n_operands])
            start += stage.n_operands
            if index:
                ops.insert(stage.entry.a_slot, None)
            split.append(ops)
        return split

    def _run_apart(self, operands, run):
        """Runs the stages one after the other with `run(entry, ops)`, each later stage
        reading the previous one's output as its A; the last one's value."""
        value = None
        for index, (stage, ops) in enumerate(zip(self.stages, self._split(operands))):
            if index:
                ops[stage.entry.a_slot] = self.stages[index - 1].output_of(value)
            value = run(stage.entry, ops)
        return value

    def run_original(self, operands):
        return self._run_apart(operands, lambda entry, ops: entry.run_original(ops))

    def _unfused(self, operands):
        return self._run_apart(operands, lambda entry, ops: entry.execute(ops))

    def _plan(self, operands):
        key = _signature(operands)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._new_plan(operands)
            self._plans[key] = plan
        return plan

    def _new_plan(self, operands):
        split = self._split(operands)
        device = self.stages[0].entry.operand_device(split[0])
        plans, image_bytes, image_meta = [], [], None
        for index, (stage, ops) in enumerate(zip(self.stages, split)):
            plan = stage.plan(ops, device, image_meta)
            if isinstance(plan, str):
                return f"{stage.entry.pid}: {plan}"
            if index:
                writer = self.stages[index - 1]
                read, written = stage.image_read(plan), writer.image_written(plans[-1])
                if read <= 0 or read != written:
                    return (f"image sizes differ: {stage.entry.pid} reads {read} bytes, {writer.entry.pid} "
                            f"writes {written}")
                image_bytes.append(read)
            image_meta = stage.produced_meta(plan)
            plans.append(plan)
        return _HandoffPlan(plans, image_bytes)

    def execute(self, operands):
        plan = self._plan(operands)
        if isinstance(plan, str):
            self.warn(plan)
            return self._unfused(operands)
        split = self._split(operands)
        device = self.stages[0].entry.operand_device(split[0])
        images = [torch.empty(size, dtype=torch.uint8, device=device) for size in plan.image_bytes]
        reads = [0] + [image.data_ptr() for image in images]   # stage i reads reads[i] (0: its own A)
        writes = reads[1:] + [0]                               # and writes writes[i] (0: `out`)
        out = plan.stages[-1].new_output(device)
        problems, kept = [], []  # kept: the tensors the problems point into, alive until the launches
        for stage, stage_plan, ops, a_image, d_image in zip(self.stages, plan.stages, split, reads, writes):
            try:
                problem, tensors = stage.problem(stage_plan, ops, None if d_image else out, a_image, d_image)
            except _kernel.BindingError as exc:
                self.warn(f"{stage.entry.pid}: run-time operands do not fit the binding: {exc}")
                return self._unfused(operands)
            why = stage.refusal(problem)
            if why is not None:
                self.warn(f"{stage.entry.pid}'s {why}")
                return self._unfused(operands)
            problems.append(problem)
            kept.append(tensors)
        if plan.workspace_bytes is None:
            plan.workspace_bytes = max(stage.workspace(problem) for stage, problem in zip(self.stages, problems))
        size = plan.workspace_bytes
        workspace = torch.empty(size, dtype=torch.uint8, device=device) if size else None
        workspace_ptr = workspace.data_ptr() if size else 0
        stream = _kernel.stream_pointer(device)
        try:  # one stream: each launch follows the one writing its image
            for stage, problem, d_image in zip(self.stages, problems, writes):
                stage.run(problem, d_image, workspace_ptr, size, stream)
        except _kernel.KernelError as exc:
            self.warn(f"launch failed: {exc}")
            return self._unfused(operands)
        return out


def _producer_kind(handoff: dict):
    """The _HandoffStage subclass of a manifest hand-off's producer (its `producer_rule`,
    a missing one read as "gemm"); None for a rule without one."""
    kinds = {"gemm": _GemmStage, "layernorm": _runtime_ops().LayerNormStage}
    return kinds.get(handoff.get("producer_rule") or "gemm")


def _dense_strides(shape) -> tuple:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


def _original_grads(entry: int, operands, grad):
    """Gradients of the pattern's original PyTorch nodes (the kernel computes
    the same function), so training through an installed module works."""
    with torch.enable_grad():
        leaves = [o.detach().requires_grad_(o.is_floating_point()) for o in operands]
        out = _ENTRIES[entry].run_original(leaves)
        wanted = [leaf for leaf in leaves if leaf.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True))
    return [next(grads) if leaf.requires_grad else None for leaf in leaves]


class _GemmFunction(torch.autograd.Function):
    """Eager autograd wrapper: much cheaper per call than the custom op's."""

    @staticmethod
    def forward(ctx, entry, *operands):
        ctx.entry = entry
        ctx.save_for_backward(*operands)
        return _ENTRIES[entry].execute(list(operands))

    @staticmethod
    def backward(ctx, grad):
        return (None, *_original_grads(ctx.entry, ctx.saved_tensors, grad))


def fact_gemm(operands, entry: int):
    """What the rewritten graph calls. Under torch.compile: the custom op
    torch.ops.fact.gemm (fake impl, autograd formula), traced without graph
    breaks. Eager: the kernel directly, through a torch.autograd.Function when
    an operand needs a gradient. Measured on the H100 (256x64x128 linear,
    calls per second in a loop): ~38 us per call direct, ~60 us through the
    autograd.Function, ~195 us through the custom op's eager dispatch; eager
    F.linear ~24-34 us."""
    if torch.compiler.is_compiling():
        return torch.ops.fact.gemm.default(operands, entry)
    if torch.is_grad_enabled() and any(o.requires_grad for o in operands):
        return _GemmFunction.apply(entry, *operands)
    return _ENTRIES[entry].execute(operands)


@torch.library.custom_op("fact::gemm", mutates_args=())
def _fact_gemm(operands: list[torch.Tensor], entry: int) -> torch.Tensor:
    return _ENTRIES[entry].execute(operands)


@_fact_gemm.register_fake
def _fact_gemm_fake(operands, entry):
    return _ENTRIES[entry].run_original(operands)


def _save_operands(ctx, inputs, output):
    """setup_context of fact.gemm and fact.pattern (fact.runtime_ops)."""
    operands, entry = inputs
    ctx.entry = entry
    ctx.save_for_backward(*operands)


def _fact_gemm_backward(ctx, grad):
    return _original_grads(ctx.entry, ctx.saved_tensors, grad), None


_fact_gemm.register_autograd(_fact_gemm_backward, setup_context=_save_operands)


def _load_manifest(manifest) -> tuple[dict, str]:
    if isinstance(manifest, Mapping):
        return dict(manifest), os.getcwd()
    path = os.fspath(manifest)
    with open(path) as f:
        return json.load(f), os.path.dirname(os.path.abspath(path))


def _library_path(pattern: dict, base_dir: str) -> str:
    library = pattern.get("library")
    if not library:
        raise _Fallback("manifest entry has no library")
    return library if os.path.isabs(library) else os.path.join(base_dir, library)


def _pattern_nodes(gm, pattern: dict) -> tuple[dict, list]:
    """({name: node} of the re-traced graph, the pattern's node names); _Fallback
    when one of them is not in the graph."""
    graph_nodes = {n.name: n for n in gm.graph.nodes}
    names = list(pattern.get("nodes", []))
    missing = [n for n in names if n not in graph_nodes]
    if missing:
        raise _Fallback(f"nodes {missing} are not in the re-traced graph (does the module match the IR?)")
    return graph_nodes, names


class _Operands:
    """The operand list of one pattern's kernel call, built while its nodes
    become a program: `keys` [("node", name) | ("attr", target)], `external`
    {node name read from outside: operand index}, `module_params` {module
    target: [(param name, operand index)]}."""

    def __init__(self, gm, members: set):
        self.gm, self.members = gm, members
        self.keys: list[tuple[str, str]] = []
        self.external: dict[str, int] = {}
        self.module_params: dict[str, list] = {}

    def slot(self, key) -> int:
        if key not in self.keys:
            self.keys.append(key)
        return self.keys.index(key)

    def external_ref(self, arg) -> _Ref:
        self.external[arg.name] = self.slot(("node", arg.name))
        return _Ref(arg.name)

    def step(self, node, ref) -> tuple:
        """The program step of pattern node `node`, its arguments mapped by `ref`."""
        if node.op not in ("call_function", "call_method", "call_module"):
            raise _Fallback(f"node {node.name} is a {node.op}, not an operation")
        args = torch.fx.node.map_arg(node.args, ref)
        kwargs = torch.fx.node.map_arg(node.kwargs, ref)
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            named = list(module.named_parameters()) + list(module.named_buffers())
            self.module_params[node.target] = [(pname, self.slot(("attr", f"{node.target}.{pname}")))
                                               for pname, _ in named]
        return (node.name, node.op, node.target, args, kwargs)

    def bind(self, builder, tensor_ids: dict, replaced: dict) -> dict:
        """{binding tensor id: operand index} for {role: tensor id}; `replaced`
        maps an installed pattern's output to the node now producing it."""
        id_slots: dict[str, int] = {}
        for role, ident in tensor_ids.items():
            source = builder.sources.get(ident)
            if source is None:
                raise _Fallback(f"binding operand {role} names {ident!r}, unknown in the re-traced graph")
            if source[0] == "node":
                node = replaced.get(source[1].name, source[1])
                id_slots[ident] = self.slot(("node", node.name))
            elif source[0] == "param":
                id_slots[ident] = self.slot(("attr", source[1]))
            else:
                raise _Fallback(f"binding operand {role} is the constant {ident!r}")
            key = self.keys[id_slots[ident]]
            if key[0] == "node" and key[1] in self.members:
                raise _Fallback(f"binding operand {role} ({ident}) is computed inside the pattern")
        return id_slots


def _prepare(gm, builder, pattern: dict, base_dir: str, replaced: dict) -> tuple[_PatternEntry, list, torch.fx.Node]:
    """`replaced`: output node name of an already installed pattern -> its
    fact.gemm call node (a later pattern may read that output)."""
    graph_nodes, names = _pattern_nodes(gm, pattern)
    if not pattern.get("gemm"):
        raise _Fallback("no gemm binding (this runtime installs GEMM patterns)")
    outputs = pattern.get("outputs", [])
    if len(outputs) != 1 or outputs[0] not in names:
        raise _Fallback(f"expected one output among the pattern's nodes, got {outputs}")
    try:
        names, outputs, fused = _kernel.kernel_binding(pattern)
    except ValueError as e:
        raise _Fallback(str(e)) from None
    if outputs[0] not in graph_nodes:
        raise _Fallback(f"the GEMM's output {outputs[0]!r} is not in the re-traced graph")
    members = set(names)
    ordered = [n for n in gm.graph.nodes if n.name in members]  # graph order is topological

    operands = _Operands(gm, members)
    steps = []
    for node in ordered:

        def ref(arg, node=node):
            if arg.name in members:
                return _Ref(arg.name)
            if _non_tensor(arg):
                raise _Fallback(f"node {node.name} depends on the non-tensor value {arg.name}")
            return operands.external_ref(arg)

        steps.append(operands.step(node, ref))

    id_slots = operands.bind(builder, _kernel.binding_tensor_ids(pattern["gemm"], fused), replaced)
    for name, node in ((k[1], graph_nodes.get(k[1])) for k in operands.keys if k[0] == "node"):
        if node is not None and _non_tensor(node):
            raise _Fallback(f"operand {name} is not a tensor")

    try:
        kern = _kernel_loader(_library_path(pattern, base_dir))
    except (_kernel.KernelError, OSError) as exc:
        raise _Fallback(f"library failed to load: {exc}") from exc
    try:
        why = kern.can_implement(_kernel.placeholder_problem(pattern["gemm"], fused))
    except (KeyError, TypeError, ValueError) as exc:
        raise _Fallback(f"malformed gemm binding: {exc}") from exc
    if why is not None:
        raise _Fallback(f"can_implement rejects the binding: {why}")

    entry = _PatternEntry(pattern, kern, gm, steps, outputs[0], operands.keys, operands.external, id_slots,
                          operands.module_params)
    return entry, ordered, graph_nodes[outputs[0]]


def _rewrite(gm, entry: _PatternEntry, entry_id: int, ordered, out_node) -> torch.fx.Node:
    graph = gm.graph
    existing = {n.name: n for n in graph.nodes}
    with graph.inserting_before(ordered[0]):
        values = []
        for kind, key in entry.operand_keys:
            values.append(existing[key] if kind == "node" else graph.get_attr(key))
    with graph.inserting_before(out_node):
        call = graph.call_function(fact_gemm, (values, entry_id))
    out_node.replace_all_uses_with(call)
    for node in reversed(ordered):
        if not node.users:
            graph.erase_node(node)
    return call


PATTERNS_ENV = "FACT_PATTERNS"


def _root_scopes(gm) -> dict:
    """Node name -> the qualified paths of the submodules it runs inside
    (torch.fx's nn_module_stack; a call_module node is inside its own module)."""
    scopes = {}
    for node in gm.graph.nodes:
        paths = set()
        for value in (node.meta.get("nn_module_stack") or {}).values():
            path = value[0] if isinstance(value, tuple) else value
            if isinstance(path, str):
                paths.add(path)
        if node.op == "call_module":
            paths.add(node.target)
        scopes[node.name] = paths
    return scopes


def select_patterns(patterns: list, gm, selection: str | None) -> list:
    """The manifest patterns `selection` names: the ones install() binds (ablation).

    `selection` is a comma-separated list of `all`, `none`, a pattern id (`p3`),
    `rule:NAME` (the patterns of that rule) or `module:PATH` (the patterns whose
    root node runs inside the submodule PATH, e.g. `mlp` or `attn.c_proj`);
    None or "" means all. Raises ValueError for an unknown item and for a
    selection that names none of the manifest's patterns (an ablation that
    silently binds nothing would time plain PyTorch); an item that matches
    nothing while others do only warns."""
    items = [item.strip() for item in (selection or "all").split(",") if item.strip()]
    if items == ["none"]:
        return []
    if "all" in items:
        return list(patterns)
    scopes = _root_scopes(gm)
    chosen = set()
    idle = []
    for item in items:
        kind, sep, value = item.partition(":")
        if not sep:
            kind, value = "id", item
        if kind not in ("id", "rule", "module") or not value or item == "none":
            raise ValueError(f"pattern selection {selection!r}: cannot read {item!r}; items are all, none, "
                             f"a pattern id, rule:NAME or module:PATH")
        hits = []
        for index, pattern in enumerate(patterns):
            if kind == "id":
                hit = pattern.get("id") == value
            elif kind == "rule":
                hit = pattern.get("rule") == value
            else:
                hit = any(path == value or path.startswith(value + ".")
                          for path in scopes.get(pattern.get("root", ""), ()))
            if hit:
                hits.append(index)
        if not hits:
            idle.append(item)
        chosen.update(hits)
    if not chosen:
        have = ", ".join(f"{p.get('id', '?')} ({p.get('rule', '?')} at {p.get('root', '?')})" for p in patterns)
        raise ValueError(f"pattern selection {selection!r} matches none of the manifest's patterns: "
                         f"{have or 'the manifest has none'}")
    for item in idle:
        warnings.warn(f"fact: pattern selection item {item!r} matches no pattern of the manifest",
                      RuntimeWarning, stacklevel=3)
    return [pattern for index, pattern in enumerate(patterns) if index in chosen]


def _runtime_ops():
    """fact.runtime_ops (imported late: it builds on this module)."""
    from . import runtime_ops

    return runtime_ops


HANDOFFS_ENV = "FACT_HANDOFFS"


def _reads_shape_only(user: torch.fx.Node, value: torch.fx.Node) -> bool:
    """True when graph node `user` reads nothing of `value` but its shape: a shape
    query itself, or an installed pattern call whose program uses that operand only
    in shape queries (runtime_ops' python-value prelude, e.g. b, t, c = x.size())."""
    if _is_shape_read(user.op, user.target, user.args) and user.args[0] is value and \
            value not in list(user.args[1:]) + list(user.kwargs.values()):
        return True
    if user.op != "call_function" or len(user.args) != 2 or not isinstance(user.args[1], int):
        return False
    entry = _ENTRIES.get(user.args[1])
    operands = user.args[0]
    if not isinstance(entry, _EntryBase) or not isinstance(operands, (list, tuple)) or user.kwargs:
        return False
    slots = {i for i, v in enumerate(operands) if v is value}
    names = {name for name, i in entry.external.items() if i in slots}
    if not names or any(i in slots for i in getattr(entry, "id_slots", {}).values()):
        return False  # the kernel itself binds it
    for _, op, target, args, kwargs in entry.steps:
        refs = []
        torch.fx.node.map_aggregate((args, kwargs), lambda v: refs.append(v.name) if isinstance(v, _Ref) else v)
        if names & set(refs) and not (_is_shape_read(op, target, args) and isinstance(args[0], _Ref)
                                      and args[0].name in names and len(names & set(refs)) == 1
                                      and refs.count(args[0].name) == 1):
            return False
    return True


def _admit_handoff(handoff: dict, calls: dict, admitted: list) -> str | None:
    """Why a manifest hand-off cannot be fused in the installed graph (`calls`: pattern
    id -> (entry id, fact_gemm / fact_pattern call node)); None when it can, after
    pointing the shape-only readers of the producer's output at a same-shape input.
    A pair with a pattern that is not installed (an ablation) is skipped with the
    reason "". `admitted`: the pairs admitted so far (a pattern produces and consumes
    at most one)."""
    if handoff.get("producer") not in calls or handoff.get("consumer") not in calls:
        return ""
    if any(h["producer"] == handoff["producer"] or h["consumer"] == handoff["consumer"] for h in admitted):
        return "another hand-off of the manifest has the same producer or consumer"
    kind = _producer_kind(handoff)
    if kind is None:
        return f"no hand-off from a {handoff.get('producer_rule')!r} producer"
    (p_id, p_call), (q_id, q_call) = calls[handoff["producer"]], calls[handoff["consumer"]]
    producer, consumer = _ENTRIES[p_id], _ENTRIES[q_id]
    if not isinstance(consumer, _PatternEntry):
        return f"the consumer {consumer.pid} is not an installed GEMM pattern"
    why = kind.producer_refusal(producer)
    if why:
        return why
    produced = kind.produced_node(p_call)
    q_values = list(q_call.args[0])
    if produced is None or [i for i, v in enumerate(q_values) if v is produced] != [consumer.a_slot]:
        return "in the installed graph the producer's output is read by more than the consumer's A"
    # Readers of the output's shape alone (x.size() in the module, or a pattern program
    # that recomputes python values from it) may read it from a tensor of the same shape.
    stand_in = kind.same_shape_input(producer, p_call)
    shape_readers = [u for u in produced.users if u is not q_call]
    if shape_readers and (stand_in is None or not all(_reads_shape_only(u, produced) for u in shape_readers)):
        return "in the installed graph the producer's output is read by more than the consumer's A"
    why = kind.format_refusal(producer, consumer, handoff.get("format"))
    if why:
        return why
    for reader in shape_readers:
        reader.replace_input_with(produced, stand_in)
    return None


def _chains(pairs: list) -> list:
    """The admitted pairs as chains, each from its head: a pair whose consumer produces
    another pair continues into it (a pattern produces and consumes at most one)."""
    following = {pair["producer"]: pair for pair in pairs}
    consumers = {pair["consumer"] for pair in pairs}
    chains = []
    for pair in pairs:
        if pair["producer"] in consumers:
            continue  # inside a chain that starts further up
        chain = [pair]
        while chain[-1]["consumer"] in following:
            chain.append(following[chain[-1]["consumer"]])
        chains.append(chain)
    return chains


def _install_chain(gm, chain: list, calls: dict) -> None:
    """Replaces the calls of a chain of admitted pairs (a layernorm producer's
    fact_pattern call with its one getitem) by one fact_gemm call of a _HandoffEntry,
    placed where the last consumer's call was."""
    pids = [chain[0]["producer"]] + [pair["consumer"] for pair in chain]
    nodes = [calls[pid][1] for pid in pids]
    kinds = [_producer_kind(chain[0])] + [_GemmStage] * len(chain)
    formats = [pair.get("format") for pair in chain] + [None]
    stages, values = [], []
    for index, (pid, call, kind, image_format) in enumerate(zip(pids, nodes, kinds, formats)):
        entry = _ENTRIES[calls[pid][0]]
        operands = list(call.args[0])
        if index:
            del operands[entry.a_slot]  # read from the previous stage's image
        stages.append(kind(entry, len(operands), image_format))
        values += operands
    with _lock:
        entry_id = next(_ids)
        _ENTRIES[entry_id] = _HandoffEntry(stages)
    # The last call follows every stage's operands (each stage reads the one before).
    with gm.graph.inserting_before(nodes[-1]):
        fused = gm.graph.call_function(fact_gemm, (values, entry_id))
    nodes[-1].replace_all_uses_with(fused)
    produced = [kind.produced_node(call) for kind, call in zip(kinds[:-1], nodes[:-1])]
    gm.graph.erase_node(nodes[-1])
    for call, output in reversed(list(zip(nodes[:-1], produced))):  # each read only by the next, now erased
        if output is not call:
            gm.graph.erase_node(output)
        gm.graph.erase_node(call)


def install(module: torch.nn.Module, manifest, *, strict: bool = False,
            patterns: str | None = None, handoffs: bool | None = None) -> torch.nn.Module:
    """Replace each manifest pattern of `module` by its kernel; returns `module`.

    `manifest` is a path to fact_manifest.json (library paths relative to it)
    or the loaded dict. With strict=True an install-time fallback raises
    instead of warning (for tests and `fact optimize`'s end-to-end check).
    `patterns` (default: $FACT_PATTERNS, else all) binds only the patterns
    select_patterns() names; the others run in PyTorch without a warning:
    a per-pattern ablation, not a fallback. `handoffs` (default: $FACT_HANDOFFS
    != "0") runs the manifest's operand hand-offs (a GEMM or LayerNorm producer
    and a GEMM consumer whose kernels pass the intermediate as a pre-split
    image; pairs sharing a pattern run as one chain, _HandoffEntry); off, every
    pattern runs on its own."""
    data, base_dir = _load_manifest(manifest)
    if data.get("fact_manifest") != 1:
        raise ValueError(f"not a FACT manifest (version {data.get('fact_manifest')!r}, expected 1)")
    gm = _capture.trace(module)
    builder = _capture.IRBuilder(gm)
    builder.build()
    if patterns is None:
        patterns = os.environ.get(PATTERNS_ENV)
    installed = []
    replaced: dict = {}
    calls: dict = {}  # pattern id -> (entry id, fact_gemm / fact_pattern call node)
    for pattern in select_patterns(data.get("patterns", []), gm, patterns):
        pid = pattern.get("id", "?")
        try:
            try:
                if _runtime_ops().handles(pattern):  # layernorm / attention: fact.runtime_ops binds them
                    calls[pid] = _runtime_ops().install_pattern(gm, builder, pattern, base_dir, replaced)
                    installed.append(pid)
                    continue
                entry, ordered, out_node = _prepare(gm, builder, pattern, base_dir, replaced)
            except (KeyError, TypeError, ValueError) as exc:
                raise _Fallback(f"malformed manifest entry ({type(exc).__name__}: {exc})") from exc
        except _Fallback as exc:
            if strict:
                raise RuntimeError(f"fact: pattern {pid}: {exc}") from exc
            warnings.warn(f"fact: pattern {pid} falls back to PyTorch: {exc}", RuntimeWarning, stacklevel=2)
            continue
        with _lock:
            entry_id = next(_ids)
            _ENTRIES[entry_id] = entry
        out_name = out_node.name
        replaced[out_name] = _rewrite(gm, entry, entry_id, ordered, out_node)
        calls[pid] = (entry_id, replaced[out_name])
        installed.append(pid)
    if handoffs is None:
        handoffs = os.environ.get(HANDOFFS_ENV, "1") != "0"
    admitted = []
    for handoff in data.get("handoffs", []) if handoffs else []:
        why = _admit_handoff(handoff, calls, admitted)
        if why is None:
            admitted.append(handoff)
        elif why:
            if strict:
                raise RuntimeError(f"fact: hand-off {handoff.get('producer')}->{handoff.get('consumer')}: {why}")
            warnings.warn(f"fact: hand-off {handoff.get('producer')}->{handoff.get('consumer')} not used: {why}",
                          RuntimeWarning, stacklevel=2)
    for chain in _chains(admitted):
        _install_chain(gm, chain, calls)
    fused_pairs = [f"{pair['producer']}->{pair['consumer']}" for pair in admitted]
    gm.graph.lint()
    gm.recompile()
    # The rewritten code runs with `self` = the module itself, so every
    # attribute (parameters, buffers, submodules) is read live: .cuda()/.to()
    # replace buffer tensors, which a GraphModule's copied references would
    # miss. Tensors symbolic_trace kept only on the GraphModule
    # (_tensor_constant*) are attached with object.__setattr__ (not buffers,
    # not in state_dict, as in eager).
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            head = node.target.split(".")[0]
            if not hasattr(module, head):
                object.__setattr__(module, head, getattr(gm, head))
    object.__setattr__(module, "_fact_graph_module", gm)
    object.__setattr__(module, "_fact_installed", installed)
    object.__setattr__(module, "_fact_handoffs", fused_pairs)
    object.__setattr__(module, "forward", types.MethodType(type(gm).forward, module))
    return module


def installed_patterns(module) -> list:
    """Ids of the patterns install() replaced in `module` (empty if none)."""
    return list(getattr(module, "_fact_installed", []))


def installed_handoffs(module) -> list:
    """The hand-offs install() fused in `module`, as "producer->consumer" (empty if none)."""
    return list(getattr(module, "_fact_handoffs", []))


def uninstall(module) -> None:
    """Restore the module's own forward."""
    for attr in ("forward", "_fact_graph_module", "_fact_installed", "_fact_handoffs"):
        if attr in module.__dict__:
            object.__delattr__(module, attr)


def entry_for(module, pattern_id: str) -> Any:
    """The installed _PatternEntry of `pattern_id` (diagnostics and tests)."""
    for entry in _ENTRIES.values():
        if entry.pid == pattern_id and entry.root is getattr(module, "_fact_graph_module", None):
            return entry
    return None
