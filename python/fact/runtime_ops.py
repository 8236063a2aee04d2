"""Installs realized layernorm and attention patterns into a live module
(docs/CONTRACTS.md §7); fact.runtime.install dispatches patterns of these rules
here. Each pattern's nodes are replaced by one call of
`fact_pattern(operands, entry)` -- the custom op `torch.ops.fact.pattern`
returning the pattern's outputs as a list (a residual LayerNorm that also
writes the sum has two) -- followed by one getitem per output.

Fallbacks (each warns once, naming the pattern and the reason):
- at install: the library fails to load, the pattern's nodes are not in the
  re-traced graph, a causal mask buffer (payload mask.must_verify) whose kept
  region of buffer[rows, cols] is not exactly col <= row -> the original nodes stay;
- at run time: operands whose dtype/device/shape do not fit the binding (after
  making them contiguous), can_implement rejecting the real pointers, a failed
  launch -> the op runs the original nodes instead.

Hazard: the mask buffer is checked once, at install. A module whose mask
buffer is modified afterwards (in place) keeps the causal kernel.
"""
from __future__ import annotations

import operator

import torch
import torch.fx

from . import kernel as _kernel
from . import op_kernels
from . import runtime as _rt

RULES = ("layernorm", "attention")


def handles(pattern: dict) -> bool:
    return pattern.get("rule") in RULES


def binding_tensor_ids(pattern: dict) -> dict:
    """{role: tensor id} of the tensors the kernel reads."""
    if pattern["rule"] == "layernorm":
        return op_kernels.layernorm_tensor_ids(pattern["layernorm"])
    return op_kernels.attention_tensor_ids(pattern["attention"])


def _kept(buffer, mask: dict):
    """Boolean "kept" map of the mask window of `buffer` (last two dims)."""
    rows = mask.get("rows") or [None, None]
    cols = mask.get("cols") or [None, None]
    window = buffer[..., rows[0]:rows[1], cols[0]:cols[1]]
    if mask.get("kind") == "additive":
        masked = window <= -1e4
        if not bool(((window == 0) | masked).all()):
            return None  # values other than 0 (kept) and a large negative (masked)
        return ~masked
    if mask.get("keep") == "zero":
        return window == 0
    return window != 0


def check_causal_buffer(buffer, mask: dict) -> str | None:
    """None when the kept entries of buffer[..., rows, cols] are exactly
    col <= row (top-left aligned) for every leading index, else the reason."""
    kept = _kept(buffer.detach(), mask)
    if kept is None:
        return "the additive mask buffer holds values other than 0 and <= -1e4"
    t_q, t_k = kept.shape[-2], kept.shape[-1]
    causal = torch.ones(t_q, t_k, dtype=torch.bool, device=kept.device).tril()
    if not bool((kept == causal).all()):
        return (f"the kept entries of mask buffer {mask.get('buffer')!r} [{t_q} x {t_k} window] are not exactly "
                f"col <= row, so the causal kernel would compute something else")
    return None


