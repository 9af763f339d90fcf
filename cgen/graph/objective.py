"""What a model's kernels are chosen for: `latency`, `ram` or `balanced`.

    objective = resolve_objective(None, target, budget_ram)    # the default for the target
    kernels, options = choose_kernels(fg, target, tuned, objective, budget_ram)
    emit_model(graph, kernels, target, name, **options)

- latency: each group's template and config for speed (the routes and defaults, or a
  tuning log); kernels in group order; workspace offsets on cache lines.
- ram: the routes and knobs without scratch (routes.RAM_ROUTES: direct convolution, no
  im2col or packing; kernels.RAM_KNOBS: padding read in place, activations unpacked);
  elementwise kernels write over an input dying there (memory.storage); independent
  branches ordered for the least peak (order.best_order); 16-byte offsets on bare metal.
- balanced: the RAM objective's plan, then, largest kernels (by flops) first, each
  group's latency kernel wherever it keeps the workspace within the cap: the RAM plan's
  size, or the RAM budget when one is given and larger.  The smallest workspace that
  fits, with the fastest kernels that fit in it.

Scratch is measured from the C printer (the kernel's heap buffers moved to the
workspace), so the sizes compared are the sizes emitted.
"""
from __future__ import annotations

from .memory import ALIGN, SMALL_ALIGN, lifetimes, plan, storage
from .order import best_order

OBJECTIVES = ("latency", "ram", "balanced")


def resolve_objective(objective, target, budget_ram=None) -> str:
    """The objective asked for, else balanced on targets without a cache hierarchy
    (bare metal, cortex-m) or when a RAM budget is given, latency elsewhere."""
    if objective is None:
        return "balanced" if (target.bare_metal or budget_ram is not None) else "latency"
    if objective not in OBJECTIVES:
        from .graph_ir import ModelError
        raise ModelError(f"unknown objective {objective!r}: one of {', '.join(OBJECTIVES)}",
                         "bad_input")
    return objective


def legalize_objective(objective: str) -> str:
    """The objective the groups are legalized for (a balanced build may take either
    kernel for a group, so its groups are the RAM objective's)."""
    return "latency" if objective == "latency" else "ram"


def plan_options(objective: str, target) -> dict:
    """emit_model's memory options for the objective."""
    if objective == "latency":
        return {}
    return {"in_place": True, "align": SMALL_ALIGN if target.bare_metal else ALIGN}


def kernel_scratch(kernels: list, target, stack_limit: int) -> dict:
    """Kernel name -> workspace scratch bytes, as the printer assigns them."""
    from ..codegen.c import emit_unit
    from ..codegen.isa import isa_for
    isa = isa_for(target)
    out = {}
    for k in kernels:
        if getattr(k, "body", None):        # a loop: its region (cgen.graph.loop_lower)
            from .loop_lower import scratch_bytes
            out[k.name] = scratch_bytes(k, isa, stack_limit)
        elif not k.is_alias:
            out[k.name] = emit_unit([(k.func, k.portable, isa, False, stack_limit)], [],
                                    guard_fallbacks=True)[1][0]
    return out


def _values(graph, kernels) -> dict:
    values = graph.values()
    values.update({v.name: v for k in kernels for n in k.group.nodes for v in n.outputs})
    return values


def arrange(graph, kernels: list, scratch: dict, options: dict):
    """(kernels in their best order, workspace bytes of the plan emit_model will make)."""
    values = _values(graph, kernels)
    ordered = best_order(graph, kernels, values, scratch)
    store = storage(graph, ordered, values, options.get("in_place", False))
    ivs = lifetimes(ordered, values, store, scratch)
    return ordered, (plan(ivs, options.get("align", ALIGN)).total if ivs else 0)


def choose_kernels(fg, target, tuned, objective: str, budget_ram=None,
                   stack_limit: int = 1024):
    """(kernels in call order, emit_model options) for the objective."""
    from .drive import lower_graph
    options = plan_options(objective, target)
    if objective == "latency":
        return lower_graph(fg, target, tuned, "latency"), options
    fast = lower_graph(fg, target, tuned, "latency")
    fast_scratch = kernel_scratch(fast, target, stack_limit)
    ram = lower_graph(fg, target, tuned, "ram")
    scratch = kernel_scratch(ram, target, stack_limit)
    # a group's RAM kernel is kept only where it needs less scratch than the fast one
    for i, k in enumerate(ram):
        if not k.is_alias and fast_scratch[k.name] <= scratch[k.name]:
            ram[i], scratch[k.name] = fast[i], fast_scratch[k.name]
    ordered, total = arrange(fg.graph, ram, scratch, options)
    if objective == "ram":
        return ordered, options
    cap = max(total, budget_ram or 0)
    chosen = list(ram)
    for i in sorted(range(len(ram)), key=lambda i: (-fast[i].flops, i)):
        if fast[i].is_alias or (fast[i].template, fast[i].config) == (ram[i].template,
                                                                      ram[i].config):
            continue
        trial = chosen[:i] + [fast[i]] + chosen[i + 1:]
        sc = {**scratch, fast[i].name: fast_scratch.get(fast[i].name, 0)}
        cand, size = arrange(fg.graph, trial, sc, options)
        if size <= cap:
            chosen, scratch, ordered = trial, sc, cand
    return ordered, options
