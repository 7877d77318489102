"""Robust aggregation rules: Mean, Krum, MultiKrum and the geometric median.

Each rule maps n client updates v_1 … v_n ∈ ℝᵈ to a point of their affine hull,
z = Σ_i w_i v_i with Σ_i w_i = 1, and every choice it makes depends on the squared
distances D_ij = ‖v_i − v_j‖² alone. So each rule comes in two forms:

- ``*_from_distances(dist, ...)`` takes the (n, n) matrix D (computed once per
  round by :func:`strategies.geometry.pairwise_sq_distances`) and returns the
  weights w, with ``vector=None``;
- ``mean``, ``krum``, ``multikrum``, ``geomed`` take the updates themselves and
  also fill ``vector`` = Σ_i w_i v_i.

Conventions: f is the number of Byzantine updates the rule must tolerate; ties are
broken by the lowest index (callers order clients deterministically, e.g. by node
id); rules are unweighted (self-reported dataset sizes are not trusted).

Pure numpy; nothing here knows about Flower.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from strategies import geometry

__all__ = [
    "RULES",
    "Aggregate",
    "geomed",
    "geomed_from_distances",
    "krum",
    "krum_from_distances",
    "mean",
    "mean_from_distances",
    "multikrum",
    "multikrum_from_distances",
]

Rule = Literal["mean", "krum", "multikrum", "geomed"]
RULES: tuple[str, ...] = get_args(Rule)

Neighbours = Literal["self", "blanchard"]
Updates = np.ndarray | Sequence[ArrayLike]

_ROUNDING = float(np.finfo(np.float64).eps)
_NEWTON_HALVINGS = 30
_NEWTON_RCOND = 1e-12


@dataclass(frozen=True, eq=False)
class Aggregate:
    """What a rule chose: the weights, the aggregate, and the evidence for it.

    Attributes:
        vector: the aggregate z = Σ_i w_i v_i, shape (d,), float64; None when the
            rule was given distances only.
        weights: w, shape (n,), float64, Σ_i w_i = 1 (up to rounding).
        scores: Krum scores s(v_i), shape (n,) (Krum and MultiKrum).
        selected: indices of the chosen updates in increasing score order, ties
            by lowest index (Krum and MultiKrum).
        iterations: Weiszfeld iterations performed (GeomMed).
        residual: the final relative change of the iterate (GeomMed).
        converged: whether the residual reached the tolerance, or the iterate was
            certified optimal at a data point (GeomMed).

    .. note:: Equality is identity (``eq=False``): field-wise ``==`` on numpy
       arrays has no single truth value.
    """

    vector: np.ndarray | None
    weights: np.ndarray
    scores: np.ndarray | None = None
    selected: np.ndarray | None = None
    iterations: int | None = None
    residual: float | None = None
    converged: bool | None = None


_DistanceRule = Callable[[np.ndarray], Aggregate]


# --- Mean -------------------------------------------------------------------


def mean_from_distances(dist: ArrayLike) -> Aggregate:
    """Return the weights of the arithmetic mean, Mean(V) = (1/n) Σ_i v_i.

    Not robust: one update can move it arbitrarily far. The distances are only
    validated and used for n.
    """
    n = _check_distances(dist).shape[0]
    return Aggregate(vector=None, weights=np.full(n, 1.0 / n))


def mean(updates: Updates) -> Aggregate:
    """Return the arithmetic mean (1/n) Σ_i v_i of the updates, unweighted."""
    matrix = geometry.as_matrix(updates)
    weights = np.full(matrix.shape[0], 1.0 / matrix.shape[0])
    return Aggregate(vector=geometry.combine(matrix, weights), weights=weights)


# --- Krum and MultiKrum -------------------------------------------------------


def krum_from_distances(
    dist: ArrayLike, f: int, neighbours: Neighbours = "self"
) -> Aggregate:
    """Return Krum's choice from squared distances: the update of lowest score.

    Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017) scores each update by
    s(v) = Σ_{u∈N(v)} ‖v − u‖² and returns the v of smallest score, ties by the
    lowest index. With ``neighbours="self"`` (the default), N(v) is the n − f
    points of V closest to v, v itself included (so n − f − 1 others), which
    needs n > 2f. With ``neighbours="blanchard"``, N(v) is the n − f − 2 closest
    points other than v, as in the original paper, which needs n ≥ 2f + 3.
    Scores depend only on the multiset of distances, so ties in distance do not
    matter; on integer-valued updates D is exact, and so are equal scores.

    Args:
        dist: the (n, n) squared-distance matrix D_ij = ‖v_i − v_j‖².
        f: number of Byzantine updates tolerated, 0 ≤ f.
        neighbours: "self" or "blanchard", as above.

    Raises:
        ValueError: if D is not a valid squared-distance matrix, or n, f,
            neighbours break the conditions above.
    """
    return multikrum_from_distances(dist, f, m=1, neighbours=neighbours)


def multikrum_from_distances(
    dist: ArrayLike, f: int, m: int | None = None, neighbours: Neighbours = "self"
) -> Aggregate:
    """Return MultiKrum's choice from squared distances: the m lowest-score updates.

    MultiKrum_m(V) = (1/m) Σ_{i∈S} v_i, the plain (unweighted) average of the m
    updates with the smallest Krum scores s(v) = Σ_{u∈N(v)} ‖v − u‖² (see
    :func:`krum_from_distances` for N(v) and ``neighbours``), ties by the lowest
    index (Blanchard, El Mhamdi, Guerraoui, Stainer 2017). 1 ≤ m ≤ n − f; the
    default is m = n − f, and m = 1 is Krum.

    Args:
        dist: the (n, n) squared-distance matrix D_ij = ‖v_i − v_j‖².
        f: number of Byzantine updates tolerated, 0 ≤ f.
        m: number of updates averaged, 1 ≤ m ≤ n − f; None means n − f.
        neighbours: "self" (N(v) counts v) or "blanchard" (n − f − 2 others).

    Raises:
        ValueError: if D is not a valid squared-distance matrix, or n, f, m,
            neighbours break the conditions above.
    """
    dist = _check_distances(dist)
    n = dist.shape[0]
    f = _check_byzantine(n, f, neighbours)
    m = _check_selected(n, f, m)

    scores = _krum_scores(dist, f, neighbours)
    selected = np.argsort(scores, kind="stable")[:m]
    weights = np.zeros(n)
    weights[selected] = 1.0 / m
    return Aggregate(vector=None, weights=weights, scores=scores, selected=selected)


def krum(updates: Updates, f: int, neighbours: Neighbours = "self") -> Aggregate:
    """Return Krum's choice among the updates (see :func:`krum_from_distances`).

    The vector is exactly the chosen update, in float64.
    """
    return _with_vector(updates, lambda dist: krum_from_distances(dist, f, neighbours))


def multikrum(
    updates: Updates,
    f: int,
    m: int | None = None,
    neighbours: Neighbours = "self",
) -> Aggregate:
    """Return MultiKrum_m of the updates (see :func:`multikrum_from_distances`)."""
    return _with_vector(
        updates, lambda dist: multikrum_from_distances(dist, f, m, neighbours)
    )


def _krum_scores(dist: np.ndarray, f: int, neighbours: Neighbours) -> np.ndarray:
    """Return s(v_i) = the sum of the k smallest eligible entries of row i of D.

    "self": k = n − f over the whole row (its own zero included); "blanchard":
    k = n − f − 2 over the row without its diagonal entry. The k smallest values
    are summed in increasing order, so rows holding the same multiset of
    distances get bit-identical scores.
    """
    n = dist.shape[0]
    if neighbours == "self":
        eligible, count = dist, n - f
    else:
        off_diagonal = ~np.eye(n, dtype=bool)
        eligible, count = dist[off_diagonal].reshape(n, n - 1), n - f - 2
    return np.sort(eligible, axis=1)[:, :count].sum(axis=1)


# --- Geometric median -----------------------------------------------------------


def geomed_from_distances(
    dist: ArrayLike, tol: float = 1e-10, max_iter: int = 1000
) -> Aggregate:
    """Return the weights of the geometric median, computed from D alone.

    GeomMed(V) = argmin_z Σ_j ‖z − v_j‖ (Weber's problem). The iterate is kept as
    weights, z = Σ_i w_i v_i with Σ_i w_i = 1, and every distance it needs comes
    from D: ‖z − v_j‖² = Σ_i w_i D_ij − ½ wᵀDw. That value is evaluated as
    wᵀGw − 2(Gw)_j + G_jj with G_ij = ½(D_is + D_js − D_ij), the Gram matrix about
    the starting update v_s: the same number, but its terms stay near the size of
    the spread around v_s, so an update 10¹² times larger does not swamp the
    distances among the others.

    - Start: the medoid v_s, the update minimising Σ_j ‖v_s − v_j‖ (lowest index
      on ties): a robust point, never zero.
    - Step: Weiszfeld's map (Weiszfeld 1937) T(z) = Σ_j t_j v_j with
      t_j ∝ 1/‖z − v_j‖, or, when it lowers the objective more, a Newton step on
      the affine span of the updates (Hessian Σ_j (I − u_j u_jᵀ)/‖z − v_j‖,
      u_j the unit vector from v_j to z), halved until it descends. Plain
      Weiszfeld can need 10⁵ iterations on nearly collinear updates; the Newton
      step converges quadratically there.
    - When z coincides with η updates (squared distance within rounding of 0),
      the Vardi–Zhang (2000) modification is used: with
      R = Σ_{j far} (v_j − z)/‖v_j − z‖ and r = ‖R‖, z is optimal if r ≤ η, else
      z ← (1 − η/r) T(z) + (η/r) z. Coincident updates are thus exact: if all
      are equal, the result is that update, with residual 0.
    - Stop when the relative change is ≤ ``tol``, or after ``max_iter``
      iterations. The relative change is max(‖z_{t+1} − z_t‖, ‖T̃(z_t) − z_t‖)
      / median_j ‖z_t − v_j‖, T̃ the plain Weiszfeld/Vardi–Zhang map: the step
      over the median distance from the iterate to the updates (invariant to
      translation and scale, and not inflated by a far outlier as a mean would
      be), and never smaller than the plain step, which is the gradient's norm
      over Σ_j 1/‖z − v_j‖ — so a short Newton step cannot stop the iteration
      while the gradient is still large.
    - Finish: if the update nearest to z passes the optimality test r ≤ η, it is
      returned exactly (an optimum lying on an update is only approached
      sublinearly); otherwise the weights are those of one last Weiszfeld map
      T(z), which are non-negative and never increase the objective.

    Args:
        dist: the (n, n) squared-distance matrix D_ij = ‖v_i − v_j‖².
        tol: relative-change tolerance, ≥ 0.
        max_iter: maximum number of iterations, ≥ 0.

    Returns:
        An Aggregate with weights, iterations, residual (the last relative
        change; 0 when certified optimal at an update; ∞ if no iteration ran)
        and converged.

    Raises:
        ValueError: if D is not a valid squared-distance matrix, tol < 0, or
            max_iter < 0.
    """
    dist = _check_distances(dist)
    if not tol >= 0:
        raise ValueError(f"tol must be ≥ 0; got {tol}")
    max_iter = operator.index(max_iter)
    if max_iter < 0:
        raise ValueError(f"max_iter must be ≥ 0; got {max_iter}")

    start = _medoid(dist)
    # Limitation: D holds ‖v_far − v_j‖² to float64 precision only, so with one
    # update 10¹² times larger than the others' spread the result is placed among
    # the others to about 1e-6 of that spread (measured), not to 1e-15.
    gram = _gram_about(dist, start)
    weights = _vertex(dist.shape[0], start)

    iterations, residual, optimal = 0, math.inf, False
    while iterations < max_iter and residual > tol and not optimal:
        iterations += 1
        new_weights, plain_weights, optimal = _geomed_step(gram, start, weights)
        residual = 0.0
        if not optimal:
            residual = max(
                _relative_change(gram, weights, new_weights),
                _relative_change(gram, weights, plain_weights),
            )
        weights = new_weights

    if not optimal:
        weights, optimal = _finish_geomed(dist, gram, weights)
        if optimal:
            residual = 0.0
    return Aggregate(
        vector=None,
        weights=weights,
        iterations=iterations,
        residual=residual,
        converged=optimal or residual <= tol,
    )


def geomed(updates: Updates, tol: float = 1e-10, max_iter: int = 1000) -> Aggregate:
    """Return the geometric median of the updates; see :func:`geomed_from_distances`."""
    return _with_vector(
        updates, lambda dist: geomed_from_distances(dist, tol, max_iter)
    )


def _vertex(n: int, k: int) -> np.ndarray:
    """Return the weights e_k that select update k."""
    weights = np.zeros(n)
    weights[k] = 1.0
    return weights


def _medoid(dist: np.ndarray) -> int:
    """Return argmin_s Σ_j ‖v_s − v_j‖, the lowest index on ties."""
    return int(np.argmin(np.sqrt(dist).sum(axis=1)))


def _gram_about(dist: np.ndarray, origin: int) -> np.ndarray:
    """Return G_ij = ⟨v_i − v_o, v_j − v_o⟩ = ½(D_io + D_jo − D_ij) for origin o."""
    to_origin = dist[:, origin]
    return 0.5 * (to_origin[:, None] + to_origin[None, :] - dist)


def _sq_distances_to(
    gram: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return ‖z − v_j‖² for z = Σ_i w_i v_i, and the rounding floor of each.

    ‖z − v_j‖² = wᵀGw − 2(Gw)_j + G_jj; an entry at or below its floor (a bound on
    the rounding error of that sum) is indistinguishable from 0: z coincides with
    v_j.
    """
    n = gram.shape[0]
    gram_w = gram @ weights
    sq = float(weights @ gram_w) - 2.0 * gram_w + np.diag(gram)
    np.maximum(sq, 0.0, out=sq)

    abs_gram_w = np.abs(gram) @ np.abs(weights)
    magnitude = float(np.abs(weights) @ abs_gram_w) + 2.0 * abs_gram_w
    floor = 4.0 * (n + 2) * _ROUNDING * (magnitude + np.abs(np.diag(gram)))
    return sq, floor


def _objective(gram: np.ndarray, weights: np.ndarray) -> float:
    """Return Σ_j ‖z − v_j‖ for z = Σ_i w_i v_i."""
    return float(np.sqrt(_sq_distances_to(gram, weights)[0]).sum())


def _norm_of_combination(gram: np.ndarray, coefficients: np.ndarray) -> float:
    """Return ‖Σ_i a_i (v_i − v_o)‖ = √(aᵀGa) for G the Gram matrix about v_o.

    When Σ_i a_i = 0 this is ‖Σ_i a_i v_i‖, whatever the origin.
    """
    return math.sqrt(max(float(coefficients @ gram @ coefficients), 0.0))


def _geomed_step(
    gram: np.ndarray, origin: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return the next iterate, the plain Weiszfeld/Vardi–Zhang one, and optimality.

    The next iterate is the Newton one when it is at least as low as the plain
    one. ``gram`` is the Gram matrix about update ``origin``.
    """
    sq, floor = _sq_distances_to(gram, weights)
    far = sq > floor
    if not far.any():
        return weights, weights, True

    radii = np.sqrt(sq)
    target = _weiszfeld_weights(radii, far)
    if not far.all():
        plain, optimal = _vardi_zhang(gram, weights, target, radii, far)
        return plain, plain, optimal

    newton = _newton_weights(gram, origin, weights, radii)
    if newton is not None and _objective(gram, newton) <= _objective(gram, target):
        return newton, target, False
    return target, target, False


def _weiszfeld_weights(radii: np.ndarray, far: np.ndarray) -> np.ndarray:
    """Return Weiszfeld's t_j ∝ 1/‖z − v_j‖ over the far updates (0 elsewhere)."""
    inverse = np.zeros_like(radii)
    inverse[far] = 1.0 / radii[far]
    return inverse / inverse.sum()


def _vardi_zhang(
    gram: np.ndarray,
    weights: np.ndarray,
    target: np.ndarray,
    radii: np.ndarray,
    far: np.ndarray,
) -> tuple[np.ndarray, bool]:
    """Return the Vardi–Zhang step from an iterate that coincides with η updates.

    r = ‖R(z)‖ = S ‖T(z) − z‖ with S = Σ_far 1/‖z − v_j‖; r ≤ η means z is optimal,
    else z ← (1 − η/r) T(z) + (η/r) z.
    """
    multiplicity = int(np.count_nonzero(~far))
    pull = float((1.0 / radii[far]).sum()) * _norm_of_combination(
        gram, target - weights
    )
    if pull <= multiplicity:
        return weights, True
    keep = multiplicity / pull
    return (1.0 - keep) * target + keep * weights, False


def _newton_weights(
    gram: np.ndarray, origin: int, weights: np.ndarray, radii: np.ndarray
) -> np.ndarray | None:
    """Return the weights after a damped Newton step, or None if none descends.

    With Y the matrix of v_i − v_s (so G = YᵀY), b_j = w − e_j and r_j = ‖Y b_j‖,
    the gradient is Y c with c = Σ_j b_j / r_j, and the Newton step Y δ solves
    (S G − Σ_j G b_j b_jᵀ G / r_j³) δ = −G c, S = Σ_j 1/r_j: the Newton system on
    the affine span of the updates, written with G only. Column ``origin`` of Y
    is zero, so its coefficient absorbs −Σ δ and keeps Σ w = 1 without moving
    the step. The system is solved after scaling coefficient i by 1/‖v_i − v_s‖
    (so that one huge update does not push the others' directions below the
    solver's cut-off), and the step is halved until the objective decreases.
    """
    n = gram.shape[0]
    offsets = weights[:, None] - np.eye(n)
    gradient = offsets @ (1.0 / radii)
    gram_offsets = gram @ offsets
    hessian = (1.0 / radii).sum() * gram - (gram_offsets / radii**3) @ gram_offsets.T

    lengths = np.sqrt(np.diag(gram))
    unit = np.where(lengths > 0.0, 1.0 / np.where(lengths > 0.0, lengths, 1.0), 1.0)
    scaled_hessian = unit[:, None] * hessian * unit[None, :]
    scaled_rhs = -unit * (gram @ gradient)
    step = unit * np.linalg.lstsq(scaled_hessian, scaled_rhs, rcond=_NEWTON_RCOND)[0]
    step[origin] -= step.sum()
    if not np.all(np.isfinite(step)):
        return None

    current = _objective(gram, weights)
    scale = 1.0
    for _ in range(_NEWTON_HALVINGS):
        candidate = weights + scale * step
        if _objective(gram, candidate) < current:
            return candidate
        scale /= 2.0
    return None


def _relative_change(
    gram: np.ndarray, weights: np.ndarray, new_weights: np.ndarray
) -> float:
    """Return ‖z_new − z‖ / median_j ‖z − v_j‖, the iterate's relative change.

    The median distance, unlike the mean, is not inflated by a far outlier, which
    would make every step look small.
    """
    scale = float(np.median(np.sqrt(_sq_distances_to(gram, weights)[0])))
    change = _norm_of_combination(gram, new_weights - weights)
    if scale == 0.0:
        return 0.0 if change == 0.0 else math.inf
    return change / scale


def _finish_geomed(
    dist: np.ndarray, gram: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Snap to the nearest update if it is optimal, else take one Weiszfeld map.

    Returns the final weights and whether they are certified optimal.
    """
    sq, floor = _sq_distances_to(gram, weights)
    nearest = int(np.argmin(sq))
    if _is_optimal_at(dist, nearest):
        return _vertex(dist.shape[0], nearest), True
    far = sq > floor
    if not far.all():
        return weights, False
    return _weiszfeld_weights(np.sqrt(sq), far), False


def _is_optimal_at(dist: np.ndarray, k: int) -> bool:
    """Tell whether update k minimises Σ_j ‖z − v_j‖ (Vardi–Zhang: ‖R_k‖ ≤ η_k).

    R_k = Σ_{j: v_j ≠ v_k} (v_j − v_k)/‖v_j − v_k‖ and η_k is the number of updates
    equal to v_k (k included); ‖R_k‖² = aᵀG⁽ᵏ⁾a with a_j = 1/‖v_j − v_k‖.
    """
    to_k = dist[k]
    far = to_k > 0.0
    if not far.any():
        return True
    inverse = np.zeros_like(to_k)
    inverse[far] = 1.0 / np.sqrt(to_k[far])
    pull = _norm_of_combination(_gram_about(dist, k), inverse)
    return bool(pull <= np.count_nonzero(~far))


# --- shared helpers -------------------------------------------------------------


def _with_vector(updates: Updates, rule: _DistanceRule) -> Aggregate:
    """Run a distance-level rule on the updates and fill in Σ_i w_i v_i."""
    matrix = geometry.as_matrix(updates)
    chosen = rule(geometry.pairwise_sq_distances(matrix))
    vector = geometry.combine(matrix, chosen.weights)
    return Aggregate(
        vector=vector,
        weights=chosen.weights,
        scores=chosen.scores,
        selected=chosen.selected,
        iterations=chosen.iterations,
        residual=chosen.residual,
        converged=chosen.converged,
    )


def _check_distances(dist: ArrayLike) -> np.ndarray:
    """Return D as float64 after checking it is a squared-distance matrix.

    D must be (n, n) with n ≥ 1, finite, non-negative, exactly symmetric, with a
    zero diagonal (as :func:`strategies.geometry.pairwise_sq_distances` returns).
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be a square (n, n) matrix; got shape {dist.shape}")
    n = dist.shape[0]
    if n == 0:
        raise ValueError("dist is empty: n=0 updates")
    if not np.all(np.isfinite(dist)):
        raise ValueError(f"dist must be finite (n={n})")
    if np.any(dist < 0.0):
        raise ValueError(f"dist must be non-negative (n={n})")
    if np.any(np.diag(dist) != 0.0):
        raise ValueError(f"dist must have a zero diagonal (n={n})")
    if not np.array_equal(dist, dist.T):
        raise ValueError(f"dist must be symmetric (n={n})")
    return dist


def _check_byzantine(n: int, f: int, neighbours: str) -> int:
    """Return f after checking 0 ≤ f and that n is large enough for Krum."""
    f = operator.index(f)
    if f < 0:
        raise ValueError(f"f must be ≥ 0; got f={f} (n={n})")
    if neighbours == "self":
        if n <= 2 * f:
            raise ValueError(
                f"Krum needs n > 2f (N(v) = the n − f closest points, v included); "
                f"got n={n}, f={f}"
            )
    elif neighbours == "blanchard":
        if n < 2 * f + 3:
            raise ValueError(
                f'Krum with neighbours="blanchard" needs n ≥ 2f + 3 (n − f − 2 ≥ 1 '
                f"other points, n > 2f + 2); got n={n}, f={f}"
            )
    else:
        raise ValueError(
            f'neighbours must be "self" or "blanchard"; got {neighbours!r}'
        )
    return f


def _check_selected(n: int, f: int, m: int | None) -> int:
    """Return m (n − f when None) after checking 1 ≤ m ≤ n − f."""
    if m is None:
        return n - f
    m = operator.index(m)
    if not 1 <= m <= n - f:
        raise ValueError(
            f"m must satisfy 1 ≤ m ≤ n − f = {n - f}; got m={m} (n={n}, f={f})"
        )
    return m
