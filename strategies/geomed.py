"""Geometric median as a Flower strategy."""

from __future__ import annotations

import numpy as np

from strategies.base import RobustStrategy
from strategies.records import ScreenedReplies
from strategies.rules import Aggregate, geomed_from_distances


class GeomMed(RobustStrategy):
    """GeomMed(V) = argmin_z Σ ‖z − v_i‖ (Weiszfeld; Vardi and Zhang 2000).

    Solved to relative tolerance ``tol`` on the round's distance matrix; the
    iterations and final relative change go into the round's record.
    κ* ≤ 4c², c = (1 − f/n)/(1 − 2f/n).

    Args:
        num_byzantine: f (for κ and the n > 2f check; the median itself does
            not need it).
        tol: relative change at which Weiszfeld stops.
        max_iter: iteration cap; a run that hits it is logged as not converged.
        **kwargs: as :class:`~strategies.base.RobustStrategy`.
    """

    rule = "geomed"

    def __init__(
        self,
        *,
        num_byzantine: int = 0,
        tol: float = 1e-8,
        max_iter: int = 1000,
        **kwargs: object,
    ) -> None:
        super().__init__(num_byzantine=num_byzantine, **kwargs)  # type: ignore[arg-type]
        if not tol > 0:
            raise ValueError(f"tol={tol} must be > 0")
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter={max_iter!r} must be an integer >= 1")
        self.tol = tol
        self.max_iter = max_iter

    def aggregate_distances(
        self, dist: np.ndarray, screened: ScreenedReplies
    ) -> Aggregate:
        """Weiszfeld weights of the geometric median."""
        return geomed_from_distances(dist, tol=self.tol, max_iter=self.max_iter)

    def describe(self, aggregate: Aggregate, n: int) -> str:
        """E.g. ``geomed of 10 in 23 it``."""
        state = "" if aggregate.converged else ", NOT converged"
        return f"geomed of {n} in {aggregate.iterations} it{state}"
