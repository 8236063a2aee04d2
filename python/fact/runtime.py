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

Operand hand-offs (manifest "handoffs", docs/CONTRACTS.md §7.1): a pair of
installed GEMM patterns whose libraries share an image format becomes one
call (_HandoffEntry): the producer writes the consumer's pre-split A operand
instead of its fp32 output. `install(..., handoffs=False)` or
$FACT_HANDOFFS=0 keeps every pattern on its own.

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


def _non_tensor(node: torch.fx.Node) -> bool:
    """True for nodes that evidently produce python values (size(), .shape and
    arithmetic on them); such values cannot be custom-op tensor operands."""
    import builtins
    import operator

    if node.op == "call_method" and node.target in ("size", "dim", "numel", "tolist", "item"):
        return True
    if node.op == "call_function" and node.target is builtins.getattr:
        return node.args[1] in ("shape", "ndim", "dtype", "device", "is_cuda")
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


class _HandoffPlan:
    """Per input signature of a hand-off pair: both patterns' _Plans and the image size."""

    __slots__ = ("producer", "consumer", "image_bytes", "workspace_bytes")

    def __init__(self, producer, consumer, image_bytes):
        self.producer, self.consumer, self.image_bytes = producer, consumer, image_bytes
        self.workspace_bytes = None


class _HandoffEntry:
    """Two installed GEMM patterns run as one unit (docs/CONTRACTS.md §7.1): the
    producer's kernel writes its output as the consumer's pre-split A image
    (FactGemmProblem.d_image), the consumer reads it (a_image), and the fp32
    tensor between them is never materialised. Operands: the producer's, then
    the consumer's without its A. Whatever the pair cannot do (a shape the
    plans reject, can_implement, a failed launch) warns once and runs the two
    patterns unfused, each with its own fallbacks."""

    def __init__(self, producer: _PatternEntry, consumer: _PatternEntry, n_producer: int, handoff: dict):
        self.producer, self.consumer = producer, consumer
        self.n_producer = n_producer
        self.a_index = consumer.a_slot
        self.handoff = handoff
        self.pid = f"{producer.pid}->{consumer.pid}"
        self.root = producer.root
        self._plans: dict = {}
        self._warned: set = set()

    def warn(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"fact: hand-off {self.pid} runs unfused: {reason}", RuntimeWarning, stacklevel=4)

    def _split(self, operands):
        p_ops = list(operands[:self.n_producer])
        q_ops = list(operands[self.n_producer:])
        q_ops.insert(self.a_index, None)
        return p_ops, q_ops

    def run_original(self, operands):
        p_ops, q_ops = self._split(operands)
        q_ops[self.a_index] = self.producer.run_original(p_ops)
        return self.consumer.run_original(q_ops)

    def _unfused(self, operands):
        p_ops, q_ops = self._split(operands)
        q_ops[self.a_index] = self.producer.execute(p_ops)
        return self.consumer.execute(q_ops)

    def _plan(self, operands):
        key = _signature(operands)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._new_plan(operands)
            self._plans[key] = plan
        return plan

    def _new_plan(self, operands):
        p_ops, q_ops = self._split(operands)
        plan_p = self.producer._plan(p_ops)
        if isinstance(plan_p, str):
            return f"producer {self.producer.pid}: {plan_p}"
        device = p_ops[self.producer.a_slot].device
        why = self.consumer.device_mismatch(q_ops, device, skip=(self.a_index,))
        if why:
            return f"consumer {self.consumer.pid}: {why}"
        produced = torch.empty_strided(plan_p.shape, plan_p.strides or _dense_strides(plan_p.shape),
                                       dtype=plan_p.dtype, device="meta")
        meta = [produced if i == self.a_index else _meta_like(t) for i, t in enumerate(q_ops)]
        plan_q = self.consumer.plan_for_meta(meta)
        if isinstance(plan_q, str):
            return f"consumer {self.consumer.pid}: {plan_q}"
        a_ident = self.consumer.gemm["a"]["tensor"]
        if a_ident in plan_q.contiguous:
            return f"the consumer would copy its A ({a_ident}) first"
        image = self.consumer.kernel.image_bytes(plan_q.binder.skeleton, 0)
        written = self.producer.kernel.image_bytes(plan_p.binder.skeleton, 1)
        if image <= 0 or image != written:
            return f"image sizes differ: the consumer reads {image} bytes, the producer writes {written}"
        return _HandoffPlan(plan_p, plan_q, image)

    def execute(self, operands):
        plan = self._plan(operands)
        if isinstance(plan, str):
            self.warn(plan)
            return self._unfused(operands)
        p_ops, q_ops = self._split(operands)
        device = p_ops[self.producer.a_slot].device
        producer, consumer = self.producer, self.consumer
        image = torch.empty(plan.image_bytes, dtype=torch.uint8, device=device)
        pp, pq = plan.producer, plan.consumer
        out = pq.new_output(device)
        # Kept until the launches: the problems point into these (contiguous copies included).
        tensors_p, tensors_q = pp.bound(producer.id_slots, p_ops), pq.bound(consumer.id_slots, q_ops)
        problem_p = pp.binder.problem(tensors_p, None, d_image=image.data_ptr())
        problem_q = pq.binder.problem(tensors_q, out, a_image=image.data_ptr())
        for entry, problem in ((producer, problem_p), (consumer, problem_q)):
            why = entry.kernel.can_implement(problem)
            if why is not None:
                self.warn(f"{entry.pid}'s can_implement: {why}")
                return self._unfused(operands)
        if plan.workspace_bytes is None:
            plan.workspace_bytes = max(producer.kernel.workspace_size(problem_p),
                                       consumer.kernel.workspace_size(problem_q))
        size = plan.workspace_bytes
        workspace = torch.empty(size, dtype=torch.uint8, device=device) if size else None
        stream = _kernel.stream_pointer(device)
        try:  # one stream: the consumer's launch follows the producer's
            producer.kernel.run(problem_p, workspace.data_ptr() if size else 0, size, stream)
            consumer.kernel.run(problem_q, workspace.data_ptr() if size else 0, size, stream)
        except _kernel.KernelError as exc:
            self.warn(f"launch failed: {exc}")
            return self._unfused(operands)
        return out


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


