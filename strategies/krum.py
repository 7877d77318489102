"""Krum as a Flower strategy."""

from __future__ import annotations

import numpy as np

from strategies.base import RobustStrategy
from strategies.records import ScreenedReplies
from strategies.rules import Aggregate, Neighbours, krum_from_distances


class Krum(RobustStrategy):
    """Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017) with screening and κ.

    Krum(V) is the reply v with the smallest score s(v) = Σ_{u∈N(v)} ‖v − u‖²,
    where N(v) is the n − f replies closest to v, v itself included
    (``neighbours="self"``); ``neighbours="blanchard"`` uses the paper's
    n − f − 2 closest other replies. Ties go to the lowest node id.

    Args:
        num_byzantine: f.
        neighbours: ``"self"`` (default) or ``"blanchard"``.
        **kwargs: as :class:`~strategies.base.RobustStrategy`.
    """

    rule = "krum"

    def __init__(
        self,
        *,
        num_byzantine: int = 0,
        neighbours: Neighbours = "self",
        **kwargs: object,
    ) -> None:
        super().__init__(num_byzantine=num_byzantine, **kwargs)  # type: ignore[arg-type]
        if neighbours not in ("self", "blanchard"):
            raise ValueError(f"neighbours={neighbours!r} must be 'self' or 'blanchard'")
        self.neighbours = neighbours

    def too_few(self, n: int) -> str | None:
        """Krum needs n > 2f (and n > 2f + 2 with the paper's neighbours)."""
        f = self.num_byzantine
        if self.neighbours == "blanchard" and n <= 2 * f + 2:
            return f"n={n} replies <= 2f+2={2 * f + 2}"
        return super().too_few(n)

    def selection_size(self, n: int) -> int | None:
        """Krum selects one reply."""
        return 1

    def aggregate_distances(
        self, dist: np.ndarray, screened: ScreenedReplies
    ) -> Aggregate:
        """The lowest-score reply."""
        return krum_from_distances(dist, self.num_byzantine, neighbours=self.neighbours)

    def describe(self, aggregate: Aggregate, n: int) -> str:
        """E.g. ``krum picked node 42``."""
        return f"krum picked 1 of {n}"
