"""MultiKrum as a Flower strategy."""

from __future__ import annotations

import numpy as np

from strategies.base import RobustStrategy
from strategies.records import ScreenedReplies
from strategies.rules import Aggregate, Neighbours, multikrum_from_distances


class MultiKrum(RobustStrategy):
    """MultiKrum_m (Blanchard et al. 2017; El Mhamdi, Guerraoui, Rouault 2018).

    The plain average of the m replies with the smallest Krum scores
    s(v) = Σ_{u∈N(v)} ‖v − u‖² (N(v): the n − f replies closest to v, v
    included). m = 1 is Krum; the default m = n − f of the round's accepted
    replies. κ*_m ≤ c·min(√2 + 1, √(n − 2f)/√m + √(2f)/√m + f/m)² with
    c = (1 − f/n)/(1 − 2f/n) (Bareilles, Bouaziz, Fageot, El Mhamdi 2026).

    Args:
        num_byzantine: f.
        num_selected: m; None (default) means n − f of each round's accepted
            replies. A fixed m larger than a round's n − f is capped to n − f
            for that round, with a warning.
        neighbours: ``"self"`` (default) or ``"blanchard"``.
        **kwargs: as :class:`~strategies.base.RobustStrategy`.
    """

    rule = "multikrum"

    def __init__(
        self,
        *,
        num_byzantine: int = 0,
        num_selected: int | None = None,
        neighbours: Neighbours = "self",
        **kwargs: object,
    ) -> None:
        super().__init__(num_byzantine=num_byzantine, **kwargs)  # type: ignore[arg-type]
        if num_selected is not None and (
            not isinstance(num_selected, int) or num_selected < 1
        ):
            raise ValueError(f"num_selected={num_selected!r} must be None or >= 1")
        if neighbours not in ("self", "blanchard"):
            raise ValueError(f"neighbours={neighbours!r} must be 'self' or 'blanchard'")
        self.num_selected = num_selected
        self.neighbours = neighbours

    def too_few(self, n: int) -> str | None:
        """MultiKrum needs n > 2f (and n > 2f + 2 with the paper's neighbours)."""
        f = self.num_byzantine
        if self.neighbours == "blanchard" and n <= 2 * f + 2:
            return f"n={n} replies <= 2f+2={2 * f + 2}"
        return super().too_few(n)

    def selection_size(self, n: int) -> int | None:
        """m for a round with n accepted replies: n − f, or the fixed m capped."""
        largest = n - self.num_byzantine
        if self.num_selected is None:
            return largest
        return min(self.num_selected, largest)

    def aggregate_distances(
        self, dist: np.ndarray, screened: ScreenedReplies
    ) -> Aggregate:
        """Average of the m lowest-score replies."""
        return multikrum_from_distances(
            dist,
            self.num_byzantine,
            m=self.selection_size(dist.shape[0]),
            neighbours=self.neighbours,
        )

    def describe(self, aggregate: Aggregate, n: int) -> str:
        """E.g. ``multikrum m=7 kept 7``."""
        return f"multikrum m={self.selection_size(n)} of {n}"
