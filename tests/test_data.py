"""Tests of clients.data: the digits, the server split, client partitions, .npz data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clients.data import (
    client_data,
    load_digits,
    load_npz,
    partition_indices,
    require_float,
    require_int,
    require_str,
    server_test_set,
    split_train_test,
)

REPO = Path(__file__).resolve().parents[1]
RUN_CONFIG = {
    "seed": 7,
    "test-fraction": 0.2,
    "partitioning": "iid",
    "dirichlet-alpha": 0.5,
}


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    """Return the rows in lexicographic order: a multiset fingerprint of a matrix."""
    return rows[np.lexsort(rows.T[::-1])]


def label_distance(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each part's label mix and the whole's."""
    classes = np.unique(labels)
    overall = np.array([np.mean(labels == c) for c in classes])
    distances = []
    for part in parts:
        mix = np.array([np.mean(labels[part] == c) for c in classes])
        distances.append(0.5 * np.abs(mix - overall).sum())
    return float(np.mean(distances))


# ---------------------------------------------------------------------------
# The digits
# ---------------------------------------------------------------------------


def test_load_digits_equals_scikit_learn_scaled_to_unit_interval() -> None:
    from sklearn.datasets import load_digits as sklearn_load_digits

    reference = sklearn_load_digits()
    x, y = load_digits()

    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    np.testing.assert_array_equal(x, (reference.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, reference.target)
    assert x.min() == 0.0 and x.max() == 1.0


def test_load_digits_returns_independent_copies() -> None:
    x, _ = load_digits()
    x[0, 0] = 123.0
    assert load_digits()[0][0, 0] != 123.0


def test_load_digits_does_not_import_scikit_learn() -> None:
    code = (
        "import sys; from clients.data import load_digits; load_digits(); "
        "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# Server split
# ---------------------------------------------------------------------------


def test_split_is_a_deterministic_disjoint_cover() -> None:
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    x = np.arange(len(y), dtype=np.float64)[:, None]  # row i carries its index i

    first = split_train_test(x, y, seed=3, test_fraction=0.3)
    again = split_train_test(x, y, seed=3, test_fraction=0.3)
    other = split_train_test(x, y, seed=4, test_fraction=0.3)

    train_ids = first.x_train[:, 0].astype(int)
    test_ids = first.x_test[:, 0].astype(int)
    assert np.intersect1d(train_ids, test_ids).size == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train_ids, test_ids])), np.arange(len(y))
    )
    np.testing.assert_array_equal(first.y_test, y[test_ids])
    for part, again_part in zip(first, again, strict=True):
        np.testing.assert_array_equal(part, again_part)
    assert not np.array_equal(first.x_test, other.x_test)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.37, 0.5])
def test_split_is_stratified(fraction: float) -> None:
    x, y = load_digits()
    split = split_train_test(x, y, seed=0, test_fraction=fraction)

    assert len(split.y_test) == round(fraction * len(y))
    for label in range(10):
        quota = fraction * np.sum(y == label)
        count = np.sum(split.y_test == label)
        assert np.floor(quota) <= count <= np.ceil(quota)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_fraction_outside_unit_interval(fraction: float) -> None:
    x, y = load_digits()
    with pytest.raises(ValueError, match="test-fraction"):
        split_train_test(x, y, seed=0, test_fraction=fraction)


