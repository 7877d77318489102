"""Tests of strategies.geometry against brute force: direct float64 differences."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies import geometry


def direct_sq_distances(updates: np.ndarray) -> np.ndarray:
    """Return ‖v_i − v_j‖² from explicit float64 differences, pair by pair."""
    wide = np.asarray(updates, dtype=np.float64)
    n = wide.shape[0]
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = np.sum((wide[i] - wide[j]) ** 2)
    return dist


def exact_integer_sq_distances(updates: np.ndarray) -> np.ndarray:
    """Return ‖v_i − v_j‖² in exact integer arithmetic, for integer-valued updates."""
    whole = updates.astype(np.int64)
    differences = whole[:, None, :] - whole[None, :, :]
    return (differences**2).sum(axis=2).astype(np.float64)


def float32_shortcut(updates: np.ndarray) -> np.ndarray:
    """Return ‖x‖² + ‖y‖² − 2⟨x, y⟩ in float32: the regression the tests must catch."""
    norms = np.square(updates).sum(axis=1)
    return norms[:, None] + norms[None, :] - 2.0 * updates @ updates.T


def max_relative_error(dist: np.ndarray, reference: np.ndarray) -> float:
    """Return max |D − R| / R over the pairs with R > 0 (max |D| if there are none)."""
    mask = reference > 0
    if not mask.any():
        return float(np.max(np.abs(dist)))
    return float(np.max(np.abs(dist - reference)[mask] / reference[mask]))


def close_clients(n: int, d: int, seed: int) -> np.ndarray:
    """Return n float32 vectors around 1.0 differing by about 1e-4 per coordinate."""
    rng = np.random.default_rng(seed)
    updates = np.empty((n, d), dtype=np.float32)
    for i in range(n):
        scale = 1e-4 * (1.0 + 0.1 * i)
        updates[i] = 1.0 + scale * rng.standard_normal(d)
    return updates


# --- as_matrix ---------------------------------------------------------------


def test_as_matrix_returns_a_matrix_without_copying() -> None:
    updates = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert geometry.as_matrix(updates) is updates


def test_as_matrix_stacks_rows_and_promotes_to_float64() -> None:
    rows = [np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float64)]
    matrix = geometry.as_matrix(rows)
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, [[1.0, 2.0], [3.0, 4.0]])


def test_as_matrix_keeps_float32_rows_float32() -> None:
    rows = [np.ones(3, np.float32), np.zeros(3, np.float32)]
    assert geometry.as_matrix(rows).dtype == np.float32


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], "empty"),
        (np.zeros((0, 3)), "empty"),
        (np.zeros((3, 0)), "empty"),
        (np.zeros(3), "ndim=1"),
        (np.zeros((2, 2, 2)), "ndim=3"),
        ([np.zeros(3), np.zeros(4)], "different lengths"),
        ([np.zeros((2, 2))], "1-D"),
        (np.zeros((2, 3), dtype=np.int64), "floating point"),
        (np.zeros((2, 3), dtype=np.complex128), "floating point"),
        (np.zeros((2, 3), dtype=bool), "floating point"),
        ([np.zeros(3, dtype=np.int32)], "floating point"),
    ],
)
def test_as_matrix_rejects_malformed_updates(updates: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        geometry.as_matrix(updates)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_as_matrix_rejects_non_finite_values_in_a_late_chunk(bad: float) -> None:
    updates = np.zeros((3, 40_000))
    updates[2, 39_999] = bad
    with pytest.raises(ValueError, match="update 2 of n=3"):
        geometry.as_matrix(updates)
    assert geometry.as_matrix(updates, check_finite=False) is updates


# --- stack_arrays -------------------------------------------------------------


class LazyRows(Sequence[list[np.ndarray]]):
    """A sequence that builds each client's arrays on access and counts reads."""

    def __init__(self, models: list[list[np.ndarray]]) -> None:
        self.models = models
        self.reads = [0] * len(models)

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        if isinstance(index, slice):
            raise TypeError("slicing not supported")
        if index >= len(self.models):
            raise IndexError(index)
        self.reads[index] += 1
        return [array.copy() for array in self.models[index]]


