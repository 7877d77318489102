"""Robustness ratios ρ_S, their worst case over S, and the known bounds on κ*.

Clients send updates v_1 … v_n, f of which may be Byzantine. For an aggregate
a = Agg(V) and a set S of clients,

    ρ_S = ‖a − v̄_S‖² / Σ_S,   v̄_S = (1/|S|) Σ_{i∈S} v_i,
    Σ_S = (1/|S|) Σ_{i∈S} ‖v_i − v̄_S‖²,

with the conventions 0/0 = −∞ and x/0 = +∞ for x > 0. The robustness
coefficient κ*(Agg) is the supremum of ρ_S over all inputs V and all S with
|S| = n − f (Bareilles, Bouaziz, Fageot, El Mhamdi 2026), so every concrete
(V, S) is a lower bound on κ*, and a ratio above a proven upper bound is a bug.

Apart from :func:`ratio`, everything here works from squared distances only:
with the aggregate appended as index n to the (n, n) matrix D_ij = ‖v_i − v_j‖²,

    Σ_S = (1/(2|S|²)) Σ_{i,j∈S} D_ij,
    ‖a − v̄_S‖² = (1/|S|) Σ_{i∈S} D_{a,i} − Σ_S,

so once the matrix is built the cost of any number of subsets does not grow
with the dimension d.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from strategies.geometry import as_matrix, pairwise_sq_distances
from strategies.rules import RULES

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
#: An (n, d) float matrix or n one-dimensional arrays, as geometry.as_matrix takes.
Updates = np.ndarray | Sequence[npt.ArrayLike]


# A subset sum obtained by subtraction (total − complement) keeps about
# 1e-16 × total of absolute error. Below this fraction of the magnitudes
# involved, the sum is recomputed directly from its non-negative terms, which
# is what makes ρ right for a tight honest cluster next to far Byzantine
# vectors, and what makes Σ_S exactly 0 for duplicated vectors.
_CANCELLATION_GUARD = 1e-6
# Complement subsets enumerated per vectorised block.
_ENUMERATION_BLOCK = 8192
# Matrix entries gathered per block when summing subsets directly.
_DIRECT_BLOCK_ENTRIES = 1 << 22
# Columns of the update matrix converted to float64 at a time.
_COLUMN_BLOCK = 1 << 14
# Local search: starts grown around the points farthest from the aggregate,
# random starts, and swaps per start (each swap strictly increases ρ).
_NEIGHBOURHOOD_STARTS = 16
_RANDOM_STARTS = 8
_SWAPS_PER_POINT = 4


@dataclass(frozen=True)
class WorstRatio:
    """The largest ρ_S found over the sets S of n − f clients.

    ``value`` is exactly max_S ρ_S when ``exact`` is true (every one of the
    C(n, f) subsets was evaluated); otherwise it is the best a local search
    found, a lower estimate of the maximum. ``subset`` holds the sorted client
    indices of the maximising S, ``evaluated`` the number of subsets whose
    ratio was computed.
    """

    value: float
    subset: tuple[int, ...]
    exact: bool
    evaluated: int


@dataclass(frozen=True)
class Bound:
    """One known bound on κ*, where it comes from and when it holds.

    ``value`` is NaN when the bound is known but its ``condition`` fails at the
    n, f, m it was evaluated for.
    """

    value: float
    kind: Literal["lower", "upper"]
    source: str
    condition: str
    note: str = ""


@dataclass(frozen=True)
class KappaBounds:
    """Every known bound on κ* of one rule at one (n, f, m).

    ``bounds`` holds those whose condition holds; ``inapplicable`` the known
    ones whose condition fails here (value NaN). ``m`` is the number of
    averaged vectors for krum (1) and multikrum, None for mean and geomed.
    """

    rule: str
    n: int
    f: int
    m: int | None
    bounds: tuple[Bound, ...]
    inapplicable: tuple[Bound, ...]

    @property
    def lower(self) -> Bound | None:
        """The largest applicable lower bound on κ*, or None when none is known."""
        lowers = [b for b in self.bounds if b.kind == "lower"]
        return max(lowers, key=lambda b: b.value, default=None)

    @property
    def upper(self) -> Bound | None:
        """The smallest applicable upper bound on κ*, or None when none is known."""
        uppers = [b for b in self.bounds if b.kind == "upper"]
        return min(uppers, key=lambda b: b.value, default=None)


# --------------------------------------------------------------------------
# Ratios from vectors
# --------------------------------------------------------------------------


def ratio(updates: Updates, aggregate: npt.ArrayLike, subset: Sequence[int]) -> float:
    """Return ρ_S = ‖a − v̄_S‖² / Σ_S computed from the vectors themselves.

    Σ_S = (1/|S|) Σ_{i∈S} ‖v_i − v̄_S‖²; 0/0 = −∞ and x/0 = +∞ for x > 0.
    S may have any size here. The vectors are centred on the first member of
    S before averaging, in float64, so duplicated vectors give Σ_S = 0
    exactly and an aggregate equal to them gives a bias of exactly 0.

    Args:
        updates: (n, d) matrix, one update per row.
        aggregate: (d,) vector a.
        subset: indices of S, distinct, in [0, n).
    """
    matrix = _as_updates(updates)
    point = _as_point(aggregate, matrix.shape[1])
    members = _as_subset(subset, matrix.shape[0])

    chosen = np.asarray(matrix[members], dtype=np.float64)
    anchor = chosen[0].copy()
    centred = chosen - anchor
    offset = centred.mean(axis=0)

    spread = float(np.mean(np.sum((centred - offset) ** 2, axis=1)))
    bias = float(np.sum((point - anchor - offset) ** 2))
    return _divide(bias, spread)


def extend_distances_with_vector(
    updates: Updates,
    aggregate: npt.ArrayLike,
    dist: npt.ArrayLike | None = None,
) -> FloatArray:
    """Return D extended by the aggregate a as index n, for any a.

    The last row and column hold ‖a − v_j‖², computed from differences in
    float64 (never from the ‖x‖² + ‖y‖² − 2x·y shortcut); use it for rules
    whose output is not an affine combination of the updates (coordinate-wise
    median, trimmed mean). Pass ``dist`` when D = pairwise_sq_distances(updates)
    is already known; otherwise it is computed.

    Args:
        updates: (n, d) matrix, one update per row.
        aggregate: (d,) vector a.
        dist: optional (n, n) squared distances between the updates.

    Returns:
        (n + 1, n + 1) float64 matrix with a zero last diagonal entry.
    """
    matrix = _as_updates(updates)
    point = _as_point(aggregate, matrix.shape[1])
    if dist is None:
        pairwise = np.asarray(pairwise_sq_distances(matrix), dtype=np.float64)
    else:
        pairwise = _as_distances(dist, "dist")
    if pairwise.shape[0] != matrix.shape[0]:
        raise ValueError(
            f"dist has shape {pairwise.shape}, expected ({matrix.shape[0]}, "
            f"{matrix.shape[0]}) for {matrix.shape[0]} updates"
        )
    return _bordered(pairwise, _sq_distances_to(matrix, point))


def worst_ratio(
    updates: Updates,
    aggregate: npt.ArrayLike,
    f: int,
    max_subsets: int = 20000,
    seed: int = 0,
) -> WorstRatio:
    """Return max ρ_S over all S with |S| = n − f, for the vectors themselves.

    Builds the extended distance matrix with
    :func:`extend_distances_with_vector` and hands it to
    :func:`worst_ratio_from_distances` (see there for exactness and budget).

    .. note:: For a rule that returns an affine combination of the updates,
       prefer :func:`extend_distances` with the rule's weights: there a set S
       of n − f copies of v and an aggregate on v give exactly 0/0 = −∞.
    """
    # Limitation: an aggregate computed in floating point, e.g. MultiKrum's
    # (1/3)(v + v + v), may differ from v in its last bit, which at a set S
    # of copies of v (Σ_S = 0) reads as x/0 = +∞ by the convention.
    dist_ext = extend_distances_with_vector(updates, aggregate)
    return worst_ratio_from_distances(dist_ext, f, max_subsets, seed)


# --------------------------------------------------------------------------
# Ratios from distances
# --------------------------------------------------------------------------


def extend_distances(dist: npt.ArrayLike, weights: npt.ArrayLike) -> FloatArray:
    """Return D extended by the aggregate a = Σ_i w_i v_i (Σ w_i = 1) as index n.

    For an affine combination, ‖a − v_j‖² = Σ_i w_i D_ij − ½ wᵀDw, so the
    distances to the aggregate of Mean, Krum, MultiKrum and GeomMed follow
    from D and the rule's weights without touching the vectors. Results are
    clipped at 0 against rounding. Weights may be negative; their sum must be
    1 to within 1e-9.

    Args:
        dist: (n, n) squared distances D_ij = ‖v_i − v_j‖².
        weights: (n,) weights w of the aggregate.

    Returns:
        (n + 1, n + 1) float64 matrix with a zero last diagonal entry.
    """
    pairwise = _as_distances(dist, "dist")
    mix = _as_weights(weights, pairwise.shape[0])

    # Limitation: each entry carries an absolute error of about
    # 1e-16 × Σ_i |w_i| D_ij; with weight on vectors far from a (GeomMed next
    # to far Byzantine vectors) use extend_distances_with_vector instead.
    mixed = mix @ pairwise
    self_term = 0.5 * float(mixed @ mix)
    return _bordered(pairwise, np.maximum(mixed - self_term, 0.0))


def ratio_from_distances(dist_ext: npt.ArrayLike, subset: Sequence[int]) -> float:
    """Return ρ_S from the extended distance matrix (aggregate at index n).

    Σ_S = (1/(2|S|²)) Σ_{i,j∈S} D_ij and ‖a − v̄_S‖² = (1/|S|) Σ_{i∈S} D_{a,i}
    − Σ_S (clipped at 0); 0/0 = −∞ and x/0 = +∞ for x > 0. Both sums are
    taken directly over their non-negative terms, so duplicated points give
    Σ_S = 0 exactly. S may have any size.
    """
    extended = _as_distances(dist_ext, "dist_ext")
    n = _clients_in(extended)
    members = _as_subset(subset, n)

    pair_sums, aggregate_sums = _direct_sums(extended, members[np.newaxis, :])
    return float(_ratios_from_sums(pair_sums, aggregate_sums, members.size)[0])


def worst_ratio_from_distances(
    dist_ext: npt.ArrayLike, f: int, max_subsets: int = 20000, seed: int = 0
) -> WorstRatio:
    """Return max ρ_S over all S with |S| = n − f, from distances only.

    Exact while C(n, f) ≤ ``max_subsets``: every S is enumerated through its
    complement F (|F| = f), vectorised, using
    Σ_{i,j∈S} D_ij = Σ_{i,j} D_ij − 2 Σ_{i∈F} Σ_j D_ij + Σ_{i,j∈F} D_ij, and
    recomputing directly any sum that this subtraction could have ruined. Ties
    go to the first S in lexicographic order of F.

    Beyond the budget, a local search: starts at the n − f points closest to
    a, the n − f farthest from a, the n − f nearest neighbours (self
    included) of each of the 16 points farthest from a, and 8 random sets
    (from ``seed``); from each, the best single swap (one member out, one
    non-member in) is taken while it strictly increases ρ, at most 4n swaps
    per start. The result is flagged ``exact=False``: a lower estimate of the
    maximum.

    Args:
        dist_ext: (n + 1, n + 1) squared distances, aggregate at index n.
        f: number of Byzantine clients, 0 ≤ f < n.
        max_subsets: largest C(n, f) enumerated exactly (0 forces the search).
        seed: seed of the random starts.
    """
    extended = _as_distances(dist_ext, "dist_ext")
    n = _clients_in(extended)
    byzantine = _as_byzantine(n, f)
    budget = operator.index(max_subsets)
    if budget < 0:
        raise ValueError(f"max_subsets must be ≥ 0, got {budget}")

    if math.comb(n, byzantine) <= budget:
        return _enumerate(extended, byzantine)
    return _local_search(extended, byzantine, np.random.default_rng(seed))


# --------------------------------------------------------------------------
# Subset sums and ratios
# --------------------------------------------------------------------------


def _divide(bias: float, spread: float) -> float:
    """Return bias / spread with 0/0 = −∞ and x/0 = +∞ for x > 0."""
    if spread > 0.0:
        return bias / spread
    return math.inf if bias > 0.0 else -math.inf


def _ratios_from_sums(
    pair_sums: FloatArray, aggregate_sums: FloatArray, size: int
) -> FloatArray:
    """Return ρ_S for subsets given Σ_{i,j∈S} D_ij and Σ_{i∈S} D_{a,i}."""
    spreads = pair_sums / (2.0 * size * size)
    biases = np.maximum(aggregate_sums / size - spreads, 0.0)
    positive = spreads > 0.0
    safe = np.where(positive, spreads, 1.0)
    degenerate = np.where(biases > 0.0, math.inf, -math.inf)
    return np.where(positive, biases / safe, degenerate)


def _direct_sums(
    dist_ext: FloatArray, members: IndexArray
) -> tuple[FloatArray, FloatArray]:
    """Return Σ_{i,j∈S} D_ij and Σ_{i∈S} D_{a,i} for each row S of members.

    Both are sums of non-negative terms, hence accurate and exactly 0 when
    every term is.
    """
    n = dist_ext.shape[0] - 1
    count, size = members.shape
    pair_sums = np.empty(count)
    aggregate_sums = np.empty(count)
    block = max(1, _DIRECT_BLOCK_ENTRIES // max(1, size * size))
    for start in range(0, count, block):
        rows = members[start : start + block]
        within = dist_ext[rows[:, :, np.newaxis], rows[:, np.newaxis, :]]
        pair_sums[start : start + block] = within.sum(axis=(1, 2))
        aggregate_sums[start : start + block] = dist_ext[n, rows].sum(axis=1)
    return pair_sums, aggregate_sums


def _repair_cancellation(
    dist_ext: FloatArray,
    members_for: Callable[[BoolArray], IndexArray],
    sums: tuple[FloatArray, FloatArray],
    scales: tuple[FloatArray, FloatArray],
) -> None:
    """Recompute in place the subset sums too small to trust after subtraction.

    A sum is flagged when it is at most _CANCELLATION_GUARD times the magnitude
    of the terms it was obtained from; ``members_for(flagged)`` returns the
    members of the flagged subsets, whose sums :func:`_direct_sums` recomputes.
    """
    pair_sums, aggregate_sums = sums
    pair_scale, aggregate_scale = scales
    suspect = (pair_sums <= _CANCELLATION_GUARD * pair_scale) | (
        aggregate_sums <= _CANCELLATION_GUARD * aggregate_scale
    )
    if suspect.any():
        exact_pairs, exact_aggregate = _direct_sums(dist_ext, members_for(suspect))
        pair_sums[suspect] = exact_pairs
        aggregate_sums[suspect] = exact_aggregate


# --------------------------------------------------------------------------
# Exact enumeration
# --------------------------------------------------------------------------


def _complement_blocks(n: int, f: int) -> Iterator[IndexArray]:
    """Yield all f-subsets F of range(n), lexicographically, in (k, f) blocks."""
    combinations = itertools.combinations(range(n), f)
    total = math.comb(n, f)
    for start in range(0, total, _ENUMERATION_BLOCK):
        count = min(_ENUMERATION_BLOCK, total - start)
        flat = itertools.chain.from_iterable(itertools.islice(combinations, count))
        block = np.fromiter(flat, dtype=np.intp, count=count * f)
        yield block.reshape(count, f)


def _members_from_complements(n: int, complements: IndexArray) -> IndexArray:
    """Return the sorted members S = range(n) ∖ F for each row F."""
    count, f = complements.shape
    inside = np.ones((count, n), dtype=bool)
    inside[np.arange(count)[:, np.newaxis], complements] = False
    return np.nonzero(inside)[1].reshape(count, n - f).astype(np.intp)


def _complement_ratios(dist_ext: FloatArray, complements: IndexArray) -> FloatArray:
    """Return ρ_S for the S whose complements F are the rows given."""
    n = dist_ext.shape[0] - 1
    pairwise = dist_ext[:n, :n]
    to_aggregate = dist_ext[n, :n]
    row_sums = pairwise.sum(axis=1)
    total = float(row_sums.sum())
    aggregate_total = float(to_aggregate.sum())

    outgoing = row_sums[complements].sum(axis=1)
    pair_sums = total - 2.0 * outgoing + _within_sums(pairwise, complements)
    removed = to_aggregate[complements].sum(axis=1)
    aggregate_sums = aggregate_total - removed

    _repair_cancellation(
        dist_ext,
        lambda flagged: _members_from_complements(n, complements[flagged]),
        (pair_sums, aggregate_sums),
        (total + 2.0 * outgoing, aggregate_total + removed),
    )
    return _ratios_from_sums(pair_sums, aggregate_sums, n - complements.shape[1])


def _within_sums(pairwise: FloatArray, complements: IndexArray) -> FloatArray:
    """Return Σ_{i,j∈F} D_ij = 2 Σ_{i<j∈F} D_ij for each row F (one pass per pair)."""
    within = np.zeros(complements.shape[0])
    for first, second in itertools.combinations(range(complements.shape[1]), 2):
        within += pairwise[complements[:, first], complements[:, second]]
    return 2.0 * within


def _enumerate(dist_ext: FloatArray, f: int) -> WorstRatio:
    """Return the exact max ρ_S by evaluating every S of size n − f."""
    n = dist_ext.shape[0] - 1
    best_value = -math.inf
    best_complement: IndexArray | None = None
    evaluated = 0

    for complements in _complement_blocks(n, f):
        ratios = _complement_ratios(dist_ext, complements)
        top = int(np.argmax(ratios))
        if best_complement is None or ratios[top] > best_value:
            best_value = float(ratios[top])
            best_complement = complements[top]
        evaluated += complements.shape[0]

    assert best_complement is not None  # C(n, f) ≥ 1
    members = _members_from_complements(n, best_complement[np.newaxis, :])[0]
    return WorstRatio(best_value, _as_tuple(members), True, evaluated)


# --------------------------------------------------------------------------
# Local search
# --------------------------------------------------------------------------


def _search_starts(
    dist_ext: FloatArray, size: int, rng: np.random.Generator
) -> list[IndexArray]:
    """Return the distinct starting sets of the local search, each sorted."""
    n = dist_ext.shape[0] - 1
    by_distance = np.argsort(dist_ext[n, :n], kind="stable")
    candidates = [by_distance[:size], by_distance[n - size :]]

    for centre in by_distance[::-1][:_NEIGHBOURHOOD_STARTS]:
        nearest = np.argsort(dist_ext[centre, :n], kind="stable")
        candidates.append(nearest[:size])
    for _ in range(_RANDOM_STARTS):
        candidates.append(rng.choice(n, size=size, replace=False))

    starts: dict[tuple[int, ...], IndexArray] = {}
    for members in candidates:
        ordered = np.sort(members).astype(np.intp)
        starts.setdefault(_as_tuple(ordered), ordered)
    return list(starts.values())


def _swap_ratios(
    dist_ext: FloatArray,
    inside: IndexArray,
    outside: IndexArray,
    sums: tuple[float, float],
) -> FloatArray:
    """Return ρ of S − {inside[p]} + {outside[q]} for every (p, q).

    With r_l = Σ_{u∈S} D_lu, swapping i out and j in changes Σ_{u,v∈S} D_uv
    by −2r_i + 2r_j − 2D_ij and Σ_{u∈S} D_{a,u} by −D_{a,i} + D_{a,j}.
    """
    n = dist_ext.shape[0] - 1
    pair_sum, aggregate_sum = sums
    inside_rows = dist_ext[np.ix_(inside, inside)].sum(axis=1)[:, np.newaxis]
    outside_rows = dist_ext[np.ix_(outside, inside)].sum(axis=1)[np.newaxis, :]
    cross = dist_ext[np.ix_(inside, outside)]
    leaving = dist_ext[n, inside][:, np.newaxis]
    joining = dist_ext[n, outside][np.newaxis, :]

    pair_sums = pair_sum - 2.0 * inside_rows + 2.0 * (outside_rows - cross)
    aggregate_sums = aggregate_sum - leaving + joining
    pair_scale = pair_sum + 2.0 * (inside_rows + outside_rows)
    aggregate_scale = aggregate_sum + leaving + joining

    pair_sums, aggregate_sums = pair_sums.ravel(), aggregate_sums.ravel()
    _repair_cancellation(
        dist_ext,
        lambda flagged: _swapped_members(inside, outside, np.flatnonzero(flagged)),
        (pair_sums, aggregate_sums),
        (pair_scale.ravel(), aggregate_scale.ravel()),
    )
    return _ratios_from_sums(pair_sums, aggregate_sums, inside.size)


def _swapped_members(
    inside: IndexArray, outside: IndexArray, swaps: IndexArray
) -> IndexArray:
    """Return the members after each swap s = p·|outside| + q (p out, q in)."""
    members = np.repeat(inside[np.newaxis, :], swaps.size, axis=0)
    leaving, joining = np.divmod(swaps, outside.size)
    members[np.arange(swaps.size), leaving] = outside[joining]
    return members


def _climb(dist_ext: FloatArray, start: IndexArray) -> tuple[float, IndexArray, int]:
    """Take best-improvement single swaps from start while ρ strictly grows.

    Returns the final ρ, its sorted members and the subsets evaluated.
    """
    n = dist_ext.shape[0] - 1
    inside = start
    pair_sums, aggregate_sums = _direct_sums(dist_ext, inside[np.newaxis, :])
    value = float(_ratios_from_sums(pair_sums, aggregate_sums, inside.size)[0])
    evaluated = 1

    for _ in range(_SWAPS_PER_POINT * n):
        outside = np.setdiff1d(np.arange(n), inside).astype(np.intp)
        if outside.size == 0 or value == math.inf:
            break
        sums = (float(pair_sums[0]), float(aggregate_sums[0]))
        ratios = _swap_ratios(dist_ext, inside, outside, sums)
        evaluated += ratios.size
        best = int(np.argmax(ratios))
        if not ratios[best] > value:
            break

        proposal = inside.copy()
        proposal[best // outside.size] = outside[best % outside.size]
        proposal.sort()
        pair_sums, aggregate_sums = _direct_sums(dist_ext, proposal[np.newaxis, :])
        proposed = float(_ratios_from_sums(pair_sums, aggregate_sums, inside.size)[0])
        if not proposed > value:
            break  # the update formula and the direct sum disagree: stop here
        inside, value = proposal, proposed

    return value, inside, evaluated


def _local_search(dist_ext: FloatArray, f: int, rng: np.random.Generator) -> WorstRatio:
    """Return the best ρ_S found by swap local search: a lower estimate."""
    # Limitation: a swap-local maximum from 26 starts at most; nothing bounds
    # how far below the true maximum it may be on adversarial inputs.
    n = dist_ext.shape[0] - 1
    best_value = -math.inf
    best_members: IndexArray | None = None
    evaluated = 0

    for start in _search_starts(dist_ext, n - f, rng):
        value, members, count = _climb(dist_ext, start)
        evaluated += count
        if best_members is None or value > best_value:
            best_value, best_members = value, members

    assert best_members is not None  # there is always at least one start
    return WorstRatio(best_value, _as_tuple(best_members), False, evaluated)


# --------------------------------------------------------------------------
# Bounds on κ*
# --------------------------------------------------------------------------

_ALLOUAH = "Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan 2023"
_BBFE = "Bareilles, Bouaziz, Fageot, El Mhamdi 2026"


def bounds(rule: str, n: int, f: int, m: int | None = None) -> KappaBounds:
    """Return every known lower and upper bound on κ* of a rule at n, f, m.

    With c = (1 − f/n)/(1 − 2f/n):
      - any rule: κ* ≥ (f/n)/(1 − 2f/n) = f/(n − 2f) for f/n < 1/2, and
        κ* = +∞ for f/n ≥ 1/2;
      - geomed: κ* ≤ 4c²;
      - krum: κ* ≤ 6c, the multikrum bound with m = 1, and a lower bound read
        from the authors' slides;
      - multikrum (m averaged, default n − f): κ* ≤ c·min(√2 + 1,
        √(n − 2f)/√m + √(2f)/√m + f/m)², and κ* ≥ 4(f/n)/(1 − 2f/n) for
        m = n − f, f/n < 1/3;
      - mean: κ* = +∞ for f ≥ 1 and 0 for f = 0.

    ``m`` must be None or 1 for krum and 1 ≤ m ≤ n − f when given; it is
    ignored for mean and geomed.

    Raises:
        ValueError: unknown rule, n < 1, f outside [0, n), m out of range.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    clients = operator.index(n)
    if clients < 1:
        raise ValueError(f"n must be ≥ 1, got {clients}")
    byzantine = _as_byzantine(clients, f)
    selected = _as_selected(rule, clients, byzantine, m)

    known = _universal_bounds(clients, byzantine)
    if rule == "mean":
        known += _mean_bounds(byzantine)
    elif rule == "geomed":
        known += [_geomed_upper(clients, byzantine)]
    else:
        assert selected is not None
        known += _multikrum_bounds(clients, byzantine, selected)

    return KappaBounds(
        rule=rule,
        n=clients,
        f=byzantine,
        m=selected,
        bounds=tuple(b for b in known if not math.isnan(b.value)),
        inapplicable=tuple(b for b in known if math.isnan(b.value)),
    )