# ---------------------------------------------------------------------------
# Client partitions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "alpha", "num_partitions"),
    [
        ("iid", 1.0, 10),
        ("iid", 1.0, 7),
        ("dirichlet", 0.5, 10),
        ("dirichlet", 0.05, 20),
    ],
)
def test_partitions_are_a_deterministic_disjoint_nonempty_cover(
    scheme: str, alpha: float, num_partitions: int
) -> None:
    _, y = load_digits()
    parts = [
        partition_indices(y, num_partitions, k, seed=11, scheme=scheme, alpha=alpha)
        for k in range(num_partitions)
    ]
    repeated = [
        partition_indices(y, num_partitions, k, seed=11, scheme=scheme, alpha=alpha)
        for k in range(num_partitions)
    ]

    assert all(len(part) > 0 for part in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
    for part, again in zip(parts, repeated, strict=True):
        np.testing.assert_array_equal(part, again)


def test_iid_partition_sizes_differ_by_at_most_one() -> None:
    _, y = load_digits()
    sizes = [len(partition_indices(y, 7, k, 0, "iid", 1.0)) for k in range(7)]
    assert sum(sizes) == len(y) and max(sizes) - min(sizes) <= 1


def test_partitions_depend_on_the_seed() -> None:
    _, y = load_digits()
    assert not np.array_equal(
        partition_indices(y, 10, 0, 1, "iid", 1.0),
        partition_indices(y, 10, 0, 2, "iid", 1.0),
    )


def test_dirichlet_label_skew_grows_as_alpha_shrinks() -> None:
    _, y = load_digits()
    skew = {}
    for alpha in (0.05, 0.5, 5.0, 500.0):
        per_seed = [
            label_distance(
                y,
                [
                    partition_indices(y, 10, k, seed, "dirichlet", alpha)
                    for k in range(10)
                ],
            )
            for seed in range(5)
        ]
        skew[alpha] = float(np.mean(per_seed))
    iid_skew = label_distance(
        y, [partition_indices(y, 10, k, 0, "iid", 1.0) for k in range(10)]
    )

    assert skew[0.05] > skew[0.5] > skew[5.0] > skew[500.0]
    assert skew[0.05] > 0.5  # most of each partition's mass sits on few labels
    assert skew[500.0] < 0.1 and iid_skew < 0.15


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"partition_id": 10}, "partition-id"),
        ({"partition_id": -1}, "partition-id"),
        ({"num_partitions": 0, "partition_id": 0}, "num-partitions"),
        ({"num_partitions": 5000}, "exceeds"),
        ({"scheme": "shards"}, "partitioning"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "dirichlet-alpha"),
    ],
)
def test_partition_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    _, y = load_digits()
    arguments = {
        "num_partitions": 10,
        "partition_id": 0,
        "seed": 0,
        "scheme": "iid",
        "alpha": 1.0,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        partition_indices(y, **arguments)


def test_server_and_clients_hold_every_digit_exactly_once() -> None:
    digits_x, _ = load_digits()
    server_x, server_y = server_test_set(RUN_CONFIG)
    clients = [
        client_data({"partition-id": k, "num-partitions": 6}, RUN_CONFIG)
        for k in range(6)
    ]

    assert len(server_y) == round(0.2 * len(digits_x))
    held = np.concatenate([server_x, *(x for x, _ in clients)])
    np.testing.assert_array_equal(sorted_rows(held), sorted_rows(digits_x))


def test_client_data_follows_the_run_config_seed() -> None:
    node = {"partition-id": 0, "num-partitions": 4}
    first, _ = client_data(node, RUN_CONFIG)
    again, _ = client_data(node, RUN_CONFIG)
    other, _ = client_data(node, RUN_CONFIG | {"seed": 8})
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[:20], other[:20])


def test_client_data_requires_its_node_config() -> None:
    with pytest.raises(ValueError, match="'partition-id' is missing"):
        client_data({"num-partitions": 4}, RUN_CONFIG)
    with pytest.raises(ValueError, match="'partition-id' = '0'"):
        client_data({"partition-id": "0", "num-partitions": 4}, RUN_CONFIG)


# ---------------------------------------------------------------------------
# A client's own .npz
# ---------------------------------------------------------------------------


def write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_data_path_loads_a_valid_npz(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((12, 64))
    y = np.arange(12) % 10
    path = write_npz(tmp_path / "own.npz", x=x, y=y)

    own_x, own_y = client_data({"data-path": path}, RUN_CONFIG)

    assert own_x.dtype == np.float32 and own_y.dtype == np.int64
    np.testing.assert_array_equal(own_x, x.astype(np.float32))
    np.testing.assert_array_equal(own_y, y)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 64))}, r"missing array\(s\) \['y'\]"),
        ({"x": np.zeros((3, 63)), "y": np.zeros(3, int)}, r"x has shape \(3, 63\)"),
        ({"x": np.zeros((0, 64)), "y": np.zeros(0, int)}, r"x has shape \(0, 64\)"),
        ({"x": np.zeros(64), "y": np.zeros(1, int)}, r"x has shape \(64,\)"),
        ({"x": np.full((3, 64), "a"), "y": np.zeros(3, int)}, "expected real numbers"),
        ({"x": np.full((3, 64), np.nan), "y": np.zeros(3, int)}, "NaN or infinite"),
        ({"x": np.zeros((3, 64)), "y": np.zeros(4, int)}, r"y has shape \(4,\)"),
        ({"x": np.zeros((3, 64)), "y": np.zeros(3)}, "expected integers"),
        ({"x": np.zeros((3, 64)), "y": np.array([0, 10, 1])}, r"values in \[0, 10\]"),
        ({"x": np.zeros((3, 64)), "y": np.array([-1, 0, 1])}, r"values in \[-1, 1\]"),
    ],
)
def test_data_path_rejects_malformed_arrays(
    tmp_path: Path, arrays: dict, message: str
) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as raised:
        load_npz(path)
    assert path in str(raised.value)


def test_data_path_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        load_npz("relative/data.npz")
    with pytest.raises(ValueError, match="no such file"):
        load_npz(str(tmp_path / "absent.npz"))
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        load_npz(str(text))
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        load_npz(str(objects))


# ---------------------------------------------------------------------------
# Typed config access
# ---------------------------------------------------------------------------


def test_typed_config_access() -> None:
    config = {"n": 3, "flag": True, "rate": 1, "name": "iid", "nan": float("nan")}
    assert require_int(config, "n") == 3
    assert require_float(config, "rate") == 1.0
    assert require_str(config, "name") == "iid"
    with pytest.raises(ValueError, match="'missing' is missing"):
        require_int(config, "missing")
    with pytest.raises(ValueError, match="'flag' = True"):
        require_int(config, "flag")
    with pytest.raises(ValueError, match="'name' = 'iid'"):
        require_float(config, "name")
    with pytest.raises(ValueError, match="finite"):
        require_float(config, "nan")
    with pytest.raises(ValueError, match="'n' = 3"):
        require_str(config, "n")