def test_stack_arrays_concatenates_each_clients_arrays_in_order() -> None:
    rng = np.random.default_rng(0)
    models = [
        [rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(4)]
        for _ in range(3)
    ]
    models = [[weight, bias.astype(np.float32)] for weight, bias in models]
    rows = LazyRows(models)
    matrix = geometry.stack_arrays(rows)

    expected = np.stack([np.concatenate([a.ravel() for a in m]) for m in models])
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, expected)
    assert rows.reads == [1, 1, 1]


def test_stack_arrays_uses_float64_when_the_first_client_sends_float64() -> None:
    models = [[np.ones(2, np.float32), np.ones(3, np.float64)]] * 2
    assert geometry.stack_arrays(models).dtype == np.float64


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([], "n=0"),
        ([[np.zeros(0, np.float32)]], "d=0"),
        ([[np.ones(3, np.float32)], [np.ones(4, np.float32)]], "sizes"),
        ([[np.ones(3, np.float32)], [np.ones(1), np.ones(2)]], "sizes"),
        ([[np.ones(3, np.int64)]], "floating point"),
        ([[np.ones(3, np.float32)], [np.ones(3, np.int64)]], "floating point"),
        ([[np.ones(3, np.float32)], [np.ones(3, np.float64)]], "lose precision"),
    ],
)
def test_stack_arrays_rejects_inconsistent_clients(
    models: list[list[np.ndarray]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        geometry.stack_arrays(models)


# --- pairwise_sq_distances: brute force -------------------------------------


def float_matrices() -> st.SearchStrategy[np.ndarray]:
    """Small (n, d) float64 matrices with values of mixed magnitude."""
    shapes = st.tuples(st.integers(1, 8), st.integers(1, 6))
    values = st.floats(-1e6, 1e6, allow_nan=False).filter(
        lambda x: x == 0.0 or abs(x) > 1e-100
    )
    return shapes.flatmap(lambda shape: arrays(np.float64, shape, elements=values))


def integer_matrices() -> st.SearchStrategy[np.ndarray]:
    """Small integer-valued float matrices built from a pool, so rows repeat."""

    def build(draw_args: tuple[int, int, int]) -> st.SearchStrategy[np.ndarray]:
        n, d, pool = draw_args
        rows = arrays(np.int64, (pool, d), elements=st.integers(-50, 50))
        picks = st.lists(st.integers(0, pool - 1), min_size=n, max_size=n)
        return st.tuples(rows, picks).map(lambda rp: rp[0][rp[1]].astype(np.float64))

    return st.tuples(st.integers(1, 9), st.integers(1, 5), st.integers(1, 5)).flatmap(
        build
    )


@settings(max_examples=200, deadline=None)
@given(updates=float_matrices(), chunk_size=st.sampled_from([None, 1, 2, 5]))
def test_distances_match_direct_float64_differences(
    updates: np.ndarray, chunk_size: int | None
) -> None:
    dist = geometry.pairwise_sq_distances(updates, chunk_size=chunk_size)
    reference = direct_sq_distances(updates)

    assert dist.shape == reference.shape and dist.dtype == np.float64
    np.testing.assert_array_equal(dist, dist.T)
    np.testing.assert_array_equal(np.diag(dist), 0.0)
    assert np.all(dist >= 0.0)
    spread = np.max(np.abs(updates - np.median(updates, axis=0))) ** 2
    tolerance = 1e-12 * updates.shape[1] * spread
    np.testing.assert_allclose(dist, reference, rtol=1e-12, atol=tolerance)


@settings(max_examples=200, deadline=None)
@given(updates=integer_matrices(), chunk_size=st.sampled_from([None, 1, 3]))
def test_distances_are_exact_on_integer_valued_updates(
    updates: np.ndarray, chunk_size: int | None
) -> None:
    dist = geometry.pairwise_sq_distances(updates, chunk_size=chunk_size)
    np.testing.assert_array_equal(dist, exact_integer_sq_distances(updates))


@settings(max_examples=100, deadline=None)
@given(updates=float_matrices(), data=st.data())
def test_duplicated_updates_get_identical_rows_of_distances(
    updates: np.ndarray, data: st.DataObject
) -> None:
    n = updates.shape[0]
    sources = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4))
    with_copies = np.concatenate([updates, updates[sources]])
    dist = geometry.pairwise_sq_distances(with_copies)

    for copy, source in enumerate(sources, start=n):
        np.testing.assert_array_equal(dist[copy], dist[source])
        assert dist[copy, source] == 0.0


