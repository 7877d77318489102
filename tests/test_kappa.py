"""Tests of strategies.kappa: ρ_S, its worst case over S, and the κ* bounds.

Expected values come from closed forms, from brute force over every subset
computed on the vectors themselves (itertools.combinations), or from numbers
worked out by hand; none is read back from the code under test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from strategies import kappa, rules
from strategies.geometry import pairwise_sq_distances

GEOMED_TOL = 1e-10
GEOMED_MAX_ITER = 5_000


# --------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------


def brute_ratio(updates: np.ndarray, aggregate: np.ndarray, subset) -> float:
    """ρ_S straight from the definition, with 0/0 = −∞ and x/0 = +∞."""
    chosen = updates[list(subset)].astype(np.float64)
    centre = chosen.mean(axis=0)
    spread = np.mean(np.sum((chosen - centre) ** 2, axis=1))
    bias = np.sum((aggregate - centre) ** 2)
    if spread > 0:
        return float(bias / spread)
    return math.inf if bias > 0 else -math.inf


def brute_worst(updates, aggregate, f) -> tuple[float, tuple[int, ...], float]:
    """Max ρ_S over every S of size n − f, its argmax and the runner-up."""
    n = updates.shape[0]
    scored = sorted(
        (
            (brute_ratio(updates, aggregate, subset), subset)
            for subset in itertools.combinations(range(n), n - f)
        ),
        key=lambda pair: pair[0],
        reverse=True,
    )
    runner_up = scored[1][0] if len(scored) > 1 else -math.inf
    return scored[0][0], scored[0][1], runner_up


def same_ratio(found: float, expected: float, rel: float = 1e-9) -> bool:
    """Equal ratios, infinities included."""
    if math.isinf(expected) or math.isinf(found):
        return found == expected
    return math.isclose(found, expected, rel_tol=rel, abs_tol=1e-12)


def two_point_input(n: int, f: int, direction: np.ndarray, rng):
    """Honest: f at 0 and n − 2f at u; Byzantine: f at u; shuffled.

    Returns the updates and the sorted indices of the honest clients.
    """
    at_zero = np.zeros((f, direction.size))
    at_u = np.tile(direction, (n - f, 1))
    updates = np.vstack([at_zero, at_u])
    honest = np.arange(n - f)  # f at 0, then n − 2f at u
    order = rng.permutation(n)
    position = np.argsort(order)
    return updates[order], tuple(sorted(int(position[i]) for i in honest))


# --------------------------------------------------------------------------
# (a) The configuration that attains f/(n − 2f)
# --------------------------------------------------------------------------

TWO_POINT_CASES = [(3, 1), (5, 1), (5, 2), (7, 2), (7, 3), (10, 3), (12, 2), (9, 4)]


@pytest.mark.parametrize(("n", "f"), TWO_POINT_CASES)
@pytest.mark.parametrize("dimension", [1, 6])
def test_krum_and_multikrum_give_f_over_n_minus_2f(n, f, dimension):
    rng = np.random.default_rng(100 * n + 10 * f + dimension)
    direction = np.ones(1) if dimension == 1 else rng.normal(size=dimension)
    updates, honest = two_point_input(n, f, direction, rng)
    expected = f / (n - 2 * f)
    dist = pairwise_sq_distances(updates)

    aggregates = [rules.krum(updates, f)]
    aggregates += [rules.multikrum(updates, f, m) for m in range(1, n - f + 1)]
    for aggregate in aggregates:
        np.testing.assert_allclose(aggregate.vector, direction, rtol=1e-12)
        assert kappa.ratio(updates, aggregate.vector, honest) == pytest.approx(
            expected, rel=1e-12
        )
        extended = kappa.extend_distances(dist, aggregate.weights)
        assert kappa.ratio_from_distances(extended, honest) == pytest.approx(
            expected, rel=1e-12
        )


def test_two_point_ratio_meets_the_universal_lower_bound():
    n, f = 12, 2
    updates, honest = two_point_input(n, f, np.ones(1), np.random.default_rng(0))
    aggregate = rules.multikrum(updates, f).vector
    universal = [b for b in kappa.bounds("multikrum", n, f).bounds if "any" in b.note]
    assert universal[0].value == pytest.approx(kappa.ratio(updates, aggregate, honest))


# --------------------------------------------------------------------------
# (b) worst_ratio against brute force
# --------------------------------------------------------------------------


def random_case(seed: int):
    """Random updates, f and an aggregate (random point or a rule's output)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 10))
    f = int(rng.integers(0, n))
    updates = rng.normal(size=(n, int(rng.integers(1, 5))))
    updates[: min(f, n - 1)] += rng.normal(scale=3.0, size=updates.shape[1])
    choice = seed % 3
    if choice == 0 or 2 * f >= n:
        aggregate = rng.normal(size=updates.shape[1]) * rng.choice([0.1, 1.0, 4.0])
    elif choice == 1:
        aggregate = rules.multikrum(updates, f).vector
    else:
        aggregate = rules.krum(updates, f).vector
    return updates, aggregate, f


@pytest.mark.parametrize("seed", range(40))
def test_worst_ratio_equals_brute_force(seed):
    updates, aggregate, f = random_case(seed)
    expected, argmax, runner_up = brute_worst(updates, aggregate, f)

    worst = kappa.worst_ratio(updates, aggregate, f)

    assert worst.exact
    assert worst.evaluated == math.comb(updates.shape[0], f)
    assert same_ratio(worst.value, expected)
    assert same_ratio(brute_ratio(updates, aggregate, worst.subset), expected)
    if runner_up < expected * (1 - 1e-6):
        assert worst.subset == argmax


def test_worst_ratio_of_tight_honest_cluster_next_to_far_byzantine_vectors():
    # Σ_Hon ~ 1e-12 next to D ~ 1e8: summing S through its complement alone
    # loses every digit; the result must still match brute force.
    rng = np.random.default_rng(7)
    honest = rng.normal(size=(6, 3)) * 1e-6
    byzantine = rng.normal(size=(3, 3)) * 1e4
    updates = np.vstack([honest, byzantine])
    aggregate = updates.mean(axis=0)
    expected, argmax, _ = brute_worst(updates, aggregate, 3)

    worst = kappa.worst_ratio(updates, aggregate, 3)
    searched = kappa.worst_ratio(updates, aggregate, 3, max_subsets=0)

    assert argmax == (0, 1, 2, 3, 4, 5)
    assert worst.subset == argmax
    assert worst.value == pytest.approx(expected, rel=1e-9)
    assert searched.value == pytest.approx(expected, rel=1e-9)


def test_enumeration_across_blocks_keeps_first_maximum(monkeypatch):
    monkeypatch.setattr(kappa, "_ENUMERATION_BLOCK", 4)
    rng = np.random.default_rng(3)
    updates = rng.normal(size=(8, 2))
    aggregate = rng.normal(size=2)
    expected, argmax, _ = brute_worst(updates, aggregate, 3)

    worst = kappa.worst_ratio(updates, aggregate, 3)

    assert worst.evaluated == math.comb(8, 3)
    assert worst.value == pytest.approx(expected, rel=1e-9)
    assert worst.subset == argmax


@pytest.mark.parametrize("rule", ["mean", "krum", "multikrum", "geomed"])
def test_hull_weights_and_vectors_give_the_same_worst_ratio(rule):
    rng = np.random.default_rng(11)
    updates = rng.normal(size=(9, 4))
    updates[:2] += 5.0
    aggregate = aggregate_of(rule, updates, 2)

    from_vectors = kappa.worst_ratio(updates, aggregate.vector, 2)
    extended = kappa.extend_distances(pairwise_sq_distances(updates), aggregate.weights)
    from_weights = kappa.worst_ratio_from_distances(extended, 2)

    assert from_weights.value == pytest.approx(from_vectors.value, rel=1e-9)
    assert from_weights.subset == from_vectors.subset


def test_ratio_of_a_subset_of_any_size_matches_the_definition():
    rng = np.random.default_rng(5)
    updates = rng.normal(size=(7, 3))
    aggregate = rng.normal(size=3)
    extended = kappa.extend_distances_with_vector(updates, aggregate)
    for subset in [(0, 1), (2, 4, 6), (0, 1, 2, 3, 4, 5, 6)]:
        expected = brute_ratio(updates, aggregate, subset)
        assert kappa.ratio(updates, aggregate, subset) == pytest.approx(expected)
        assert kappa.ratio_from_distances(extended, subset) == pytest.approx(expected)


# --------------------------------------------------------------------------
# (c) No ratio above a proven upper bound
# --------------------------------------------------------------------------


def aggregate_of(rule: str, updates: np.ndarray, f: int, m: int | None = None):
    """The rule's aggregate (an object with .vector and .weights)."""
    if rule == "mean":
        return rules.mean(updates)
    if rule == "krum":
        return rules.krum(updates, f)
    if rule == "multikrum":
        return rules.multikrum(updates, f, m)
    return rules.geomed(updates, tol=GEOMED_TOL, max_iter=GEOMED_MAX_ITER)


def rule_configurations(n: int, f: int) -> list[tuple[str, int | None]]:
    """Krum, MultiKrum at every m and GeomMed."""
    return [("krum", None), ("geomed", None)] + [
        ("multikrum", m) for m in range(1, n - f + 1)
    ]


def assert_within_upper_bound(updates: np.ndarray, f: int) -> None:
    """max_S ρ_S ≤ the rule's proven upper bound, for every configuration.

    The aggregate enters through the rule's weights, as in the server: a set S
    of n − f copies then gets Σ_S = 0 and a bias of exactly 0, where the
    float64 vector (1/3)(v + v + v) may differ from v in its last bit.
    """
    n = updates.shape[0]
    dist = pairwise_sq_distances(updates)
    for rule, m in rule_configurations(n, f):
        aggregate = aggregate_of(rule, updates, f, m)
        assert aggregate.converged is not False  # the bound is for GeomMed itself
        extended = kappa.extend_distances(dist, aggregate.weights)
        worst = kappa.worst_ratio_from_distances(extended, f)
        upper = kappa.bounds(rule, n, f, m).upper
        assert upper is not None
        slack = 1e-6 if rule == "geomed" else 1e-9
        assert worst.exact
        assert worst.value <= upper.value * (1 + slack), (rule, m, worst, upper)


def honest_cloud(rng, n_honest: int, dimension: int) -> np.ndarray:
    """Honest updates: a shifted Gaussian cloud with uneven spread."""
    scales = rng.uniform(0.2, 2.0, size=dimension)
    return rng.normal(size=dimension) + rng.normal(size=(n_honest, dimension)) * scales


def alie(honest: np.ndarray, f: int, z: float) -> np.ndarray:
    """A little is enough (Baruch, Baruch, Goldberg 2019): μ − z·σ per coordinate."""
    return np.tile(honest.mean(axis=0) - z * honest.std(axis=0), (f, 1))


def ipm(honest: np.ndarray, f: int, epsilon: float) -> np.ndarray:
    """Inner product manipulation (Xie, Koyejo, Gupta 2020): −ε·μ."""
    return np.tile(-epsilon * honest.mean(axis=0), (f, 1))


def sign_flip(honest: np.ndarray, f: int) -> np.ndarray:
    """Sign flipping: the negated updates of f honest clients."""
    return -honest[:f]


def mimic(honest: np.ndarray, f: int) -> np.ndarray:
    """Mimic (Karimireddy, He, Jaggi 2022): copies of one honest update."""
    return np.tile(honest[0], (f, 1))


def far_away(honest: np.ndarray, f: int) -> np.ndarray:
    """Large-norm vectors far from every honest update."""
    rng = np.random.default_rng(int(abs(honest.sum()) * 1e6) % 2**32)
    return rng.normal(size=(f, honest.shape[1])) * 1e6


ATTACKS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "alie-0.5": lambda h, f: alie(h, f, 0.5),
    "alie-1.5": lambda h, f: alie(h, f, 1.5),
    "ipm-0.1": lambda h, f: ipm(h, f, 0.1),
    "ipm-10": lambda h, f: ipm(h, f, 10.0),
    "sign-flip": sign_flip,
    "mimic": mimic,
    "far-away": far_away,
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize(("n", "f"), [(7, 2), (9, 4)])
def test_attacks_stay_within_upper_bounds(attack, n, f):
    rng = np.random.default_rng(n * 31 + f)
    honest = honest_cloud(rng, n - f, 3)
    byzantine = ATTACKS[attack](honest, f)
    assert_within_upper_bound(np.vstack([honest, byzantine]), f)


@pytest.mark.parametrize("seed", range(6))
def test_random_inputs_stay_within_upper_bounds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 9))
    f = int(rng.integers(1, (n + 1) // 2))
    updates = rng.normal(size=(n, int(rng.integers(1, 4))))
    updates[:f] = updates[:f] * rng.uniform(0.1, 10.0) + rng.normal(scale=2.0)
    assert_within_upper_bound(updates, f)


@pytest.mark.parametrize(("n", "f"), [(7, 2), (8, 3)])
def test_clusters_and_lines_stay_within_upper_bounds(n, f):
    rng = np.random.default_rng(n + f)
    # Two honest clusters and a Byzantine cluster between them.
    left = rng.normal(size=(2, 2)) * 0.05
    right = np.array([4.0, 0.0]) + rng.normal(size=(n - f - 2, 2)) * 0.05
    byzantine = np.array([2.0, 0.5]) + rng.normal(size=(f, 2)) * 0.05
    assert_within_upper_bound(np.vstack([left, right, byzantine]), f)
    # Every point on one line, Byzantine at the far end.
    positions = np.concatenate([rng.uniform(0, 1, n - f), rng.uniform(2, 3, f)])
    assert_within_upper_bound(np.outer(positions, rng.normal(size=3)), f)


@pytest.mark.parametrize("rule", ["krum", "multikrum", "geomed"])
def test_optimised_byzantine_placement_stays_within_upper_bound(rule):
    # A hill climb moves the Byzantine vectors to maximise max_S ρ_S; every
    # input it visits must respect the bound.
    n, f = 7, 2
    rng = np.random.default_rng({"krum": 1, "multikrum": 2, "geomed": 3}[rule])
    honest = rng.normal(size=(n - f, 2))
    byzantine = honest.mean(axis=0) + rng.normal(size=(f, 2))
    upper = kappa.bounds(rule, n, f).upper
    assert upper is not None
    slack = 1e-6 if rule == "geomed" else 1e-9

    def worst_of(candidate) -> float | None:
        updates = np.vstack([honest, candidate])
        aggregate = aggregate_of(rule, updates, f)
        if aggregate.converged is False:
            return None  # not GeomMed to the stated tolerance: no bound applies
        extended = kappa.extend_distances(
            pairwise_sq_distances(updates), aggregate.weights
        )
        return kappa.worst_ratio_from_distances(extended, f).value

    start = best = worst_of(byzantine)
    assert best is not None
    step, checked = 1.0, 0
    for _ in range(120):
        candidate = byzantine + rng.normal(scale=step, size=byzantine.shape)
        value = worst_of(candidate)
        if value is None:
            continue
        checked += 1
        assert value <= upper.value * (1 + slack)
        if value > best:
            byzantine, best = candidate, value
        else:
            step = max(step * 0.97, 1e-3)
    assert checked >= 100
    assert best > 1.5 * start  # the climb found worse placements


# --------------------------------------------------------------------------
# (d) Conventions at Σ_S = 0
# --------------------------------------------------------------------------

# 0.1 and 1/3 are not exact in binary: a plain mean of copies may differ from
# the copy in its last bit, which must not turn 0/0 into x/0.
REPEATED = np.array([0.1, 0.7, 1.0 / 3.0])
OTHER = np.array([2.0, -1.0, 0.5])


def duplicated_input() -> np.ndarray:
    """Three copies of one vector and one other vector."""
    return np.vstack([REPEATED, REPEATED, REPEATED, OTHER])


def test_ratio_is_minus_infinity_for_zero_over_zero():
    updates = duplicated_input()
    assert kappa.ratio(updates, REPEATED, [0, 1, 2]) == -math.inf
    extended = kappa.extend_distances_with_vector(updates, REPEATED)
    assert kappa.ratio_from_distances(extended, [0, 1, 2]) == -math.inf


def test_ratio_is_plus_infinity_for_positive_over_zero():
    updates = duplicated_input()
    nearby = REPEATED + np.array([1e-9, 0.0, 0.0])
    assert kappa.ratio(updates, nearby, [0, 1, 2]) == math.inf
    extended = kappa.extend_distances_with_vector(updates, nearby)
    assert kappa.ratio_from_distances(extended, [0, 1, 2]) == math.inf


@pytest.mark.parametrize(
    "weights", [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3, 0.0]]
)
def test_hull_weights_on_copies_give_exact_zero_over_zero(weights):
    updates = duplicated_input()
    extended = kappa.extend_distances(pairwise_sq_distances(updates), weights)
    assert kappa.ratio_from_distances(extended, [0, 1, 2]) == -math.inf
    assert extended[-1, :3].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("max_subsets", [20000, 0])
def test_worst_ratio_reports_plus_infinity_at_a_zero_spread_set(max_subsets):
    worst = kappa.worst_ratio(duplicated_input(), OTHER, 1, max_subsets=max_subsets)
    assert worst.value == math.inf
    assert worst.subset == (0, 1, 2)


@pytest.mark.parametrize("max_subsets", [20000, 0])
def test_worst_ratio_is_minus_infinity_when_every_set_is_zero_over_zero(max_subsets):
    updates = np.tile(REPEATED, (5, 1))
    worst = kappa.worst_ratio(updates, REPEATED, 2, max_subsets=max_subsets)
    assert worst.value == -math.inf


def test_zero_over_zero_set_loses_to_any_finite_ratio():
    # S = {copy, copy, other}: with δ = other − copy, v̄_S − copy = δ/3, so
    # bias = ‖δ‖²/9 and Σ_S = (2‖δ/3‖² + ‖2δ/3‖²)/3 = 2‖δ‖²/9: ρ = 1/2 for each
    # of the three such sets; the set of three copies is 0/0 = −∞.
    worst = kappa.worst_ratio(duplicated_input(), REPEATED, 1)
    assert worst.value == pytest.approx(0.5, rel=1e-12)
    assert 3 in worst.subset


def test_inputs_are_not_modified():
    for dimension in (1, 2):
        rng = np.random.default_rng(dimension)
        updates = rng.normal(size=(6, dimension))
        aggregate = rng.normal(size=dimension)
        before = (updates.copy(), aggregate.copy())
        kappa.worst_ratio(updates, aggregate, 2)
        kappa.ratio(updates, aggregate, [0, 1, 2])
        np.testing.assert_array_equal(updates, before[0])
        np.testing.assert_array_equal(aggregate, before[1])


# --------------------------------------------------------------------------
# (e) The local search finds the maximum
# --------------------------------------------------------------------------


def search_case(seed: int):
    """A random small input with a rule's aggregate, sometimes clustered."""
    rng = np.random.default_rng(10_000 + seed)
    n = int(rng.integers(6, 13))
    f = int(rng.integers(1, (n + 1) // 2))
    updates = rng.normal(size=(n, int(rng.integers(1, 6))))
    if seed % 2:
        updates[:f] = updates[:f] * 0.1 + rng.normal(scale=3.0, size=updates.shape[1])
    rule = ("mean", "krum", "multikrum", "geomed")[seed % 4]
    return updates, aggregate_of(rule, updates, f).vector, f


def test_local_search_finds_the_exact_maximum_in_95_percent_of_cases():
    cases = 200
    found = 0
    for seed in range(cases):
        updates, aggregate, f = search_case(seed)
        extended = kappa.extend_distances_with_vector(updates, aggregate)
        exact = kappa.worst_ratio_from_distances(extended, f)
        searched = kappa.worst_ratio_from_distances(
            extended, f, max_subsets=1, seed=seed
        )

        assert exact.exact
        assert not searched.exact
        assert searched.evaluated > 0
        # A lower estimate: the ratio of a real subset, never above the maximum.
        assert searched.value <= exact.value * (1 + 1e-9)
        assert same_ratio(
            brute_ratio(updates, aggregate, searched.subset), searched.value
        )
        assert_no_single_swap_improves(updates, aggregate, searched)
        found += same_ratio(searched.value, exact.value)
    assert found >= 0.95 * cases


def assert_no_single_swap_improves(updates, aggregate, searched) -> None:
    """The search stops at a local maximum: no one-in, one-out swap is better."""
    inside = set(searched.subset)
    outside = set(range(updates.shape[0])) - inside
    for leaving, joining in itertools.product(inside, outside):
        swapped = sorted((inside - {leaving}) | {joining})
        neighbour = brute_ratio(updates, aggregate, swapped)
        assert neighbour <= searched.value * (1 + 1e-9) + 1e-12


# --------------------------------------------------------------------------
# (f) Bounds by hand, and the extended distance matrix
# --------------------------------------------------------------------------


def test_bounds_multikrum_n12_f2_default_m():
    # c = (1 − 2/12)/(1 − 4/12) = 5/4; m = n − f = 10.
    # (√8 + √4)/√10 + 2/10 = 2(1 + √2)/√10 + 1/5 ≈ 1.7269 < √2 + 1, so the
    # upper bound is (5/4)(2(1 + √2)/√10 + 1/5)² ≈ 3.7277; lower 4·(1/6)/(2/3).
    table = kappa.bounds("multikrum", 12, 2)
    assert table.m == 10
    expected = 1.25 * (2 * (1 + math.sqrt(2)) / math.sqrt(10) + 0.2) ** 2
    assert table.upper.value == pytest.approx(expected, rel=1e-12)
    assert table.lower.value == pytest.approx(1.0)
    assert [b.value for b in table.bounds if "any" in b.note] == [0.25]


def test_bounds_krum_n12_f2_even():
    # MultiKrum theorem at m = 1: (5/4)(√2 + 1)² = 15/4 + (5/2)√2 ≈ 7.2855;
    # earlier 6c = 7.5; slides, n even: (1 − 2/12)/(1 − 4/12 + 2/12) = 1.
    table = kappa.bounds("krum", 12, 2)
    assert table.m == 1
    theorem = 15 / 4 + 2.5 * math.sqrt(2)
    assert table.upper.value == pytest.approx(theorem, rel=1e-12)
    assert sorted(b.value for b in table.bounds if b.kind == "upper") == [
        pytest.approx(theorem, rel=1e-12),
        pytest.approx(7.5),
    ]
    assert table.lower.value == pytest.approx(1.0)
    assert "slides" in table.lower.note


def test_bounds_krum_n11_f2_odd():
    # c = 9/7; (9/7)(√2 + 1)² = 27/7 + (18/7)√2 ≈ 7.4937; 6c = 54/7;
    # slides, n odd: (1 − 1/11)/(1 − 4/11 + 1/11) = (10/11)/(8/11) = 1.25.
    table = kappa.bounds("krum", 11, 2)
    assert table.upper.value == pytest.approx(27 / 7 + 18 / 7 * math.sqrt(2))
    assert table.lower.value == pytest.approx(1.25)


def test_bounds_multikrum_n10_f4():
    # c = 6/2 = 3. m = 6: (√2 + √8)/√6 + 4/6 = √3 + 2/3 = 2.3987175 < 2.4142136
    # so the upper bound is 3(√3 + 2/3)² = 31/3 + 4√3; f/n = 0.4 ≥ 1/3 so the
    # (n − f)-MultiKrum lower bound does not apply; universal 4/2 = 2.
    table = kappa.bounds("multikrum", 10, 4, 6)
    assert table.upper.value == pytest.approx(31 / 3 + 4 * math.sqrt(3), rel=1e-12)
    assert table.lower.value == pytest.approx(2.0)
    assert [b.condition for b in table.inapplicable if b.kind == "lower"] == [
        "f/n ≥ 1/2",
        "f/n < 1/3, m = n − f",
    ]
    # m = 1: min(√2 + 1, √2 + √8 + 4) = √2 + 1, 3(3 + 2√2) = 9 + 6√2;
    # 6c = 18; slides (1 − 0.2)/(1 − 0.8 + 0.2) = 2.
    one = kappa.bounds("multikrum", 10, 4, 1)
    assert one.upper.value == pytest.approx(9 + 6 * math.sqrt(2), rel=1e-12)
    assert one.lower.value == pytest.approx(2.0)


def test_bounds_geomed_and_mean():
    assert kappa.bounds("geomed", 12, 2).upper.value == pytest.approx(6.25)
    assert kappa.bounds("geomed", 10, 4).upper.value == pytest.approx(36.0)
    assert kappa.bounds("geomed", 10, 4).m is None
    mean = kappa.bounds("mean", 10, 1)
    assert (mean.lower.value, mean.upper.value) == (math.inf, math.inf)
    honest_only = kappa.bounds("mean", 10, 0)
    assert (honest_only.lower.value, honest_only.upper.value) == (0.0, 0.0)


def test_bounds_without_byzantine_clients():
    # f = 0, m = n = 5: c = 1, (√5 + 0)/√5 + 0 = 1, so MultiKrum = Mean ≤ 1.
    table = kappa.bounds("multikrum", 5, 0)
    assert table.upper.value == pytest.approx(1.0)
    assert table.lower.value == 0.0


def test_bounds_without_honest_majority():
    for rule in ("krum", "multikrum", "geomed"):
        table = kappa.bounds(rule, 4, 2)
        assert table.lower.value == math.inf
        assert table.upper is None


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (("median", 10, 2), "median"),
        (("krum", 0, 0), "0"),
        (("krum", 10, -1), "-1"),
        (("krum", 10, 10), "10"),
        (("multikrum", 10, 2, 0), "0"),
        (("multikrum", 10, 2, 9), "9"),
        (("krum", 10, 2, 2), "2"),
    ],
)
def test_bounds_reject_bad_arguments(arguments, named):
    with pytest.raises(ValueError, match=named):
        kappa.bounds(*arguments)


def test_bounds_table_lists_every_rule_with_sources():
    text = kappa.bounds_table(None, 12, 2, 10)
    for expected in (
        "mean: κ* = ∞",
        "krum (m = 1): 1 ≤ κ* ≤ 7.286",
        "multikrum (m = 10): 1 ≤ κ* ≤ 3.728",
        "geomed: 0.25 ≤ κ* ≤ 6.25",
        "Bareilles, Bouaziz, Fageot, El Mhamdi 2026",
        "read from slides",
    ):
        assert expected in text
    assert "geomed" not in kappa.bounds_table("krum", 12, 2)


def test_extend_distances_matches_vectors_for_affine_weights():
    rng = np.random.default_rng(2)
    updates = rng.normal(size=(7, 5))
    raw = rng.normal(size=7)  # some weights negative
    weights = raw / raw.sum()
    aggregate = weights @ updates
    expected = np.sum((updates - aggregate) ** 2, axis=1)
    dist = pairwise_sq_distances(updates)

    extended = kappa.extend_distances(dist, weights)
    with_vector = kappa.extend_distances_with_vector(updates, aggregate)

    assert extended.shape == (8, 8)
    np.testing.assert_array_equal(extended[:7, :7], dist)
    np.testing.assert_allclose(extended[7, :7], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(extended[7, :7], extended[:7, 7])
    assert extended[7, 7] == 0.0
    np.testing.assert_allclose(with_vector[7, :7], expected, rtol=1e-12)
    np.testing.assert_allclose(with_vector[:7, :7], dist, rtol=1e-12)


def test_extend_distances_rejects_weights_that_do_not_sum_to_one():
    dist = pairwise_sq_distances(np.eye(3))
    with pytest.raises(ValueError, match="sum to 1"):
        kappa.extend_distances(dist, [0.5, 0.3, 0.1])
    with pytest.raises(ValueError, match="shape"):
        kappa.extend_distances(dist, [0.5, 0.5])


def test_subset_and_f_validation():
    updates = np.eye(3)
    with pytest.raises(ValueError, match="distinct"):
        kappa.ratio(updates, np.zeros(3), [0, 0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        kappa.ratio(updates, np.zeros(3), [3])
    with pytest.raises(ValueError, match="f must satisfy"):
        kappa.worst_ratio(updates, np.zeros(3), 3)