class OpEntry(_rt._EntryBase):
    """One installed layernorm / attention pattern: kernel, binding, original program."""

    def __init__(self, pattern, kern, root, steps, output_names, operand_keys, external, id_slots, module_params):
        super().__init__(pattern, kern, root, steps, operand_keys, external, id_slots, module_params)
        self.rule = pattern["rule"]
        self.payload = pattern[self.rule]
        self.output_names = output_names

    def run_original(self, operands) -> list:
        env = self._run_steps(operands)
        return [self._unaliased(env[name], operands) for name in self.output_names]

    def _signature_plan(self, operands):
        """Per input signature: [(shape, dtype)] of the outputs, or a reason."""
        key = _rt._signature(operands)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        plan = self.device_mismatch(operands, self.operand_device(operands))
        if plan is None:
            meta = [_rt._meta_like(t) for t in operands]
            with torch.no_grad():
                outs = self.run_original(meta)
            plan = [(tuple(o.shape), o.dtype) for o in outs]
            if self.rule == "attention":
                plan = op_kernels.attention_output_reason(self.payload, plan[0][0]) or plan
        self._plans[key] = plan
        return plan

    def bound_tensors(self, operands) -> dict:
        """{binding tensor id: tensor}, copied dense where the kernel cannot
        address the operand's layout; keep it alive until the launch."""
        tensors = {}
        for ident, i in self.id_slots.items():
            t = operands[i]
            if self.rule == "attention" and not t.is_contiguous():
                t = t.contiguous()
            elif (self.rule == "layernorm" and t.dim() > 1
                  and op_kernels.row_stride(t, int(self.payload["cols"])) is None):
                t = t.contiguous()
            tensors[ident] = t
        return tensors

    def execute(self, operands) -> list:
        plan = self._signature_plan(operands)
        if isinstance(plan, str):
            self.warn(plan)
            return self.run_original(operands)
        tensors = self.bound_tensors(operands)
        device = self.operand_device(operands)
        outs = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in plan]
        try:
            if self.rule == "layernorm":
                ids = op_kernels.layernorm_output_ids(self.payload)
                problem = op_kernels.layernorm_problem(self.payload, tensors, dict(zip(ids, outs)))
            else:
                problem = op_kernels.attention_problem(self.payload, tensors, outs[0])
        except _kernel.BindingError as exc:
            self.warn(f"run-time operands do not fit the binding: {exc}")
            return self.run_original(operands)
        return self.launch(problem, device, operands, outs)


class LayerNormStage(_rt._HandoffStage):
    """A LayerNorm producer of an operand hand-off (docs/CONTRACTS.md §7.1), always
    stage 0 of its chain: its library writes y as the next GEMM's pre-split A image
    (fact_layernorm_run_image) instead of to y. The LayerNorm pattern has exactly
    one output, y."""

    @staticmethod
    def producer_refusal(producer) -> str | None:
        if not isinstance(producer, OpEntry) or producer.rule != "layernorm":
            return f"the producer {producer.pid} is not an installed LayerNorm pattern"
        if len(producer.output_names) != 1:
            return (f"the LayerNorm producer {producer.pid} has outputs {producer.output_names}; "
                    f"a hand-off needs y alone")
        return None

    @staticmethod
    def produced_node(p_call):
        users = list(p_call.users)  # the getitem of each output
        return users[0] if len(users) == 1 else None

    @staticmethod
    def same_shape_input(producer, p_call):
        """x: a LayerNorm's y has the shape of its input (residual LayerNorms: None,
        a and b may broadcast)."""
        x = producer.payload.get("x")
        if not isinstance(x, dict) or x.get("tensor") not in producer.id_slots:
            return None
        return p_call.args[0][producer.id_slots[x["tensor"]]]

    @staticmethod
    def format_refusal(producer, consumer, image_format) -> str | None:
        written = getattr(producer.kernel, "image_formats", lambda: [])()
        read = getattr(consumer.kernel, "image_format", lambda: "")()
        if image_format not in written or read != image_format:
            return (f"the LayerNorm library writes image formats {written} and the consumer's library reads "
                    f"{read!r}, not both the manifest's {image_format!r}")
        return None

    def plan(self, ops, device, image_meta):
        assert image_meta is None, "a LayerNorm stage reads no image"
        plan = self.entry._signature_plan(ops)
        return plan if isinstance(plan, str) else plan[0]

    def produced_meta(self, plan):
        shape, dtype = plan
        return torch.empty(shape, dtype=dtype, device="meta")

    def image_written(self, plan) -> int:
        return self.entry.kernel.image_bytes(op_kernels.layernorm_skeleton(self.entry.payload), self.image_format)

    def problem(self, plan, ops, out, a_image, d_image):
        """The image problem binds no y; the image pointer goes to run()."""
        tensors = self.entry.bound_tensors(ops)
        return op_kernels.layernorm_problem(self.entry.payload, tensors, {}, y_as_image=True), tensors

    def refusal(self, problem) -> str | None:
        why = self.entry.kernel.image_can_implement(problem, self.image_format)
        return None if why is None else f"image_can_implement: {why}"

    def workspace(self, problem) -> int:
        return 0

    def run(self, problem, d_image, workspace_ptr, workspace_bytes, stream):
        self.entry.kernel.run_image(problem, self.image_format, d_image, stream)

    def output_of(self, value):
        return value[0]


