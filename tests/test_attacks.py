"""Tests of clients.attacks: closed forms on hand-made vectors, z(n, f), seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.attacks import (
    ATTACKS,
    alie,
    alie_z,
    bootstrap_indices,
    byzantine_update,
    flip_labels,
    gaussian,
    ipm,
    sign_flip,
    training_seed,
)

HONEST = np.array([1.0, -2.0, 3.0])
# Three estimates of honest updates on d = 2 coordinates.
ESTIMATES = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
# Column means (3, 4); sample variances ((4 + 0 + 4)/2, (4 + 4 + 16)/2) = (4, 12).
ESTIMATES_MEAN = np.array([3.0, 4.0])
ESTIMATES_STD = np.array([2.0, math.sqrt(12.0)])


def dispatch(attack: str, **overrides: object) -> np.ndarray:
    arguments: dict = {
        "scale": 4.0,
        "z": 1.5,
        "epsilon": 0.5,
        "seed": 0,
        "server_round": 1,
    } | overrides
    estimates = arguments.pop("estimates", ESTIMATES)
    honest = arguments.pop("honest", HONEST)
    return byzantine_update(attack, honest, estimates, **arguments)


def standard_normal_cdf(z: float) -> float:
    """Φ(z) = ½ (1 + erf(z / √2)): a second route to the normal distribution."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_attack_names() -> None:
    assert set(ATTACKS) == {
        "none",
        "sign-flip",
        "gaussian",
        "alie",
        "ipm",
        "label-flip",
    }


def test_sign_flip_closed_form() -> None:
    np.testing.assert_array_equal(sign_flip(HONEST, 4.0), [-4.0, 8.0, -12.0])
    np.testing.assert_array_equal(dispatch("sign-flip"), [-4.0, 8.0, -12.0])


def test_ipm_closed_form() -> None:
    np.testing.assert_allclose(ipm(ESTIMATES, 0.5), [-1.5, -2.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(dispatch("ipm"), [-1.5, -2.0], rtol=0, atol=1e-15)


def test_alie_closed_form() -> None:
    expected = np.array([3.0 - 1.5 * 2.0, 4.0 - 1.5 * math.sqrt(12.0)])
    np.testing.assert_allclose(alie(ESTIMATES, 1.5), expected, rtol=1e-14)
    np.testing.assert_allclose(dispatch("alie"), expected, rtol=1e-14)
    np.testing.assert_allclose(alie(ESTIMATES, 0.0), ESTIMATES_MEAN, rtol=0, atol=1e-15)


def test_alie_and_ipm_need_estimates() -> None:
    with pytest.raises(ValueError, match="k ≥ 2"):
        alie(ESTIMATES[:1], 1.0)
    with pytest.raises(ValueError, match="needs honest-update estimates"):
        dispatch("alie", estimates=None)
    with pytest.raises(ValueError, match="needs honest-update estimates"):
        dispatch("ipm", estimates=None)


@pytest.mark.parametrize(
    ("n", "f", "expected"),
    [
        # s = ⌊n/2 + 1⌋ − f; z = Φ⁻¹((n − s)/n); quantiles from a normal table.
        (10, 3, 0.524400512708041),  # s = 3, Φ⁻¹(0.70)
        (50, 24, 1.750686071252170),  # s = 2, Φ⁻¹(0.96)
        (10, 0, -0.253347103135800),  # s = 6, Φ⁻¹(0.40)
        (7, 2, 0.565948821932863),  # s = 2, Φ⁻¹(5/7)
        (20, 9, 1.281551565544601),  # s = 2, Φ⁻¹(0.90)
    ],
)
def test_alie_z_hand_computed(n: int, f: int, expected: float) -> None:
    assert alie_z(n, f) == pytest.approx(expected, abs=1e-12)


def test_alie_z_inverts_the_normal_distribution_function() -> None:
    for n in range(3, 60):
        for f in range(0, n // 2 + 1):
            supporters = math.floor(n / 2 + 1) - f
            quantile = (n - supporters) / n
            if not 0 < quantile < 1:
                continue
            assert standard_normal_cdf(alie_z(n, f)) == pytest.approx(
                quantile, abs=1e-12
            )


@pytest.mark.parametrize(("n", "f"), [(10, 6), (1, 0), (4, 3), (0, 0), (5, 6)])
def test_alie_z_undefined(n: int, f: int) -> None:
    with pytest.raises(ValueError, match="ALIE"):
        alie_z(n, f)


def test_gaussian_has_the_documented_scale() -> None:
    d = 200_000
    update = np.full(d, 0.5)  # ‖Δ‖/√d = 0.5, so σ = 4 · 0.5 = 2
    noise = gaussian(update, 4.0, np.random.default_rng(1))

    assert noise.shape == (d,)
    assert abs(noise.mean()) < 5 * 2.0 / math.sqrt(d)
    assert noise.std() == pytest.approx(2.0, rel=0.01)
    # Independent of the honest direction: uncorrelated with Δ's sign pattern.
    signs = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)
    assert abs(np.dot(noise, signs)) / d < 5 * 2.0 / math.sqrt(d)
    np.testing.assert_array_equal(
        gaussian(np.zeros(5), 4.0, np.random.default_rng(1)), np.zeros(5)
    )


def test_none_and_label_flip_send_the_update_unchanged() -> None:
    np.testing.assert_array_equal(dispatch("none"), HONEST)
    np.testing.assert_array_equal(dispatch("label-flip"), HONEST)


def test_flip_labels() -> None:
    np.testing.assert_array_equal(flip_labels(np.arange(10)), np.arange(9, -1, -1))


def test_unknown_attack() -> None:
    with pytest.raises(ValueError, match="'min-max'"):
        dispatch("min-max")


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_is_deterministic(attack: str) -> None:
    first, again = dispatch(attack), dispatch(attack)
    assert first.dtype == np.float64
    np.testing.assert_array_equal(first, again)


def test_gaussian_draw_depends_on_seed_and_round_only() -> None:
    honest = np.arange(1.0, 101.0)
    base = dispatch("gaussian", honest=honest)
    np.testing.assert_array_equal(base, dispatch("gaussian", honest=honest))
    assert not np.array_equal(base, dispatch("gaussian", honest=honest, server_round=2))
    assert not np.array_equal(base, dispatch("gaussian", honest=honest, seed=1))


def test_colluder_seeds() -> None:
    first = bootstrap_indices(50, seed=3, server_round=2, pass_index=1)
    assert first.shape == (50,) and first.min() >= 0 and first.max() < 50
    np.testing.assert_array_equal(first, bootstrap_indices(50, 3, 2, 1))
    assert not np.array_equal(first, bootstrap_indices(50, 3, 2, 2))
    assert not np.array_equal(first, bootstrap_indices(50, 3, 3, 1))
    assert len(np.unique(first)) < 50  # drawn with replacement

    assert training_seed(3, 2, 0) == training_seed(3, 2, 0)
    seeds = {training_seed(3, r, p) for r in range(3) for p in range(3)}
    assert len(seeds) == 9
    with pytest.raises(ValueError, match="non-negative"):
        training_seed(-1, 0, 0)
