"""Byzantine attacks on flat model updates: pure numpy, no Flower, no torch.

An update is Δ = w_local − w_global, flattened to one float64 vector of length d.
A Byzantine client first computes the honest update Δ on its own data, then sends
w_global + A(Δ) for the attack A chosen by the run (or its node) config.

Colluding attacks (ALIE, IPM) need the mean μ and spread σ of the honest updates.
A Byzantine client estimates them from its own data only: its honest update plus
`attack-passes` more local trainings from the global model, each on a bootstrap
resample of its own examples. Every random draw is seeded from
(seed, server-round, pass, stream) and never from the node's identity, so two
colluders holding the same data and the same global model compute bit-identical
vectors without talking to each other.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Literal, get_args

import numpy as np

Attack = Literal["none", "sign-flip", "gaussian", "alie", "ipm", "label-flip"]
ATTACKS: tuple[str, ...] = get_args(Attack)
COLLUDING_ATTACKS = ("alie", "ipm")
DATA_ATTACKS = ("label-flip",)
NUM_CLASSES = 10

# Independent random streams under one (seed, server-round, pass).
_TRAIN_STREAM = 0
_BOOTSTRAP_STREAM = 1
_GAUSSIAN_STREAM = 2


# ---------------------------------------------------------------------------
# Seeds shared by colluders
# ---------------------------------------------------------------------------


def _seed_sequence(
    seed: int, server_round: int, pass_index: int, stream: int
) -> np.random.SeedSequence:
    """Return the seed sequence of (seed, server-round, pass, stream); all ≥ 0."""
    entropy = [seed, server_round, pass_index, stream]
    if min(entropy) < 0:
        raise ValueError(
            f"seed = {seed}, server-round = {server_round}, pass = {pass_index}: "
            "expected non-negative ints"
        )
    return np.random.SeedSequence(entropy)


def training_seed(seed: int, server_round: int, pass_index: int) -> int:
    """Return the seed of local training pass `pass_index` in this round.

    Pass 0 is the honest training on all of the client's data; passes 1 … P are the
    colluders' bootstrap trainings.
    """
    state = _seed_sequence(seed, server_round, pass_index, _TRAIN_STREAM)
    return int(state.generate_state(1, dtype=np.uint64)[0])


def bootstrap_indices(
    num_examples: int, seed: int, server_round: int, pass_index: int
) -> np.ndarray:
    """Return N indices drawn uniformly with replacement from 0 … N−1 (Efron 1979).

    The resample of pass `pass_index` ≥ 1 in this round; the same for every client
    with the same seed, round and number of examples.
    """
    if num_examples < 1:
        raise ValueError(f"bootstrap of {num_examples} examples: expected ≥ 1")
    sequence = _seed_sequence(seed, server_round, pass_index, _BOOTSTRAP_STREAM)
    return np.random.default_rng(sequence).integers(0, num_examples, num_examples)


# ---------------------------------------------------------------------------
# The attacks
# ---------------------------------------------------------------------------


def sign_flip(update: np.ndarray, scale: float) -> np.ndarray:
    """Return −scale · Δ: the honest update reversed and amplified.

    The sign-flipping attack (e.g. Allen-Zhu, Ebrahimian, Li, Alistarh 2021); with
    scale c the attacker's vector has norm c‖Δ‖ (byzflower's default c = 4).
    """
    return -scale * update


def gaussian(update: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Return pure noise g ~ N(0, σ² I_d) with σ = scale · ‖Δ‖ / √d.

    The Gaussian Byzantine vectors of Blanchard, El Mhamdi, Guerraoui, Stainer
    (2017), sized relative to the honest update so that E‖g‖² = scale² ‖Δ‖²:
    the same energy as sign-flip at the same scale, whatever the model's size.
    A zero update gives a zero vector.
    """
    sigma = scale * np.linalg.norm(update) / np.sqrt(update.size)
    return sigma * rng.standard_normal(update.size)