def bounds_table(rule: str | None, n: int, f: int, m: int | None = None) -> str:
    """Return a readable table of the κ* bounds of one rule, or of all rules.

    Each rule gets a summary line (the best lower and upper bound) and one row
    per known bound with its value, condition and source; bounds whose
    condition fails are listed as n/a. With rule None, ``m`` applies to
    multikrum only.
    """
    rules = RULES if rule is None else (rule,)
    tables = [
        bounds(name, n, f, m if rule is not None or name == "multikrum" else None)
        for name in rules
    ]
    header = _table_header(tables[0].n, tables[0].f)
    return "\n\n".join([header, *(_rule_table(t) for t in tables)]) + "\n"


def _bound(
    applies: bool,
    value: float,
    kind: Literal["lower", "upper"],
    source: str,
    condition: str,
    note: str = "",
) -> Bound:
    """Return a Bound whose value is NaN when its condition fails."""
    return Bound(value if applies else math.nan, kind, source, condition, note)


def _spread_factor(n: int, f: int) -> float:
    """Return c = (1 − f/n)/(1 − 2f/n) = (n − f)/(n − 2f), for 2f < n."""
    return (n - f) / (n - 2 * f)


def _universal_bounds(n: int, f: int) -> list[Bound]:
    """Return the lower bounds that hold for every aggregation rule."""
    majority = 2 * f < n
    return [
        _bound(
            majority,
            f / (n - 2 * f) if majority else math.nan,
            "lower",
            _ALLOUAH,
            "f/n < 1/2",
            "any rule: κ* ≥ (f/n)/(1 − 2f/n)",
        ),
        _bound(
            not majority,
            math.inf,
            "lower",
            "elementary",
            "f/n ≥ 1/2",
            "any rule: κ* = ∞ (two disjoint sets of n − f equal vectors)",
        ),
    ]