@pytest.mark.parametrize("shape", [(4, 1), (1, 5), (5, 300), (4, 2 * 65_536)])
def test_distances_leave_the_updates_unchanged_in_any_memory_order(
    shape: tuple[int, int],
) -> None:
    rng = np.random.default_rng(5)
    for updates in (rng.standard_normal(shape), np.asfortranarray(rng.random(shape))):
        before = updates.copy()
        dist = geometry.pairwise_sq_distances(updates, chunk_size=128)
        np.testing.assert_array_equal(updates, before)
        np.testing.assert_allclose(dist, direct_sq_distances(before), rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 6),
    extra=st.integers(0, 20_000),
    level=st.sampled_from([0.0, 1.0, -1e4]),
    spread=st.sampled_from([1e-6, 1e-2, 1.0]),
    huge_row=st.one_of(st.none(), st.integers(0, 5)),
    seed=st.integers(0, 2**32 - 1),
)
def test_distances_on_the_pilot_path_match_direct_differences(
    n: int,
    extra: int,
    level: float,
    spread: float,
    huge_row: int | None,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    d = geometry._PILOT_MIN_COLUMNS + extra
    updates = level + spread * rng.standard_normal((n, d))
    others = np.arange(n)
    if huge_row is not None and huge_row < n:
        updates[huge_row] *= 1e12
        others = np.delete(others, huge_row)
    dist = geometry.pairwise_sq_distances(updates)
    reference = direct_sq_distances(updates)

    block = np.ix_(others, others)
    assert max_relative_error(dist[block], reference[block]) <= 1e-9
    np.testing.assert_allclose(dist, reference, rtol=1e-9)


def test_integer_valued_updates_are_exact_on_the_pilot_path() -> None:
    rng = np.random.default_rng(3)
    d = 2 * geometry._PILOT_MIN_COLUMNS
    updates = rng.integers(-20, 21, size=(6, d)).astype(np.float32)
    updates[4] = updates[1]
    dist = geometry.pairwise_sq_distances(updates)
    np.testing.assert_array_equal(dist, exact_integer_sq_distances(updates))


# --- pairwise_sq_distances: the numerics case -------------------------------------


def test_close_float32_clients_match_float64_differences_within_1e_6() -> None:
    """10 × 10⁶ float32 around 1.0 differing by ~1e-4: every D_ij within 1e-6."""
    updates = close_clients(n=10, d=1_000_000, seed=0)
    reference = direct_sq_distances(updates)

    tracemalloc.start()
    dist = geometry.pairwise_sq_distances(updates)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert max_relative_error(dist, reference) <= 1e-6
    # A float64 copy of the updates would be 80 MB; the chunked pass stays small.
    assert peak < updates.nbytes / 4
    # The float32 shortcut on raw values is far off on the same data, so this
    # test would catch a regression to it.
    assert max_relative_error(float32_shortcut(updates), reference) > 1e-2


@pytest.mark.parametrize("d", [1_000, 3 * 65_536])
@pytest.mark.parametrize("huge_row", [0, 3])
def test_one_huge_update_does_not_spoil_the_other_distances(
    d: int, huge_row: int
) -> None:
    updates = close_clients(n=6, d=d, seed=1).astype(np.float64)
    updates[huge_row] *= 1e12
    dist = geometry.pairwise_sq_distances(updates)
    reference = direct_sq_distances(updates)

    others = np.delete(np.arange(6), huge_row)
    block = np.ix_(others, others)
    assert max_relative_error(dist[block], reference[block]) <= 1e-9
    assert max_relative_error(dist[huge_row], reference[huge_row]) <= 1e-12


def test_an_update_built_to_fool_the_pilot_triggers_median_centring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row central on the pilot's coordinates but huge elsewhere is caught."""
    d = 3 * 65_536
    updates = close_clients(n=5, d=d, seed=2).astype(np.float64)
    pilot = np.zeros(d, dtype=bool)
    pilot[geometry._pilot_columns(d)] = True
    byzantine = updates[:4].mean(axis=0)
    byzantine[~pilot] += 1e6
    updates = np.vstack([byzantine, updates[:4]])

    centres: list[int | None] = []
    original = geometry._centred_gram

    def spy(matrix: np.ndarray, chunk: int, centre_row: int | None) -> np.ndarray:
        centres.append(centre_row)
        return original(matrix, chunk, centre_row)

    monkeypatch.setattr(geometry, "_centred_gram", spy)
    dist = geometry.pairwise_sq_distances(updates)
    reference = direct_sq_distances(updates)

    assert centres == [None, 0, None]  # pilot, fooled pass on row 0, median pass
    assert max_relative_error(dist[1:, 1:], reference[1:, 1:]) <= 1e-9


def test_distances_reject_non_finite_updates_and_overflow() -> None:
    updates = np.ones((3, 5))
    updates[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        geometry.pairwise_sq_distances(updates)
    with pytest.raises(ValueError, match="overflow"):
        geometry.pairwise_sq_distances(np.array([[1e200, 0.0], [-1e200, 0.0]]))
    with pytest.raises(ValueError, match="chunk_size"):
        geometry.pairwise_sq_distances(np.ones((2, 2)), chunk_size=0)


def test_non_finite_value_on_the_pilot_path_is_reported_as_such() -> None:
    updates = np.ones((3, 2 * 65_536), dtype=np.float32)
    updates[2, -1] = np.inf
    with pytest.raises(ValueError, match="update 2 of n=3"):
        geometry.pairwise_sq_distances(updates)


# --- combine -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    updates=float_matrices(),
    data=st.data(),
    chunk_size=st.sampled_from([None, 1, 4]),
)
def test_combine_matches_weights_times_updates(
    updates: np.ndarray, data: st.DataObject, chunk_size: int | None
) -> None:
    n = updates.shape[0]
    weights = np.array(
        data.draw(st.lists(st.floats(-2, 2), min_size=n, max_size=n)), dtype=float
    )
    vector = geometry.combine(updates, weights, chunk_size=chunk_size)
    expected = np.array(
        [
            sum(w * float(x) for w, x in zip(weights, column, strict=True))
            for column in updates.T
        ]
    )
    tolerance = 1e-12 * (np.abs(weights) @ np.abs(updates) + 1e-300)
    assert vector.shape == (updates.shape[1],) and vector.dtype == np.float64
    assert np.all(np.abs(vector - expected) <= tolerance)


def test_combine_with_a_vertex_returns_that_update_exactly() -> None:
    rng = np.random.default_rng(4)
    updates = rng.standard_normal((5, 1000)).astype(np.float32)
    updates[0] *= 1e30
    vector = geometry.combine(updates, np.eye(5)[3], chunk_size=64)
    np.testing.assert_array_equal(vector, updates[3].astype(np.float64))


def test_combine_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        geometry.combine(np.ones((2, 3)), [1.0])
    with pytest.raises(ValueError, match="finite"):
        geometry.combine(np.ones((2, 3)), [np.nan, 1.0])