def _original_grads(entry: int, operands, grads):
    with torch.enable_grad():
        leaves = [o.detach().requires_grad_(o.is_floating_point()) for o in operands]
        outs = _rt._ENTRIES[entry].run_original(leaves)
        wanted = [leaf for leaf in leaves if leaf.requires_grad]
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
    return [next(found) if leaf.requires_grad else None for leaf in leaves]


class _PatternFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, entry, *operands):
        ctx.entry = entry
        ctx.save_for_backward(*operands)
        return tuple(_rt._ENTRIES[entry].execute(list(operands)))

    @staticmethod
    def backward(ctx, *grads):
        return (None, *_original_grads(ctx.entry, ctx.saved_tensors, grads))


def fact_pattern(operands, entry: int):
    """What the rewritten graph calls (like fact.runtime.fact_gemm, with a list of outputs)."""
    if torch.compiler.is_compiling():
        return torch.ops.fact.pattern.default(operands, entry)
    if torch.is_grad_enabled() and any(o.requires_grad for o in operands):
        return list(_PatternFunction.apply(entry, *operands))
    return _rt._ENTRIES[entry].execute(operands)


@torch.library.custom_op("fact::pattern", mutates_args=())
def _fact_pattern(operands: list[torch.Tensor], entry: int) -> list[torch.Tensor]:
    return _rt._ENTRIES[entry].execute(operands)


@_fact_pattern.register_fake
def _fact_pattern_fake(operands, entry):
    return _rt._ENTRIES[entry].run_original(operands)


def _fact_pattern_backward(ctx, grads):
    return _original_grads(ctx.entry, ctx.saved_tensors, grads), None


_fact_pattern.register_autograd(_fact_pattern_backward, setup_context=_rt._save_operands)


_PYTHON_MODULES = ("math", "_operator", "operator", "builtins")


def _python_value(node) -> bool:
    """True for nodes that produce python numbers: fact.runtime's size()/shape
    cases plus math/operator arithmetic on such values (1.0 / math.sqrt(k.size(-1)))."""
    if _rt._non_tensor(node):
        return True
    if node.op == "call_function" and getattr(node.target, "__module__", None) in _PYTHON_MODULES:
        inputs = []
        torch.fx.node.map_arg((node.args, node.kwargs), inputs.append)
        return bool(inputs) and all(_python_value(a) for a in inputs)
    return False


def _buffer_value(gm, builder, ident: str):
    source = builder.sources.get(ident)
    if source is not None and source[0] == "node" and source[1].op == "get_attr":
        target = source[1].target  # a buffer read as a graph node (self.bias[...])
    elif source is not None and source[0] == "param":
        target = source[1]
    else:
        raise _rt._Fallback(f"mask buffer {ident!r} is not a module buffer in the re-traced graph")
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    if not isinstance(value, torch.Tensor):
        raise _rt._Fallback(f"mask buffer {target!r} is not a tensor")
    return value


