"""Least-squares fits of the scaling law L(N) = (N_c / N)^alpha_N, with and without a constant."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _linear(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """(slope, intercept, r2) of the least-squares line through (xs, ys)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("fit: the parameter counts must not all be equal")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return slope, intercept, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def power_law(params: Sequence[float], losses: Sequence[float]) -> dict:
    """Fit log L = alpha_N (log N_c - log N); ``r2`` is that of the line on log-log axes."""
    if len(params) != len(losses) or len(params) < 2:
        raise ValueError(
            f"fit: need at least 2 (params, loss) points of equal count, got {len(params)}, {len(losses)}"
        )
    if min(params) <= 0 or min(losses) <= 0:
        raise ValueError("fit: params and losses must be positive for a log-log fit")
    slope, intercept, r2 = _linear(
        [math.log(n) for n in params], [math.log(loss) for loss in losses]
    )
    alpha = -slope
    n_c = math.exp(intercept / alpha) if alpha != 0 else math.inf
    return {"alpha_N": alpha, "N_c": n_c, "r2": r2}


def power_law_with_constant(
    params: Sequence[float], losses: Sequence[float], steps: int = 400
) -> dict:
    """Fit L = L_inf + (N_c / N)^alpha_N: the L_inf in [0, min L) whose power-law fit of L - L_inf is best.

    ``r2`` is measured on log L itself, so it compares with the plain fit's.
    """
    floor = min(losses)
    best = None
    for k in range(steps):
        l_inf = floor * k / steps
        fit = power_law(params, [loss - l_inf for loss in losses])
        predicted = [
            math.log(l_inf + (fit["N_c"] / n) ** fit["alpha_N"]) for n in params
        ]
        logs = [math.log(loss) for loss in losses]
        mean = sum(logs) / len(logs)
        ss_tot = sum((y - mean) ** 2 for y in logs)
        r2 = (
            1.0 - sum((y - p) ** 2 for y, p in zip(logs, predicted)) / ss_tot
            if ss_tot > 0
            else 1.0
        )
        if best is None or r2 > best["r2"]:
            best = {
                "alpha_N": fit["alpha_N"],
                "N_c": fit["N_c"],
                "L_inf": l_inf,
                "r2": r2,
            }
    return best
