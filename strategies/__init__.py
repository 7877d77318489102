"""byzflower strategies: exact robust aggregation rules as Flower strategies.

Import a strategy where ``FedAvg`` stood::

    from strategies import MultiKrum
    strategy = MultiKrum(num_byzantine=2, fraction_evaluate=0.0)
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=10)

The pure rules (no Flower) are in :mod:`strategies.rules`, κ and its bounds
in :mod:`strategies.kappa`.
"""

from strategies.base import RobustStrategy
from strategies.geomed import GeomMed
from strategies.krum import Krum
from strategies.mean import Mean
from strategies.multikrum import MultiKrum

#: Strategy class of each rule name used in run configs.
STRATEGIES: dict[str, type[RobustStrategy]] = {
    "mean": Mean,
    "krum": Krum,
    "multikrum": MultiKrum,
    "geomed": GeomMed,
}

__all__ = ["STRATEGIES", "GeomMed", "Krum", "Mean", "MultiKrum", "RobustStrategy"]
