"""Client and server data: scikit-learn's handwritten digits, split and partitioned.

The digits (Alpaydin and Kaynak 1998, UCI; packaged by scikit-learn) are 1,797 real
8×8 grey-level images with 16 levels, flattened to 64 features and scaled to [0, 1].
Every split is a pure function of the run's `seed`, so the server and every client
compute the same split independently: the server keeps a stratified test share, and
client k keeps partition k of the rest.

This module reads scikit-learn's data file with numpy and never imports scikit-learn:
Flower starts a fresh ClientApp process for every message, and importing scikit-learn
would cost more than training the model.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

NUM_FEATURES = 64
NUM_CLASSES = 10
DIGITS_LEVELS = 16.0
PARTITIONINGS = ("iid", "dirichlet")

# Independent random streams derived from the run's seed, one per purpose.
_SPLIT_STREAM = 0
_PARTITION_STREAM = 1

ConfigValue = bool | int | float | str


class TrainTestSplit(NamedTuple):
    """A train/test split of (x, y)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ---------------------------------------------------------------------------
# Typed access to Flower's run and node configs
# ---------------------------------------------------------------------------


def require_int(config: Mapping[str, ConfigValue], key: str) -> int:
    """Return config[key] as an int, or raise ValueError naming the key and value."""
    if key not in config:
        raise ValueError(f"config key '{key}' is missing (expected an int)")
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"config key '{key}' = {value!r} ({type(value).__name__}): expected an int"
        )
    return value


def require_float(config: Mapping[str, ConfigValue], key: str) -> float:
    """Return config[key] as a finite float (ints accepted), or raise ValueError."""
    if key not in config:
        raise ValueError(f"config key '{key}' is missing (expected a float)")
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"config key '{key}' = {value!r} ({type(value).__name__}): expected a float"
        )
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"config key '{key}' = {value!r}: expected a finite float")
    return number


def require_str(config: Mapping[str, ConfigValue], key: str) -> str:
    """Return config[key] as a str, or raise ValueError naming the key and value."""
    if key not in config:
        raise ValueError(f"config key '{key}' is missing (expected a string)")
    value = config[key]
    if not isinstance(value, str):
        raise ValueError(
            f"config key '{key}' = {value!r} ({type(value).__name__}): "
            "expected a string"
        )
    return value


def optional_str(config: Mapping[str, ConfigValue], key: str, default: str) -> str:
    """Return config[key] as a str if present, else `default`; raise if ill-typed."""
    if key not in config:
        return default
    return require_str(config, key)


# ---------------------------------------------------------------------------
# The digits
# ---------------------------------------------------------------------------


def digits_file() -> Path:
    """Locate scikit-learn's packaged `digits.csv.gz` without importing scikit-learn.

    `importlib.util.find_spec` of a top-level package reads its location from the
    import system's finders; it does not execute the package.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "scikit-learn's digits data (sklearn/datasets/data/digits.csv.gz) was not "
        f"found in {locations or 'any installed scikit-learn'}; install scikit-learn "
        "or give the client its own data with the node config key 'data-path'"
    )


@functools.cache
def _digits_table() -> np.ndarray:
    """Parse the digits file once per process: 1,797 rows of 64 pixels and a label."""
    with gzip.open(digits_file(), mode="rt", encoding="utf-8") as text:
        table = np.loadtxt(text, delimiter=",")
    table.setflags(write=False)
    return table


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return the handwritten digits as x float32 (1797, 64) in [0, 1] and y int64.

    x = pixels / 16, where pixels ∈ {0, …, 16} are scikit-learn's
    `load_digits().data`; y ∈ {0, …, 9} is its `target`, row for row.
    """
    table = _digits_table()
    x = (table[:, :NUM_FEATURES] / DIGITS_LEVELS).astype(np.float32)
    y = table[:, NUM_FEATURES].astype(np.int64)
    return x, y