def _mean_bounds(f: int) -> list[Bound]:
    """Return κ* of the mean: +∞ with a Byzantine client, 0 without."""
    if f >= 1:
        value, condition = math.inf, "f ≥ 1"
        note = "κ* = ∞: one Byzantine vector moves the mean arbitrarily far"
    else:
        value, condition = 0.0, "f = 0"
        note = "κ* = 0: S is every client, so Mean(V) = v̄_S"
    return [
        Bound(value, "lower", "elementary", condition, note),
        Bound(value, "upper", "elementary", condition, note),
    ]


def _geomed_upper(n: int, f: int) -> Bound:
    """Return GeomMed's κ* ≤ 4c²."""
    holds = 2 * f < n
    value = 4.0 * _spread_factor(n, f) ** 2 if holds else math.nan
    return _bound(holds, value, "upper", _ALLOUAH, "f/n < 1/2", "κ* ≤ 4c²")


def _multikrum_bounds(n: int, f: int, m: int) -> list[Bound]:
    """Return the bounds on MultiKrum_m, with Krum's own when m = 1."""
    known = [_multikrum_upper(n, f, m)]
    if m == n - f:
        known.append(_multikrum_full_lower(n, f))
    if m == 1:
        known += [_krum_earlier_upper(n, f), _krum_slides_lower(n, f)]
    return known


