"""Time the per-round κ computation against the aggregation it reports on.

Run with the project's environment: ``.venv/bin/python bench/kappa.py``
(byzflower is installed there in editable mode). Not a test: it prints numbers.

For n = 20, f = 4, d = 10⁵ (float32 updates, f of them shifted as a crude
attack) it times, median of several repetitions:

- the aggregation: pairwise squared distances, MultiKrum (m = n − f) from them
  and the combination Σ w_i v_i;
- the exact κ computation: ``extend_distances`` and
  ``worst_ratio_from_distances`` over all C(20, 4) = 4,845 subsets;

and prints both and their ratio. For n = 30, f = 6 (C(30, 6) = 593,775 >
20,000) the default budget runs the local search; its time and value are
printed next to one exact enumeration with a raised budget.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from strategies import kappa
from strategies.geometry import combine, pairwise_sq_distances
from strategies.rules import multikrum_from_distances

Result = TypeVar("Result")


def median_time(step: Callable[[], Result], repeats: int) -> tuple[float, Result]:
    """Return the median wall time of step() over repeats runs, and its result."""
    times = []
    result = step()  # warm-up, not timed
    for _ in range(repeats):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def make_updates(n: int, f: int, d: int, seed: int) -> np.ndarray:
    """Honest float32 updates near a common point; f Byzantine ones shifted."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=d).astype(np.float32)
    updates = centre + 0.01 * rng.standard_normal((n, d), dtype=np.float32)
    updates[:f] += np.float32(0.05)
    return updates


def aggregate(updates: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """One round's aggregation: D, MultiKrum weights, then the new vector."""
    dist = pairwise_sq_distances(updates)
    weights = multikrum_from_distances(dist, f).weights
    combine(updates, weights)
    return dist, weights


def kappa_exact(
    dist: np.ndarray, weights: np.ndarray, f: int, max_subsets: int
) -> kappa.WorstRatio:
    """The κ report's cost: extend D by the aggregate, then max over S."""
    extended = kappa.extend_distances(dist, weights)
    return kappa.worst_ratio_from_distances(extended, f, max_subsets=max_subsets)


def exact_case(n: int, f: int, d: int, repeats: int) -> None:
    """Aggregation against exact κ at one (n, f, d)."""
    updates = make_updates(n, f, d, seed=0)
    aggregation_time, (dist, weights) = median_time(
        lambda: aggregate(updates, f), repeats
    )
    kappa_time, worst = median_time(
        lambda: kappa_exact(dist, weights, f, 20000), repeats
    )
    print(f"n = {n}, f = {f}, d = {d:,}: median of {repeats} runs")
    print(f"  aggregation (distances + multikrum + combine): {aggregation_time:.4f} s")
    print(
        f"  exact κ (extend + {worst.evaluated:,} subsets):        {kappa_time:.4f} s"
    )
    print(f"  κ / aggregation: {kappa_time / aggregation_time:.3f}")
    print(f"  worst ρ = {worst.value:.4g} at S = {worst.subset} (exact={worst.exact})")


def search_case(n: int, f: int, d: int, repeats: int) -> None:
    """Local search under the default budget, against one exact enumeration."""
    updates = make_updates(n, f, d, seed=1)
    dist, weights = aggregate(updates, f)
    search_time, searched = median_time(
        lambda: kappa_exact(dist, weights, f, 20000), repeats
    )
    start = time.perf_counter()
    exact = kappa_exact(dist, weights, f, math.comb(n, f))
    exact_time = time.perf_counter() - start
    print(f"n = {n}, f = {f}, d = {d:,}: C(n, f) = {math.comb(n, f):,}")
    print(
        f"  local search (default budget): {search_time:.4f} s, "
        f"{searched.evaluated:,} subsets, worst ρ = {searched.value:.6g} "
        f"(exact={searched.exact})"
    )
    print(
        f"  exact enumeration (one run):   {exact_time:.4f} s, "
        f"{exact.evaluated:,} subsets, worst ρ = {exact.value:.6g}"
    )
    found = "yes" if searched.subset == exact.subset else "no"
    print(f"  search found the exact maximiser: {found}")


def main(argv: list[str] | None = None) -> None:
    """Print the two benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--d", type=int, default=100_000)
    args = parser.parse_args(argv)
    exact_case(20, 4, args.d, args.repeats)
    print()
    search_case(30, 6, args.d, args.repeats)


if __name__ == "__main__":
    main()
