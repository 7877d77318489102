"""Tests of strategies.rules against brute force and an independent solver."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize

from strategies import geometry, rules

# --- brute force -----------------------------------------------------------------


def brute_scores(updates: np.ndarray, f: int, neighbours: str) -> list[float]:
    """Return Krum scores from the definition, distances by direct differences.

    "self": s(v) sums the n − f smallest ‖v − u‖² over all u ∈ V, v included;
    "blanchard": the n − f − 2 smallest over u ≠ v (by index).
    """
    n = len(updates)
    scores = []
    for i in range(n):
        others = range(n) if neighbours == "self" else (j for j in range(n) if j != i)
        distances = sorted(
            float(np.sum((updates[i] - updates[j]) ** 2)) for j in others
        )
        count = n - f if neighbours == "self" else n - f - 2
        scores.append(float(sum(distances[:count])))
    return scores


def brute_selection(scores: list[float], m: int) -> list[int]:
    """Return the m indices of smallest score, ties by lowest index."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))[:m]


def valid_krum_parameters(n: int, f: int, m: int | None, neighbours: str) -> bool:
    """Tell whether (n, f, m, neighbours) satisfy the rules' preconditions."""
    if f < 0 or (neighbours == "self" and n <= 2 * f):
        return False
    if neighbours == "blanchard" and n < 2 * f + 3:
        return False
    return m is None or 1 <= m <= n - f


# --- input strategies ---------------------------------------------------------------


@st.composite
def integer_valued(draw: st.DrawFn, max_n: int = 9) -> np.ndarray:
    """An (n, d) float matrix of small integers drawn from a small pool of rows.

    Small values and a small pool make ties in distances and scores, and
    duplicated updates, frequent.
    """
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 4))
    pool = draw(
        arrays(np.int64, (draw(st.integers(1, n)), d), elements=st.integers(-3, 3))
    )
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n))
    return pool[picks].astype(np.float64)