def _multikrum_upper(n: int, f: int, m: int) -> Bound:
    """Return κ*_m ≤ c·min(√2 + 1, √(n − 2f)/√m + √(2f)/√m + f/m)²."""
    holds = 2 * f < n
    value = math.nan
    if holds:
        local = (math.sqrt(n - 2 * f) + math.sqrt(2 * f)) / math.sqrt(m) + f / m
        value = _spread_factor(n, f) * min(math.sqrt(2.0) + 1.0, local) ** 2
    return _bound(
        holds,
        value,
        "upper",
        _BBFE,
        "f/n < 1/2, 1 ≤ m ≤ n − f",
        "κ* ≤ c·min(√2 + 1, (√(n − 2f) + √(2f))/√m + f/m)²",
    )


def _multikrum_full_lower(n: int, f: int) -> Bound:
    """Return (n − f)-MultiKrum's κ* ≥ 4(f/n)/(1 − 2f/n) for f/n < 1/3."""
    holds = 3 * f < n
    value = 4.0 * f / (n - 2 * f) if holds else math.nan
    return _bound(
        holds, value, "lower", _BBFE, "f/n < 1/3, m = n − f", "κ* ≥ 4(f/n)/(1 − 2f/n)"
    )


def _krum_earlier_upper(n: int, f: int) -> Bound:
    """Return Krum's κ* ≤ 6c from the literature before the MultiKrum theorem."""
    holds = 2 * f < n
    value = 6.0 * _spread_factor(n, f) if holds else math.nan
    return _bound(holds, value, "upper", _ALLOUAH, "f/n < 1/2", "Krum: κ* ≤ 6c")