def _install_handoff(gm, handoff: dict, calls: dict) -> str | None:
    """Replaces the fact_gemm calls of a manifest hand-off's producer and consumer
    (`calls`: pattern id -> (entry id, call node)) by one _HandoffEntry call.
    Returns why it did not (None when it did); a pair with a pattern that is not
    installed (an ablation) is skipped with the reason ""."""
    if handoff.get("producer") not in calls or handoff.get("consumer") not in calls:
        return ""
    (p_id, p_call), (q_id, q_call) = calls[handoff["producer"]], calls[handoff["consumer"]]
    producer, consumer = _ENTRIES[p_id], _ENTRIES[q_id]
    q_values = list(q_call.args[0])
    if list(p_call.users) != [q_call] or [i for i, v in enumerate(q_values) if v is p_call] != [consumer.a_slot]:
        return "in the installed graph the producer's output is read by more than the consumer's A"
    formats = {getattr(entry.kernel, "image_format", lambda: "")() for entry in (producer, consumer)}
    if formats != {handoff.get("format")}:
        return (f"the libraries' image formats {sorted(formats)} are not the manifest's "
                f"{handoff.get('format')!r}")
    p_values = list(p_call.args[0])
    entry = _HandoffEntry(producer, consumer, len(p_values), handoff)
    with _lock:
        entry_id = next(_ids)
        _ENTRIES[entry_id] = entry
    del q_values[consumer.a_slot]
    with gm.graph.inserting_before(q_call):
        call = gm.graph.call_function(fact_gemm, (p_values + q_values, entry_id))
    q_call.replace_all_uses_with(call)
    gm.graph.erase_node(q_call)
    gm.graph.erase_node(p_call)
    return None


def install(module: torch.nn.Module, manifest, *, strict: bool = False,
            patterns: str | None = None, handoffs: bool | None = None) -> torch.nn.Module:
    """Replace each manifest pattern of `module` by its kernel; returns `module`.

    `manifest` is a path to fact_manifest.json (library paths relative to it)
    or the loaded dict. With strict=True an install-time fallback raises
    instead of warning (for tests and `fact optimize`'s end-to-end check).
    `patterns` (default: $FACT_PATTERNS, else all) binds only the patterns
    select_patterns() names; the others run in PyTorch without a warning:
    a per-pattern ablation, not a fallback. `handoffs` (default: $FACT_HANDOFFS
    != "0") runs the manifest's operand hand-offs (pairs of GEMM patterns whose
    kernels pass the intermediate as a pre-split image, _HandoffEntry); off,
    every pattern runs on its own."""
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
    gemm_calls: dict = {}  # pattern id -> (entry id, fact_gemm call node)
    for pattern in select_patterns(data.get("patterns", []), gm, patterns):
        pid = pattern.get("id", "?")
        try:
            try:
                if _runtime_ops().handles(pattern):  # layernorm / attention: fact.runtime_ops binds them
                    _runtime_ops().install_pattern(gm, builder, pattern, base_dir, replaced)
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
        gemm_calls[pid] = (entry_id, replaced[out_name])
        installed.append(pid)
    if handoffs is None:
        handoffs = os.environ.get(HANDOFFS_ENV, "1") != "0"
    fused_pairs = []
    for handoff in data.get("handoffs", []) if handoffs else []:
        why = _install_handoff(gm, handoff, gemm_calls)
        if why is None:
            fused_pairs.append(f"{handoff['producer']}->{handoff['consumer']}")
        elif why:
            if strict:
                raise RuntimeError(f"fact: hand-off {handoff.get('producer')}->{handoff.get('consumer')}: {why}")
            warnings.warn(f"fact: hand-off {handoff.get('producer')}->{handoff.get('consumer')} not used: {why}",
                          RuntimeWarning, stacklevel=2)
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