@st.composite
def float_valued(draw: st.DrawFn, max_n: int = 9, max_d: int = 4) -> np.ndarray:
    """An (n, d) float64 matrix of standard-normal-like values, some rows repeated."""
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    updates = rng.standard_normal((n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    repeats = draw(st.lists(st.integers(0, n - 1), max_size=n // 2))
    for target, source in enumerate(repeats):
        updates[n - 1 - target] = updates[source]
    return updates


@st.composite
def krum_case(draw: st.DrawFn, valued: st.SearchStrategy[np.ndarray]):  # type: ignore[no-untyped-def]
    """Updates with f, m and a neighbour convention (possibly invalid)."""
    updates = draw(valued)
    n = len(updates)
    f = draw(st.integers(0, n))
    m = draw(st.one_of(st.none(), st.integers(0, n + 1)))
    neighbours = draw(st.sampled_from(["self", "blanchard"]))
    return updates, f, m, neighbours


# --- Krum and MultiKrum -----------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(case=krum_case(integer_valued()))
def test_multikrum_equals_brute_force_exactly_on_integer_valued_updates(case) -> None:  # type: ignore[no-untyped-def]
    updates, f, m, neighbours = case
    if not valid_krum_parameters(len(updates), f, m, neighbours):
        with pytest.raises(ValueError, match=r"n=\d+"):
            rules.multikrum(updates, f, m, neighbours)
        return

    result = rules.multikrum(updates, f, m, neighbours)
    scores = brute_scores(updates, f, neighbours)
    m_used = len(updates) - f if m is None else m
    selected = brute_selection(scores, m_used)

    assert result.scores is not None and result.selected is not None
    assert result.scores.tolist() == scores
    assert result.selected.tolist() == selected
    expected_weights = np.zeros(len(updates))
    expected_weights[selected] = 1.0 / m_used
    np.testing.assert_array_equal(result.weights, expected_weights)
    assert result.vector is not None
    np.testing.assert_allclose(
        result.vector, updates[selected].mean(axis=0), rtol=1e-15, atol=1e-15
    )


@settings(max_examples=300, deadline=None)
@given(case=krum_case(float_valued()))
def test_multikrum_matches_brute_force_on_float_updates(case) -> None:  # type: ignore[no-untyped-def]
    updates, f, m, neighbours = case
    assume(valid_krum_parameters(len(updates), f, m, neighbours))
    result = rules.multikrum(updates, f, m, neighbours)
    scores = np.array(brute_scores(updates, f, neighbours))
    m_used = len(updates) - f if m is None else m
    assert result.scores is not None and result.selected is not None

    tolerance = 1e-12 * (scores.max() + 1e-300)
    np.testing.assert_allclose(result.scores, scores, rtol=0, atol=tolerance)
    # The selection is the brute-force one up to rounding: selected scores never
    # exceed unselected ones, and are in non-decreasing order.
    chosen = scores[result.selected]
    rest = np.delete(scores, result.selected)
    assert len(set(result.selected.tolist())) == m_used
    assert np.all(np.diff(chosen) >= -tolerance)
    if rest.size:
        assert chosen.max() <= rest.min() + tolerance
    assert result.weights.sum() == pytest.approx(1.0, abs=1e-15)
    assert result.vector is not None
    np.testing.assert_allclose(
        result.vector,
        result.weights @ updates,
        rtol=1e-12,
        atol=1e-12 * np.abs(updates).max(),
    )


@settings(max_examples=200, deadline=None)
@given(updates=float_valued(), data=st.data())
def test_exactly_duplicated_float_updates_tie_exactly(
    updates: np.ndarray, data: st.DataObject
) -> None:
    n = len(updates)
    source = data.draw(st.integers(0, n - 1))
    with_copy = np.vstack([updates, updates[source]])
    f = data.draw(st.integers(0, n // 2))
    result = rules.multikrum(with_copy, f, m=1)
    assert result.scores is not None and result.selected is not None
    assert result.scores[n] == result.scores[source]
    assert result.selected[0] != n  # the copy never beats its lower-index twin


@settings(max_examples=200, deadline=None)
@given(case=krum_case(integer_valued()))
def test_krum_is_multikrum_with_one_selected(case) -> None:  # type: ignore[no-untyped-def]
    updates, f, _, neighbours = case
    assume(valid_krum_parameters(len(updates), f, 1, neighbours))
    krum = rules.krum(updates, f, neighbours)
    single = rules.multikrum(updates, f, 1, neighbours)

    assert krum.selected is not None and single.selected is not None
    assert krum.selected.tolist() == single.selected.tolist()
    chosen = int(krum.selected[0])
    np.testing.assert_array_equal(krum.weights, np.eye(len(updates))[chosen])
    assert krum.vector is not None
    np.testing.assert_array_equal(krum.vector, updates[chosen])


def test_krum_with_no_byzantine_and_default_m_is_the_mean_of_all() -> None:
    updates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    result = rules.multikrum(updates, f=0)
    assert result.selected is not None
    # "self", f = 0: s(v) is the sum of all squared distances from v.
    assert result.scores is not None
    np.testing.assert_array_equal(result.scores, [10.0, 11.0, 19.0])
    assert result.selected.tolist() == [0, 1, 2]
    assert result.vector is not None
    np.testing.assert_allclose(result.vector, [1 / 3, 1.0], rtol=1e-15)


def test_the_two_neighbour_conventions_differ_as_defined() -> None:
    # Points on a line at 0, 1, 3, 7, 20 with f = 1.
    # "self": the 4 closest including v; "blanchard": the 2 closest others.
    updates = np.array([[0.0], [1.0], [3.0], [7.0], [20.0]])
    own = rules.krum(updates, 1, "self")
    original = rules.krum(updates, 1, "blanchard")
    assert own.scores is not None and original.scores is not None
    np.testing.assert_array_equal(
        own.scores,
        [
            0 + 1 + 9 + 49,
            0 + 1 + 4 + 36,
            0 + 4 + 9 + 16,
            0 + 16 + 36 + 49,
            0 + 169 + 289 + 361,
        ],
    )
    np.testing.assert_array_equal(
        original.scores, [1 + 9, 1 + 4, 4 + 9, 16 + 36, 169 + 289]
    )
    assert own.selected is not None and original.selected is not None
    assert own.selected.tolist() == [2] and original.selected.tolist() == [1]


def test_mean_is_the_unweighted_average() -> None:
    rng = np.random.default_rng(0)
    updates = rng.standard_normal((7, 5)).astype(np.float32)
    result = rules.mean(updates)
    np.testing.assert_array_equal(result.weights, np.full(7, 1 / 7))
    assert result.vector is not None
    np.testing.assert_allclose(
        result.vector, updates.astype(np.float64).mean(axis=0), rtol=1e-13
    )
    from_distances = rules.mean_from_distances(geometry.pairwise_sq_distances(updates))
    assert from_distances.vector is None
    np.testing.assert_array_equal(from_distances.weights, result.weights)


def test_distance_level_rules_agree_with_vector_level_ones() -> None:
    rng = np.random.default_rng(1)
    updates = rng.standard_normal((9, 6))
    dist = geometry.pairwise_sq_distances(updates)
    pairs = [
        (rules.krum_from_distances(dist, 2), rules.krum(updates, 2)),
        (
            rules.multikrum_from_distances(dist, 2, 4, "blanchard"),
            rules.multikrum(updates, 2, 4, "blanchard"),
        ),
        (rules.geomed_from_distances(dist), rules.geomed(updates)),
    ]
    for from_distances, from_updates in pairs:
        assert from_distances.vector is None
        np.testing.assert_array_equal(from_distances.weights, from_updates.weights)
    assert rules.RULES == ("mean", "krum", "multikrum", "geomed")


def test_krum_on_close_float32_clients_picks_the_float64_choice() -> None:
    """10 × 10⁶ float32 around 1.0 differing by ~1e-4: Krum as in float64."""
    rng = np.random.default_rng(7)
    n, d, f = 10, 1_000_000, 3
    updates = np.empty((n, d), dtype=np.float32)
    for i in range(n):
        updates[i] = 1.0 + 1e-4 * (1.0 + 0.03 * ((i * 7) % n)) * rng.standard_normal(d)

    wide_scores = brute_scores(updates.astype(np.float64), f, "self")
    result = rules.krum(updates, f)
    assert result.selected is not None and result.scores is not None
    assert result.selected.tolist() == brute_selection(wide_scores, 1)
    np.testing.assert_allclose(result.scores, wide_scores, rtol=1e-6)


# --- GeomMed ---------------------------------------------------------------------


def objective(z: np.ndarray, updates: np.ndarray) -> float:
    """Return Σ_i ‖z − v_i‖."""
    return float(np.sqrt(((updates - z) ** 2).sum(axis=1)).sum())


def scipy_minimum(updates: np.ndarray, candidate: np.ndarray) -> float:
    """Return the least Σ‖z − v_i‖ found by Nelder–Mead from several starts.

    Starts: the mean, the coordinate-wise median and the candidate under test
    (from which Nelder–Mead can only go down); each run is restarted once from
    its end point (Nelder–Mead stalls on kinks).
    """
    starts = [updates.mean(axis=0), np.median(updates, axis=0), candidate]
    options = {"xatol": 1e-13, "fatol": 1e-15, "maxiter": 10_000, "maxfev": 20_000}
    best = np.inf
    for start in starts:
        point = start
        for _ in range(2):
            run = minimize(
                objective,
                point,
                args=(updates,),
                method="Nelder-Mead",
                options=options,
            )
            point = run.x
            best = min(best, float(run.fun))
    return best


def dual_lower_bound(z: np.ndarray, updates: np.ndarray) -> float:
    """Return a certified lower bound on min_z Σ‖z − v_i‖ built from the point z.

    Weak duality: for any u_i with Σ u_i = 0 and ‖u_i‖ ≤ 1,
    Σ‖y − v_i‖ ≥ Σ⟨u_i, y − v_i⟩ = Σ⟨u_i, z − v_i⟩ for every y.
    """
    differences = z - updates
    lengths = np.sqrt((differences**2).sum(axis=1))
    far = lengths > 1e-12 * max(lengths.max(), 1e-300)
    directions = np.zeros_like(updates)
    directions[far] = differences[far] / lengths[far, None]
    if (~far).any():
        directions[~far] = -directions[far].sum(axis=0) / np.count_nonzero(~far)
    directions -= directions.mean(axis=0)
    directions /= max(1.0, float(np.sqrt((directions**2).sum(axis=1)).max()))
    return float((directions * differences).sum())


@settings(max_examples=50, deadline=None)
@given(updates=st.one_of(float_valued(max_n=8, max_d=4), integer_valued(max_n=8)))
def test_geomed_reaches_the_minimum_of_an_independent_solver(
    updates: np.ndarray,
) -> None:
    result = rules.geomed(updates)
    assert result.vector is not None
    ours = objective(result.vector, updates)
    reference = scipy_minimum(updates, result.vector)
    scale = float(np.abs(updates).max()) + 1e-300

    assert result.converged
    assert ours <= reference * (1 + 1e-9) + 1e-12 * scale
    assert (
        dual_lower_bound(result.vector, updates) <= ours * (1 + 1e-12) + 1e-12 * scale
    )
    assert (
        ours - dual_lower_bound(result.vector, updates) <= 1e-6 * ours + 1e-12 * scale
    )
    assert result.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(result.weights >= 0.0)
    np.testing.assert_allclose(
        result.vector, result.weights @ updates, rtol=1e-12, atol=1e-12 * scale
    )


@settings(max_examples=100, deadline=None)
@given(
    point=arrays(np.float64, st.integers(1, 5), elements=st.floats(-1e6, 1e6)),
    n=st.integers(1, 7),
)
def test_geomed_is_exact_on_coincident_updates(point: np.ndarray, n: int) -> None:
    updates = np.tile(point, (n, 1))
    result = rules.geomed(updates)
    assert result.vector is not None
    np.testing.assert_array_equal(result.vector, point)
    assert result.residual == 0.0 and result.converged


def test_geomed_returns_a_majority_point_exactly() -> None:
    # Three copies of p against two other points: Σ of 2 unit vectors ≤ 3, so p
    # is the geometric median (Vardi–Zhang's condition at a data point).
    rng = np.random.default_rng(2)
    p = rng.standard_normal(4)
    updates = np.vstack([rng.standard_normal(4), p, p, rng.standard_normal(4), p])
    result = rules.geomed(updates)
    assert result.vector is not None
    np.testing.assert_array_equal(result.vector, p)
    assert result.converged and result.residual == 0.0


@pytest.mark.parametrize("n", [3, 5, 7, 9])
def test_geomed_in_one_dimension_is_the_median_update(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.standard_normal(n) * 10.0
    result = rules.geomed(values[:, None])
    assert result.vector is not None
    assert result.vector[0] == np.median(values)


def test_geomed_stays_finite_and_accurate_with_one_update_1e12_larger() -> None:
    rng = np.random.default_rng(0)
    updates = rng.standard_normal((10, 5))
    updates[3] *= 1e12
    result = rules.geomed(updates)
    assert result.vector is not None and np.all(np.isfinite(result.vector))
    assert result.converged

    # Far away, ‖z − v_3‖ = ‖v_3‖ − ⟨u, z⟩ + O(‖z‖²/‖v_3‖), u = v_3/‖v_3‖: the
    # minimiser is that of Σ_{i≠3} ‖z − v_i‖ − ⟨u, z⟩, found here by Newton.
    honest = np.delete(updates, 3, axis=0)
    pull = updates[3] / np.linalg.norm(updates[3])
    z = np.median(honest, axis=0)
    for _ in range(50):
        differences = z - honest
        lengths = np.sqrt((differences**2).sum(axis=1))
        units = differences / lengths[:, None]
        gradient = units.sum(axis=0) - pull
        hessian = sum(
            (np.eye(5) - np.outer(unit, unit)) / length
            for unit, length in zip(units, lengths, strict=True)
        )
        z = z - np.linalg.solve(hessian, gradient)
    spread = float(np.sqrt(((honest - honest.mean(axis=0)) ** 2).sum(axis=1)).mean())
    # Limitation measured here: D alone resolves the others only to ~1e-6 of
    # their spread when one update is 10¹² times larger.
    assert np.linalg.norm(result.vector - z) <= 1e-4 * spread


def test_geomed_reports_iterations_and_stops_at_max_iter() -> None:
    rng = np.random.default_rng(3)
    updates = rng.standard_normal((8, 3))
    full = rules.geomed(updates, tol=1e-10)
    capped = rules.geomed(updates, tol=0.0, max_iter=1)
    assert full.converged and full.residual is not None and full.residual <= 1e-10
    assert full.iterations is not None and 1 <= full.iterations <= 1000
    assert capped.iterations == 1 and not capped.converged
    assert capped.residual is not None and capped.residual > 0.0


# --- preconditions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rules.krum(np.ones((5, 2)), -1), "f=-1"),
        (lambda: rules.krum(np.ones((4, 2)), 2), r"n > 2f.*n=4, f=2"),
        (lambda: rules.multikrum(np.ones((6, 2)), 3), r"n=6, f=3"),
        (lambda: rules.krum(np.ones((6, 2)), 2, "blanchard"), r"2f \+ 3.*n=6, f=2"),
        (lambda: rules.multikrum(np.ones((6, 2)), 1, m=0), r"m=0 \(n=6, f=1\)"),
        (lambda: rules.multikrum(np.ones((6, 2)), 1, m=6), r"n − f = 5.*m=6"),
        (lambda: rules.krum(np.ones((6, 2)), 1, "nearest"), "neighbours"),  # type: ignore[arg-type]
        (lambda: rules.krum(np.zeros((0, 2)), 0), "empty"),
        (lambda: rules.geomed([]), "empty"),
        (lambda: rules.mean(np.array([[1.0, np.nan]])), "finite"),
        (lambda: rules.geomed(np.array([[1.0], [np.inf]])), "finite"),
        (lambda: rules.krum_from_distances(np.zeros((2, 3)), 0), "square"),
        (lambda: rules.geomed_from_distances(np.zeros((0, 0))), "empty"),
        (lambda: rules.mean_from_distances([[0.0, np.nan], [np.nan, 0.0]]), "finite"),
        (lambda: rules.mean_from_distances([[0.0, -1.0], [-1.0, 0.0]]), "non-negative"),
        (lambda: rules.mean_from_distances([[0.0, 1.0], [2.0, 0.0]]), "symmetric"),
        (lambda: rules.mean_from_distances([[1.0, 1.0], [1.0, 0.0]]), "diagonal"),
        (lambda: rules.geomed_from_distances(np.zeros((2, 2)), tol=-1.0), "tol"),
        (
            lambda: rules.geomed_from_distances(np.zeros((2, 2)), max_iter=-1),
            "max_iter",
        ),
    ],
)
def test_preconditions_raise_a_clear_value_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_every_valid_small_configuration_is_accepted() -> None:
    updates = np.arange(14.0).reshape(7, 2)
    for f, neighbours in itertools.product(range(4), ["self", "blanchard"]):
        if not valid_krum_parameters(7, f, None, neighbours):
            continue
        for m in range(1, 7 - f + 1):
            assert rules.multikrum(updates, f, m, neighbours).selected is not None