def _krum_slides_lower(n: int, f: int) -> Bound:
    """Return Krum's parity-dependent lower bound read from the authors' talk.

    (1 − 2/n)/(1 − 2f/n + 2/n) for n even, (1 − 1/n)/(1 − 2f/n + 1/n) for n
    odd.
    """
    holds = 2 * f < n
    step = 2 if n % 2 == 0 else 1
    value = (1 - step / n) / (1 - 2 * f / n + step / n) if holds else math.nan
    parity = "even" if step == 2 else "odd"
    return _bound(
        holds,
        value,
        "lower",
        f"{_BBFE} (talk)",
        f"f/n < 1/2, n {parity}",
        f"Krum: κ* ≥ (1 − {step}/n)/(1 − 2f/n + {step}/n), read from slides",
    )


# --------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------


def _table_header(n: int, f: int) -> str:
    """Return the first lines of the bounds table: n, f and c."""
    factor = f"{_spread_factor(n, f):.4g}" if 2 * f < n else "undefined (f/n ≥ 1/2)"
    return (
        f"κ* bounds at n = {n}, f = {f} (f/n = {f / n:.4g}; "
        f"c = (1 − f/n)/(1 − 2f/n) = {factor})\n"
        "κ* = sup over inputs V and sets S of n − f clients of "
        "‖Agg(V) − v̄_S‖² / Σ_S"
    )


