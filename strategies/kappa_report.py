"""The per-round κ report: how far the aggregate landed from the honest mean.

Pure numpy on the round's (n, n) squared-distance matrix and the rule's hull
weights, so its cost does not grow with the model size d. Definitions and
bounds are in :mod:`strategies.kappa` (Bareilles, Bouaziz, Fageot, El Mhamdi
2026).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from strategies import kappa

#: Relative slack allowed above a proven upper bound before a ratio counts as
#: a violation (floating-point rounding of the distances, GeomMed tolerance).
BOUND_SLACK = 1e-6


@dataclass(frozen=True)
class KappaReport:
    """One round's robustness numbers.

    ``kappa_hon`` is ρ_Hon = ‖Agg − v̄_Hon‖² / Σ_Hon over the clients that
    declared themselves honest (None without labels); ``kappa_worst`` is the
    largest ρ_S over all S with |S| = n − f, exact or a local-search lower
    estimate (``kappa_worst_exact``); ``bound_upper``/``bound_lower`` are the
    best proven bounds on κ* for the rule at this n, f, m.
    """

    n: int
    f: int
    kappa_hon: float | None
    bias_hon: float | None
    spread_hon: float | None
    num_honest: int | None
    kappa_worst: float | None
    kappa_worst_exact: bool | None
    kappa_worst_subsets: int | None
    bound_upper: float | None
    bound_upper_source: str | None
    bound_lower: float | None
    bound_lower_source: str | None
    violation: bool

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready values."""
        return asdict(self)


def kappa_report(
    dist: np.ndarray,
    weights: np.ndarray,
    *,
    rule: str,
    f: int,
    m: int | None = None,
    byzantine: np.ndarray | None = None,
    max_subsets: int = 20_000,
    converged: bool = True,
) -> KappaReport:
    """Compute ρ_Hon, the worst ρ_S over |S| = n − f and the rule's bounds.

    ``byzantine`` is a boolean mask of the replies labelled Byzantine (None
    when labels are missing). A worst ratio above the proven upper bound (with
    relative slack :data:`BOUND_SLACK`) sets ``violation``: it means a bug,
    since any (V, S) gives a lower bound on κ*. An approximate GeomMed that did
    not converge is not held to its bound.
    """
    n = dist.shape[0]
    extended = kappa.extend_distances(dist, weights)

    kappa_hon = bias_hon = spread_hon = None
    num_honest = None
    if byzantine is not None:
        honest = np.flatnonzero(~byzantine)
        num_honest = int(honest.size)
        if honest.size:
            kappa_hon, bias_hon, spread_hon = _honest_terms(extended, honest)

    worst = None
    if 0 <= f < n:
        worst = kappa.worst_ratio_from_distances(extended, f, max_subsets=max_subsets)

    bounds = kappa.bounds(rule, n, f, m) if 2 * f < n else None
    upper = bounds.upper if bounds is not None else None
    lower = bounds.lower if bounds is not None else None
    violation = bool(
        worst is not None
        and upper is not None
        and converged
        and worst.value > upper.value * (1 + BOUND_SLACK) + BOUND_SLACK
    )
    return KappaReport(
        n=n,
        f=f,
        kappa_hon=kappa_hon,
        bias_hon=bias_hon,
        spread_hon=spread_hon,
        num_honest=num_honest,
        kappa_worst=None if worst is None else worst.value,
        kappa_worst_exact=None if worst is None else worst.exact,
        kappa_worst_subsets=None if worst is None else worst.evaluated,
        bound_upper=None if upper is None else upper.value,
        bound_upper_source=None if upper is None else upper.source,
        bound_lower=None if lower is None else lower.value,
        bound_lower_source=None if lower is None else lower.source,
        violation=violation,
    )


def _honest_terms(
    extended: np.ndarray, honest: np.ndarray
) -> tuple[float, float, float]:
    """ρ_Hon, the bias ‖Agg − v̄_Hon‖² and the spread Σ_Hon."""
    block = extended[np.ix_(honest, honest)]
    spread = float(block.sum() / (2 * honest.size**2))
    bias = max(float(extended[-1, honest].mean()) - spread, 0.0)
    ratio = kappa.ratio_from_distances(extended, tuple(int(i) for i in honest))
    return ratio, bias, spread