# ---------------------------------------------------------------------------
# Splits and partitions
# ---------------------------------------------------------------------------


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Return the generator of one purpose (`stream`) under the run's `seed`."""
    if seed < 0:
        raise ValueError(f"seed = {seed}: expected a non-negative int")
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Round non-negative `quotas` to ints summing to `total` (Hamilton's method).

    Each count is ⌊q_c⌋ or ⌈q_c⌉; the remaining units go to the largest fractional
    parts, ties to the lowest index.
    """
    counts = np.floor(quotas).astype(np.int64)
    remainders = quotas - counts
    order = np.argsort(-remainders, kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def split_train_test(
    x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float
) -> TrainTestSplit:
    """Split (x, y) into train and test sets, stratified by label, deterministically.

    With N examples, N_c of label c and φ = test_fraction, the test set holds
    T = round(φ·N) examples, of which T_c ∈ {⌊φ·N_c⌋, ⌈φ·N_c⌉} have label c
    (largest-remainder rounding), drawn uniformly without replacement within each
    label by a generator seeded from `seed` alone. Rows keep their original order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test-fraction = {test_fraction}: expected 0 < value < 1")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)} labels")
    rng = _rng(seed, _SPLIT_STREAM)
    labels, label_counts = np.unique(y, return_counts=True)
    test_total = round(test_fraction * len(y))
    test_counts = _largest_remainder(test_fraction * label_counts, test_total)

    is_test = np.zeros(len(y), dtype=bool)
    for label, count in zip(labels, test_counts, strict=True):
        members = np.flatnonzero(y == label)
        is_test[rng.permutation(members)[:count]] = True

    return TrainTestSplit(x[~is_test], y[~is_test], x[is_test], y[is_test])


def _iid_parts(
    num_examples: int, num_partitions: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle 0 … N−1 and cut it into `num_partitions` near-equal parts."""
    return np.array_split(rng.permutation(num_examples), num_partitions)


def _dirichlet_parts(
    y: np.ndarray, num_partitions: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Split each label's examples across partitions in Dirichlet(α) proportions.

    For each label c: p_c ~ Dir(α·1_K) over the K partitions, and c's examples,
    shuffled, are cut at round(N_c · Σ_{j≤k} p_{c,j}), so partition k receives
    about p_{c,k}·N_c of them. Small α concentrates each label on few partitions;
    α → ∞ gives every partition the global label mix.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        proportions = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = np.round(np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for k, share in enumerate(np.split(members, cuts)):
            parts[k].append(share)
    return [np.concatenate(chunks) for chunks in parts]


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give every empty partition one example taken from the currently largest one."""
    # Limitation: this repair nudges the Dirichlet draw; it moves at most K − 1
    # examples, and only when α is small enough to leave a partition empty.
    parts = [np.sort(part) for part in parts]
    for k in range(len(parts)):
        if len(parts[k]) == 0:
            donor = max(range(len(parts)), key=lambda j: (len(parts[j]), -j))
            parts[k] = parts[donor][-1:]
            parts[donor] = parts[donor][:-1]
    return parts


def partition_indices(
    y: np.ndarray,
    num_partitions: int,
    partition_id: int,
    seed: int,
    scheme: str,
    alpha: float,
) -> np.ndarray:
    """Return the sorted indices of partition `partition_id` of the examples y.

    The K = `num_partitions` partitions are disjoint, cover 0 … N−1 and are
    non-empty (N ≥ K required). `scheme` is:

    - "iid": a uniform shuffle cut into K parts of ⌊N/K⌋ or ⌈N/K⌉ examples;
    - "dirichlet": label skew (Hsu, Qi, Brown 2019): for each label c,
      p_c ~ Dir(α·1_K) and label c's examples are shared among the partitions in
      proportions p_c (the per-label construction, which makes the partitions an
      exact disjoint cover); an empty partition receives one example from the
      largest.

    Every client computes all K partitions from the same seed and keeps its own, so
    clients agree without communicating.
    """
    if num_partitions < 1:
        raise ValueError(f"num-partitions = {num_partitions}: expected ≥ 1")
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition-id = {partition_id}: expected 0 ≤ value < num-partitions "
            f"= {num_partitions}"
        )
    if len(y) < num_partitions:
        raise ValueError(
            f"num-partitions = {num_partitions} exceeds the {len(y)} examples "
            "available: every partition must be non-empty"
        )
    rng = _rng(seed, _PARTITION_STREAM)
    if scheme == "iid":
        parts = _iid_parts(len(y), num_partitions, rng)
    elif scheme == "dirichlet":
        if not alpha > 0.0:
            raise ValueError(f"dirichlet-alpha = {alpha}: expected > 0")
        parts = _dirichlet_parts(y, num_partitions, alpha, rng)
    else:
        raise ValueError(f"partitioning = {scheme!r}: expected one of {PARTITIONINGS}")
    return _fill_empty(parts)[partition_id]