def _format_value(value: float | None) -> str:
    """Return a bound's value as text: ∞, n/a or 4 significant digits."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞"
    return f"{value:.4g}"


def _summary(table: KappaBounds) -> str:
    """Return the one-line best known interval of κ* for a rule."""
    name = table.rule if table.m is None else f"{table.rule} (m = {table.m})"
    lower = None if table.lower is None else table.lower.value
    upper = None if table.upper is None else table.upper.value
    if lower is not None and (lower == upper or math.isinf(lower)):
        return f"{name}: κ* = {_format_value(lower)}"
    low = f"{_format_value(lower)} ≤ " if lower is not None else ""
    high = f" ≤ {_format_value(upper)}" if upper is not None else " (no upper bound)"
    return f"{name}: {low}κ*{high}"


def _rule_table(table: KappaBounds) -> str:
    """Return the summary line and one row per known bound of a rule.

    Applicable bounds come first, lower before upper; bounds whose condition
    fails follow with value n/a.
    """
    ordered = sorted(table.bounds, key=lambda b: b.kind) + list(table.inapplicable)
    rows = [("kind", "value", "bound", "condition", "source")]
    rows += [
        (b.kind, _format_value(b.value), b.note, b.condition, b.source) for b in ordered
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = [_summary(table)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _as_updates(updates: Updates) -> np.ndarray:
    """Return updates as a finite floating (n, d) matrix (see geometry.as_matrix)."""
    return as_matrix(updates)


def _as_point(aggregate: npt.ArrayLike, dimension: int) -> FloatArray:
    """Return the aggregate as a finite float64 vector of the given length."""
    point = np.asarray(aggregate, dtype=np.float64)
    if point.shape != (dimension,):
        raise ValueError(f"aggregate has shape {point.shape}, expected ({dimension},)")
    if not np.isfinite(point).all():
        raise ValueError("aggregate contains non-finite values")
    return point


def _as_subset(subset: Sequence[int], n: int) -> IndexArray:
    """Return S as sorted distinct indices in [0, n), non-empty."""
    members = np.asarray(subset)
    if members.ndim != 1 or members.size == 0:
        raise ValueError(f"subset must be a non-empty list of indices, got {subset!r}")
    if not np.issubdtype(members.dtype, np.integer):
        raise ValueError(f"subset must hold integers, got dtype {members.dtype}")
    if members.min() < 0 or members.max() >= n:
        raise ValueError(f"subset indices must lie in [0, {n}), got {subset!r}")
    ordered = np.unique(members).astype(np.intp)
    if ordered.size != members.size:
        raise ValueError(f"subset indices must be distinct, got {subset!r}")
    return ordered


def _as_distances(dist: npt.ArrayLike, name: str) -> FloatArray:
    """Return a finite, non-negative, square float64 distance matrix."""
    matrix = np.asarray(dist, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise ValueError(f"{name} must be a square matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contains non-finite values")
    if (matrix < 0.0).any():
        raise ValueError(f"{name} has negative entries (min {matrix.min():.3g})")
    return matrix


def _as_weights(weights: npt.ArrayLike, n: int) -> FloatArray:
    """Return affine weights (Σ w_i = 1 to within 1e-9) of length n."""
    mix = np.asarray(weights, dtype=np.float64)
    if mix.shape != (n,):
        raise ValueError(f"weights have shape {mix.shape}, expected ({n},)")
    if not np.isfinite(mix).all():
        raise ValueError("weights contain non-finite values")
    total = float(mix.sum())
    if abs(total - 1.0) > 1e-9 * max(1.0, float(np.abs(mix).sum())):
        raise ValueError(f"weights must sum to 1, got {total!r}")
    return mix


def _as_byzantine(n: int, f: int) -> int:
    """Return f after checking 0 ≤ f < n (S of n − f clients is non-empty)."""
    byzantine = operator.index(f)
    if not 0 <= byzantine < n:
        raise ValueError(f"f must satisfy 0 ≤ f < n = {n}, got {byzantine}")
    return byzantine


def _as_selected(rule: str, n: int, f: int, m: int | None) -> int | None:
    """Return the m a rule's bounds use: n − f by default for multikrum."""
    if m is not None:
        selected = operator.index(m)
        if not 1 <= selected <= n - f:
            raise ValueError(f"m must satisfy 1 ≤ m ≤ n − f = {n - f}, got {selected}")
        if rule == "krum" and selected != 1:
            raise ValueError(f"krum averages m = 1 vector, got m = {selected}")
    if rule == "multikrum":
        return n - f if m is None else operator.index(m)
    return 1 if rule == "krum" else None