def install_pattern(gm, builder, pattern: dict, base_dir: str, replaced: dict) -> tuple[int, torch.fx.Node]:
    """Replaces one layernorm / attention pattern's nodes in `gm`; returns (entry
    id, fact_pattern call node); raises fact.runtime._Fallback with the reason
    when it cannot."""
    rule = pattern.get("rule")
    payload = pattern.get(rule)
    if not isinstance(payload, dict):
        raise _rt._Fallback(f"no {rule!r} payload")
    graph_nodes, names = _rt._pattern_nodes(gm, pattern)
    outputs = list(pattern.get("outputs", []))
    expected = (op_kernels.layernorm_output_ids(payload) if rule == "layernorm" else [payload["o"]["tensor"]])
    if outputs != expected or any(o not in names for o in outputs):
        raise _rt._Fallback(f"pattern outputs {outputs} are not the payload's {expected} among its nodes")
    if rule == "attention":
        mask = payload.get("mask")
        if isinstance(mask, dict) and mask.get("must_verify"):
            why = check_causal_buffer(_buffer_value(gm, builder, mask["buffer"]), mask)
            if why is not None:
                raise _rt._Fallback(why)

    members = set(names)
    ordered = [n for n in gm.graph.nodes if n.name in members]
    operands = _rt._Operands(gm, members)
    # Python values the pattern's views read (x.size() and arithmetic on it):
    # recomputed inside the program from their tensor roots, which become
    # operands (custom-op operands must be tensors).
    prelude: dict = {}

    def ref(arg):
        if arg.name in members or arg.name in prelude:
            return _rt._Ref(arg.name)
        if _python_value(arg):
            if arg.op not in ("call_function", "call_method"):
                raise _rt._Fallback(f"the pattern depends on the non-tensor value {arg.name} ({arg.op})")
            args = torch.fx.node.map_arg(arg.args, ref)
            kwargs = torch.fx.node.map_arg(arg.kwargs, ref)
            prelude[arg.name] = (arg.name, arg.op, arg.target, args, kwargs)  # producers first
            return _rt._Ref(arg.name)
        return operands.external_ref(arg)

    steps = [operands.step(node, ref) for node in ordered]
    position = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    steps = sorted(list(prelude.values()) + steps, key=lambda step: position[step[0]])  # graph order is topological

    id_slots = operands.bind(builder, binding_tensor_ids(pattern), replaced)
    operand_keys = operands.keys

    try:
        path = _rt._library_path(pattern, base_dir)
        # fact.runtime.set_kernel_loader's test seam replaces every loader; else the rule's own.
        custom = _rt._kernel_loader is not _kernel.GemmKernel
        kern = _rt._kernel_loader(path) if custom else op_kernels.load_kernel(rule, path)
    except (_kernel.KernelError, OSError) as exc:
        raise _rt._Fallback(f"library failed to load: {exc}") from exc

    entry = OpEntry(pattern, kern, gm, steps, outputs, operand_keys, operands.external, id_slots,
                    operands.module_params)
    with _rt._lock:
        entry_id = next(_rt._ids)
        _rt._ENTRIES[entry_id] = entry

    graph = gm.graph
    existing = {n.name: n for n in graph.nodes}
    with graph.inserting_before(ordered[0]):
        values = [existing[key] if kind == "node" else graph.get_attr(key) for kind, key in operand_keys]
    # The call goes right after its latest operand: every operand is defined
    # there, and every reader of an output outside the pattern (the residual
    # sum may have readers before the LayerNorm node) comes later.
    position = {n: i for i, n in enumerate(graph.nodes)}
    latest = max(values, key=lambda n: position[n]) if values else ordered[0].prev
    with graph.inserting_after(latest):
        call = graph.call_function(fact_pattern, (values, entry_id))
    with graph.inserting_after(call):
        items = []
        for i in reversed(range(len(outputs))):
            items.insert(0, graph.call_function(operator.getitem, (call, i)))
    for name, item in zip(outputs, items):
        graph_nodes[name].replace_all_uses_with(item)
        replaced[name] = item
    # Members and the python values recomputed inside the program (x.size()
    # on a member keeps that member alive until the size node goes).
    removable = {n.name for n in ordered} | set(prelude)
    for node in reversed(list(graph.nodes)):
        if node.name in removable and not node.users:
            graph.erase_node(node)
    return entry_id, call
