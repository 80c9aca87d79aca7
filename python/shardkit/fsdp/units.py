"""Cutting a model into sharding units and deciding which unit owns each parameter.

A unit is a module whose parameters are flattened, sharded and gathered
together. ``units`` selects them: a list of module classes (``isinstance``,
so classes swapped in place by ``shardkit.checkpointing`` still match), a
callable ``module -> bool``, or an int size threshold (bottom-up, a module
becomes a unit once the parameters not yet claimed below it reach the
threshold). The root is always a unit.

A parameter belongs to the innermost unit that contains every module
registering it, so a weight tied across two units (an embedding and an LM
head) lives once, in their common ancestor unit.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

UnitsSpec = "list[type[nn.Module]] | Callable[[nn.Module], bool] | int | None"


def _matcher(units) -> Callable[[str, nn.Module], bool] | int:
    if units is None:
        return lambda name, m: False
    if isinstance(units, bool):
        raise TypeError("units: expected a list of module classes, a callable or an int threshold, got a bool")
    if isinstance(units, int):
        if units < 1:
            raise ValueError(f"units: a size threshold must be >= 1 parameter, got {units}")
        return units
    if isinstance(units, type):
        units = [units]
    if isinstance(units, (list, tuple, set)):
        classes = tuple(units)
        if not classes or not all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes):
            raise TypeError(f"units: expected nn.Module subclasses, got {list(units)!r}")
        return lambda name, m: isinstance(m, classes)
    if callable(units):
        return lambda name, m: bool(units(m))
    raise TypeError(f"units: expected a list of module classes, a callable or an int threshold, got {type(units).__name__}")


def select_units(model: nn.Module, units) -> list[str]:
    """Module paths of the units, root ("") first, then in ``named_modules`` order.

    Raises ValueError when a class list or callable matches no module other than the root.
    """
    matcher = _matcher(units)
    if isinstance(matcher, int):
        chosen = _by_size(model, matcher)
    else:
        chosen = [name for name, m in model.named_modules() if name and matcher(name, m)]
        if units is not None and not chosen:
            raise ValueError(f"units: {units!r} matched no module of {type(model).__name__} "
                             "(expected classes or a predicate that select sub-modules such as transformer blocks)")
    return [""] + chosen


def _by_size(model: nn.Module, threshold: int) -> list[str]:
    chosen: list[str] = []

    def visit(name: str, module: nn.Module) -> int:
        # Parameters under ``module`` not yet claimed by a unit below it.
        pending = sum(visit(f"{name}.{c}" if name else c, child) for c, child in module.named_children())
        pending += sum(p.numel() for p in module.parameters(recurse=False))
        if name and pending >= threshold:
            chosen.append(name)
            return 0
        return pending

    visit("", model)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(chosen, key=order.__getitem__)


def enclosing_unit(path: str, unit_paths: list[str]) -> str:
    """The innermost unit whose subtree contains the module at ``path``."""
    best = ""
    for u in unit_paths:
        if u and (path == u or path.startswith(u + ".")) and len(u) > len(best):
            best = u
    return best


def _common_unit(a: str, b: str, unit_paths: list[str]) -> str:
    """The innermost unit containing both units ``a`` and ``b``."""
    if a == b:
        return a
    for u in sorted(unit_paths, key=len, reverse=True):
        inside = lambda p: u == "" or p == u or p.startswith(u + ".")  # noqa: E731
        if inside(a) and inside(b):
            return u
    return ""


def assign_parameters(model: nn.Module, unit_paths: list[str]):
    """``{unit path: [(param, [(module, attr name, full name), ...]), ...]}`` in registration order.

    Every distinct parameter appears once, with all the places it is registered (tied weights).
    """
    uses: dict[int, list] = {}
    params: dict[int, nn.Parameter] = {}
    for mod_path, module in model.named_modules(remove_duplicate=False):
        for attr, p in module._parameters.items():
            if p is None:
                continue
            full = f"{mod_path}.{attr}" if mod_path else attr
            params.setdefault(id(p), p)
            entry = uses.setdefault(id(p), [])
            if not any(m is module and a == attr for m, a, _ in entry):
                entry.append((module, attr, full))
    owned: dict[str, list] = {u: [] for u in unit_paths}
    for pid, entry in uses.items():
        unit = None
        for _, _, full in entry:
            mod_path = full.rpartition(".")[0]
            here = enclosing_unit(mod_path, unit_paths)
            unit = here if unit is None else _common_unit(unit, here, unit_paths)
        owned[unit].append((params[pid], entry))
    return owned