# ---------------------------------------------------------------------------
# What the server and a client hold
# ---------------------------------------------------------------------------


def _digits_split(run_config: Mapping[str, ConfigValue]) -> TrainTestSplit:
    """Split the digits by the run config's `seed` and `test-fraction`."""
    x, y = load_digits()
    return split_train_test(
        x,
        y,
        require_int(run_config, "seed"),
        require_float(run_config, "test-fraction"),
    )


def server_test_set(
    run_config: Mapping[str, ConfigValue],
) -> tuple[np.ndarray, np.ndarray]:
    """Return the server's held-out digits (x, y): the test share of the split."""
    split = _digits_split(run_config)
    return split.x_test, split.y_test


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate a client's own data: a .npz with x (N, 64) and y (N,).

    x must be real-valued and finite (returned as float32), y integer with values in
    0 … 9 (returned as int64), N ≥ 1. Every failure raises ValueError naming the
    path and what is wrong.
    """
    where = f"data-path '{path}'"
    file = Path(path)
    if not file.is_absolute():
        raise ValueError(f"{where}: expected an absolute path")
    if not file.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:
        raise ValueError(f"{where}: not a readable .npz file ({error})") from error
    missing = sorted({"x", "y"} - arrays.keys())
    if missing:
        raise ValueError(f"{where}: missing array(s) {missing}; found {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or x.shape[1] != NUM_FEATURES or x.shape[0] == 0:
        raise ValueError(f"{where}: x has shape {x.shape}, expected (N, 64), N ≥ 1")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{where}: x has dtype {x.dtype}, expected real numbers")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: x contains NaN or infinite values")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"{where}: y has shape {y.shape}, expected ({x.shape[0]},) to match x"
        )
    if y.dtype.kind not in "iu":
        raise ValueError(f"{where}: y has dtype {y.dtype}, expected integers")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ValueError(
            f"{where}: y has values in [{y.min()}, {y.max()}], expected 0 … 9"
        )
    return x.astype(np.float32), y.astype(np.int64)


def client_data(
    node_config: Mapping[str, ConfigValue], run_config: Mapping[str, ConfigValue]
) -> tuple[np.ndarray, np.ndarray]:
    """Return this client's examples (x, y).

    With node config `data-path`, the validated .npz at that path; otherwise
    partition `partition-id` of `num-partitions` of the training share of the
    digits, by the run config's `partitioning` and `dirichlet-alpha`.
    """
    if "data-path" in node_config:
        return load_npz(require_str(node_config, "data-path"))
    split = _digits_split(run_config)
    scheme = require_str(run_config, "partitioning")
    alpha = require_float(run_config, "dirichlet-alpha")
    indices = partition_indices(
        split.y_train,
        num_partitions=require_int(node_config, "num-partitions"),
        partition_id=require_int(node_config, "partition-id"),
        seed=require_int(run_config, "seed"),
        scheme=scheme,
        alpha=alpha,
    )
    return split.x_train[indices], split.y_train[indices]