def alie_z(num_clients: int, num_byzantine: int) -> float:
    """Return ALIE's z for n clients of which f are Byzantine.

    Baruch, Baruch, Goldberg (2019), "A Little Is Enough": the attackers need
    s = ⌊n/2 + 1⌋ − f honest clients to side with them, and choose
    z = Φ⁻¹((n − s)/n), with Φ the standard normal distribution function, so that
    about s honest coordinates lie farther from the mean than theirs. Raises
    ValueError when (n − s)/n ∉ (0, 1), where z is undefined.
    """
    if num_clients < 1 or not 0 <= num_byzantine <= num_clients:
        raise ValueError(
            f"ALIE: n = {num_clients}, f = {num_byzantine}: expected n ≥ 1 and "
            "0 ≤ f ≤ n"
        )
    supporters = num_clients // 2 + 1 - num_byzantine
    quantile = (num_clients - supporters) / num_clients
    if not 0.0 < quantile < 1.0:
        raise ValueError(
            f"ALIE: n = {num_clients}, f = {num_byzantine} give s = {supporters} "
            f"and (n − s)/n = {quantile}, outside (0, 1): z is undefined; "
            "set alie-z > 0"
        )
    return NormalDist().inv_cdf(quantile)


def alie(estimates: np.ndarray, z: float) -> np.ndarray:
    """Return μ − z · σ per coordinate (Baruch, Baruch, Goldberg 2019).

    `estimates` (k, d), k ≥ 2, holds the attacker's estimates of honest updates;
    μ_j is their mean and σ_j their sample standard deviation (divisor k − 1) on
    coordinate j.
    """
    if estimates.ndim != 2 or estimates.shape[0] < 2:
        raise ValueError(
            f"ALIE: estimates of shape {estimates.shape}, expected (k, d) with k ≥ 2"
        )
    mean = estimates.mean(axis=0)
    spread = estimates.std(axis=0, ddof=1)
    return mean - z * spread


def ipm(estimates: np.ndarray, epsilon: float) -> np.ndarray:
    """Return −ε · μ, μ the mean of the rows of `estimates` (k, d), k ≥ 1.

    Inner product manipulation (Xie, Koyejo, Gupta 2020): for small ε the
    aggregate stays close to the honest mean yet its inner product with the true
    gradient can turn negative.
    """
    if estimates.ndim != 2 or estimates.shape[0] < 1:
        raise ValueError(
            f"IPM: estimates of shape {estimates.shape}, expected (k, d) with k ≥ 1"
        )
    return -epsilon * estimates.mean(axis=0)


def flip_labels(labels: np.ndarray) -> np.ndarray:
    """Return 9 − y: a label-flipping data attack.

    Label flipping as data poisoning of federated learning: Tolpegin, Truex,
    Gursoy, Liu (2020). A Byzantine client trains on its own images with these
    labels and sends the resulting update unchanged.
    """
    return (NUM_CLASSES - 1) - labels


# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------


def byzantine_update(
    attack: str,
    honest: np.ndarray,
    estimates: np.ndarray | None,
    *,
    scale: float,
    z: float,
    epsilon: float,
    seed: int,
    server_round: int,
) -> np.ndarray:
    """Return the update a Byzantine client sends instead of its honest one.

    `honest` is Δ (d,) computed on the client's own data — already on flipped labels
    for "label-flip", which, like "none", returns it unchanged. `estimates` (k, d)
    are the honest-update estimates ALIE and IPM need (see module docstring);
    `z` is ALIE's resolved z. The Gaussian draw is seeded from (seed, server_round).
    """
    if attack in ("none", "label-flip"):
        return honest
    if attack == "sign-flip":
        return sign_flip(honest, scale)
    if attack == "gaussian":
        rng = np.random.default_rng(
            _seed_sequence(seed, server_round, 0, _GAUSSIAN_STREAM)
        )
        return gaussian(honest, scale, rng)
    if attack in COLLUDING_ATTACKS:
        if estimates is None:
            raise ValueError(f"attack '{attack}' needs honest-update estimates")
        return alie(estimates, z) if attack == "alie" else ipm(estimates, epsilon)
    raise ValueError(f"attack = {attack!r}: expected one of {ATTACKS}")
