"""Mean: the plain average, the non-robust baseline."""

from __future__ import annotations

import numpy as np

from strategies.base import RobustStrategy
from strategies.records import ScreenedReplies
from strategies.rules import Aggregate, mean_from_distances


class Mean(RobustStrategy):
    """Mean(V) = (1/n) Σ v_i, with FedAvg's sampling and our screening.

    One Byzantine client moves the mean arbitrarily far (κ* = ∞ for f ≥ 1); it
    is here as the baseline the robust rules are measured against.

    Args:
        weighted: weight each reply by its self-reported ``num-examples``, as
            FedAvg (McMahan et al. 2017) does. **Unsafe**: a client that claims
            10⁶ examples owns the average. Off by default.
        **kwargs: as :class:`~strategies.base.RobustStrategy`.
    """

    rule = "mean"

    def __init__(self, *, weighted: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.weighted = weighted

    def too_few(self, n: int) -> str | None:
        """The mean needs one reply."""
        return "no accepted replies" if n == 0 else None

    def aggregate_distances(
        self, dist: np.ndarray, screened: ScreenedReplies
    ) -> Aggregate:
        """Uniform weights, or num-examples weights when ``weighted``."""
        if not self.weighted:
            return mean_from_distances(dist)
        counts = np.asarray(screened.num_examples, dtype=np.float64)
        return Aggregate(vector=None, weights=counts / counts.sum())

    def describe(self, aggregate: Aggregate, n: int) -> str:
        """E.g. ``mean of 10``."""
        return f"{'weighted ' if self.weighted else ''}mean of {n}"