def _clients_in(dist_ext: FloatArray) -> int:
    """Return n for an (n + 1, n + 1) extended matrix, checking n ≥ 1."""
    n = dist_ext.shape[0] - 1
    if n < 1:
        raise ValueError(f"dist_ext must be (n + 1, n + 1) with n ≥ 1, got {n + 1}")
    return n


def _bordered(pairwise: FloatArray, to_aggregate: FloatArray) -> FloatArray:
    """Return [[D, t], [tᵀ, 0]]: D with the aggregate appended as index n."""
    n = pairwise.shape[0]
    extended = np.zeros((n + 1, n + 1))
    extended[:n, :n] = pairwise
    extended[n, :n] = to_aggregate
    extended[:n, n] = to_aggregate
    return extended


def _sq_distances_to(matrix: np.ndarray, point: FloatArray) -> FloatArray:
    """Return ‖v_j − a‖² for every row, from float64 differences by blocks."""
    distances = np.zeros(matrix.shape[0])
    for start in range(0, matrix.shape[1], _COLUMN_BLOCK):
        stop = start + _COLUMN_BLOCK
        block = np.asarray(matrix[:, start:stop], dtype=np.float64) - point[start:stop]
        distances += np.einsum("ij,ij->i", block, block)
    return distances


def _as_tuple(members: IndexArray) -> tuple[int, ...]:
    """Return sorted member indices as a tuple of Python ints."""
    return tuple(int(i) for i in np.sort(members))
