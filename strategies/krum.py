"""Krum as a Flower strategy: MultiKrum with m = 1."""

from __future__ import annotations

from strategies.multikrum import MultiKrum
from strategies.rules import Aggregate, Neighbours


class Krum(MultiKrum):
    """Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017) with screening and κ.

    Krum(V) is the reply v with the smallest score s(v) = Σ_{u∈N(v)} ‖v − u‖²,
    where N(v) is the n − f replies closest to v, v itself included
    (``neighbours="self"``); ``neighbours="blanchard"`` uses the paper's
    n − f − 2 closest other replies. Ties go to the lowest node id. It is
    MultiKrum with m = 1.

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
        super().__init__(
            num_byzantine=num_byzantine,
            num_selected=1,
            neighbours=neighbours,
            **kwargs,
        )

    def describe(self, aggregate: Aggregate, n: int) -> str:
        """E.g. ``krum picked 1 of 10``."""
        return f"krum picked 1 of {n}"
