"""The Flower strategies driven with real reply messages, good and bad."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

from strategies import GeomMed, Krum, Mean, MultiKrum, RobustStrategy
from strategies.records import ModelLayout
from tests.replies import (
    NodeList,
    arrays_from_vector,
    error_reply,
    global_model,
    train_reply,
)

D = 16  # 4×3 + 4 coordinates in tests.replies.SHAPES


def configured(strategy: RobustStrategy, node_ids: list[int]) -> ArrayRecord:
    """Run configure_train so the strategy knows the global model."""
    arrays = global_model()
    list(strategy.configure_train(1, arrays, ConfigRecord(), NodeList(node_ids)))  # type: ignore[arg-type]
    return arrays


def honest_vectors(n: int, seed: int = 1) -> np.ndarray:
    """n float32-representable vectors near each other."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, D)) * 0.1).astype(np.float32).astype(np.float64)


def flat(arrays: ArrayRecord) -> np.ndarray:
    layout = ModelLayout.of(arrays)
    return layout.flatten(arrays).astype(np.float64)


def brute_multikrum(vectors: np.ndarray, f: int, m: int) -> np.ndarray:
    """Independent MultiKrum: scores by direct float64 differences, N(v) ∋ v."""
    n = len(vectors)
    dist = np.array([[np.sum((a - b) ** 2) for b in vectors] for a in vectors])
    scores = np.array([np.sort(dist[i])[: n - f].sum() for i in range(n)])
    order = sorted(range(n), key=lambda i: (scores[i], i))
    return vectors[order[:m]].mean(axis=0)


BAD_REPLIES = {
    "nan": lambda node, good: train_reply(node, arrays_from_vector(np.full(D, np.nan))),
    "inf": lambda node, good: train_reply(node, arrays_from_vector(np.full(D, np.inf))),
    "wrong shape": lambda node, good: train_reply(
        node,
        {
            "layer.weight": np.zeros((3, 4), np.float32),
            "layer.bias": np.zeros(4, np.float32),
        },
    ),
    "wrong dtype": lambda node, good: train_reply(
        node,
        {
            "layer.weight": np.zeros((4, 3), np.float64),
            "layer.bias": np.zeros(4, np.float32),
        },
    ),
    "extra key": lambda node, good: train_reply(
        node, {**arrays_from_vector(good), "extra": np.zeros(2, np.float32)}
    ),
    "missing key": lambda node, good: train_reply(
        node, {"layer.weight": arrays_from_vector(good)["layer.weight"]}
    ),
    "extra array record": lambda node, good: train_reply(
        node,
        arrays_from_vector(good),
        extra_records={"more": ArrayRecord({"x": Array(np.zeros(2, np.float32))})},
    ),
    "missing num-examples": lambda node, good: train_reply(
        node, arrays_from_vector(good), num_examples=None
    ),
    "num-examples 1e12": lambda node, good: train_reply(
        node, arrays_from_vector(good), num_examples=10**12
    ),
    "negative num-examples": lambda node, good: train_reply(
        node, arrays_from_vector(good), num_examples=-5
    ),
    "non-finite metric": lambda node, good: train_reply(
        node, arrays_from_vector(good), metrics={"train-loss": float("nan")}
    ),
    "error reply": lambda node, good: error_reply(node),
}


@pytest.mark.parametrize("kind", sorted(BAD_REPLIES))
@pytest.mark.parametrize("strategy_class", [Mean, Krum, MultiKrum, GeomMed])
def test_bad_reply_is_rejected_and_round_aggregates_the_good_ones(
    kind: str, strategy_class: type[RobustStrategy], caplog: pytest.LogCaptureFixture
) -> None:
    vectors = honest_vectors(6)
    strategy = strategy_class(num_byzantine=1)
    configured(strategy, list(range(1, 8)))
    replies = [train_reply(i + 1, arrays_from_vector(v)) for i, v in enumerate(vectors)]
    replies.append(BAD_REPLIES[kind](7, vectors[0] + 1000.0))

    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, replies)

    assert arrays is not None and metrics is not None
    aggregate = flat(arrays)
    assert np.isfinite(aggregate).all()
    assert metrics["accepted"] == 6 and metrics["rejected"] == 1
    assert "node 7" in caplog.text
    # the aggregate is the rule applied to the six good replies alone
    clean = strategy_class(num_byzantine=1)
    configured(clean, list(range(1, 7)))
    expected, _ = clean.aggregate_train(1, replies[:6])
    assert expected is not None
    np.testing.assert_array_equal(aggregate, flat(expected))


def test_multikrum_equals_brute_force_and_ignores_arrival_order() -> None:
    rng = np.random.default_rng(3)
    vectors = honest_vectors(9)
    vectors[-2:] += 5.0  # two far-away Byzantine vectors
    node_ids = [int(i) for i in rng.permutation(np.arange(100, 109))]
    strategy = MultiKrum(num_byzantine=2)
    configured(strategy, node_ids)
    replies = [
        train_reply(node, arrays_from_vector(v))
        for node, v in zip(sorted(node_ids), vectors, strict=False)
    ]

    results = []
    for order in itertools.islice(itertools.permutations(range(9)), 0, 400, 97):
        arrays, _ = strategy.aggregate_train(1, [replies[i] for i in order])
        assert arrays is not None
        results.append(flat(arrays))

    expected = brute_multikrum(vectors, f=2, m=7).astype(np.float32)
    for result in results:
        np.testing.assert_array_equal(result, results[0])
    np.testing.assert_allclose(results[0], expected, rtol=1e-6, atol=1e-7)


def test_krum_picks_the_brute_force_choice_and_reports_its_node() -> None:
    vectors = honest_vectors(7, seed=5)
    vectors[0] += 3.0
    strategy = Krum(num_byzantine=2)
    configured(strategy, list(range(10, 17)))
    replies = [
        train_reply(10 + i, arrays_from_vector(v)) for i, v in enumerate(vectors)
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    chosen = brute_multikrum(vectors, f=2, m=1)
    np.testing.assert_array_equal(flat(arrays), chosen.astype(np.float32))
    index = int(np.flatnonzero((vectors == chosen).all(axis=1))[0])
    assert metrics["selected_node_ids"] == [10 + index]


def test_too_few_replies_keep_the_global_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy = MultiKrum(num_byzantine=2)
    configured(strategy, [1, 2, 3, 4, 5])
    vectors = honest_vectors(5)
    replies = [
        train_reply(i + 1, arrays_from_vector(v)) for i, v in enumerate(vectors[:4])
    ]
    replies.append(error_reply(5))
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is None  # Flower keeps the current global model
    assert metrics is not None and metrics["kept_global"] == 1
    assert "n=4 replies <= 2f=4" in caplog.text


def test_unweighted_by_default_and_weighted_mean_is_opt_in() -> None:
    vectors = honest_vectors(3)
    replies = [
        train_reply(1, arrays_from_vector(vectors[0]), num_examples=1),
        train_reply(2, arrays_from_vector(vectors[1]), num_examples=1),
        train_reply(3, arrays_from_vector(vectors[2]), num_examples=98),
    ]
    plain = Mean()
    configured(plain, [1, 2, 3])
    arrays, _ = plain.aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(flat(arrays), vectors.mean(axis=0), rtol=1e-6, atol=1e-7)

    weighted = Mean(weighted=True)
    configured(weighted, [1, 2, 3])
    arrays, _ = weighted.aggregate_train(1, replies)
    assert arrays is not None
    expected = (vectors[0] + vectors[1] + 98 * vectors[2]) / 100
    np.testing.assert_allclose(flat(arrays), expected, rtol=1e-6, atol=1e-7)


def test_client_metrics_are_aggregated_by_median() -> None:
    vectors = honest_vectors(5)
    losses = [0.1, 0.2, 0.3, 0.4, 1e9]
    replies = [
        train_reply(i + 1, arrays_from_vector(v), metrics={"train-loss": loss})
        for i, (v, loss) in enumerate(zip(vectors, losses, strict=False))
    ]
    strategy = MultiKrum(num_byzantine=1)
    configured(strategy, [1, 2, 3, 4, 5])
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None and metrics["train-loss"] == pytest.approx(0.3)


def test_kappa_fields_in_the_metric_record_match_closed_form() -> None:
    # honest: f points at 0 and n − 2f at 1; Byzantine: f points at 1 (1-D, along e_0)
    n, f = 7, 2
    values = [0.0] * f + [1.0] * (n - 2 * f) + [1.0] * f
    roles = ["honest"] * (n - f) + ["byzantine"] * f
    replies = []
    for node, (value, role) in enumerate(zip(values, roles, strict=False), start=1):
        vector = np.zeros(D)
        vector[0] = value
        replies.append(train_reply(node, arrays_from_vector(vector), role=role))
    strategy = MultiKrum(num_byzantine=f)
    configured(strategy, list(range(1, n + 1)))
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None
    assert metrics["kappa_hon"] == pytest.approx(f / (n - 2 * f), rel=1e-12)
    assert metrics["kappa_worst"] >= metrics["kappa_hon"]
    assert metrics["kappa_worst"] <= metrics["bound_upper"]
    assert metrics["byzantine_selected"] == f


def test_geomed_reports_iterations_and_residual() -> None:
    vectors = honest_vectors(6)
    strategy = GeomMed(num_byzantine=1, tol=1e-10)
    configured(strategy, list(range(1, 7)))
    replies = [train_reply(i + 1, arrays_from_vector(v)) for i, v in enumerate(vectors)]
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None
    assert metrics["geomed_iterations"] >= 1
    assert 0 <= metrics["geomed_residual"] <= 1e-10


def test_metric_record_is_a_flower_metric_record() -> None:
    strategy = Mean()
    configured(strategy, [1, 2])
    vectors = honest_vectors(2)
    _, metrics = strategy.aggregate_train(
        1, [train_reply(i + 1, arrays_from_vector(v)) for i, v in enumerate(vectors)]
    )
    assert isinstance(metrics, MetricRecord)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: MultiKrum(num_byzantine=-1), "num_byzantine=-1"),
        (lambda: MultiKrum(num_selected=0), "num_selected=0"),
        (lambda: Krum(neighbours="others"), "neighbours='others'"),
        (lambda: GeomMed(tol=0), "tol=0"),
        (lambda: Mean(fraction_train=1.5), "fraction_train=1.5"),
    ],
)
def test_bad_arguments_fail_at_construction(factory, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        factory()


class _BrokenKrum(Krum):
    """A deliberately wrong rule: picks the reply with the *largest* score."""

    def aggregate_distances(self, dist, screened):  # type: ignore[no-untyped-def]
        chosen = super().aggregate_distances(dist, screened)
        assert chosen.scores is not None
        weights = np.zeros(len(chosen.weights))
        weights[int(np.argmax(chosen.scores))] = 1.0
        return type(chosen)(vector=None, weights=weights, scores=chosen.scores)


def test_a_ratio_above_the_proven_bound_is_an_error_with_inputs_saved(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    vectors = honest_vectors(7)
    vectors[-1] += 50.0  # one far-away reply: the broken rule picks it
    strategy = _BrokenKrum(num_byzantine=2, out_dir=tmp_path)
    configured(strategy, list(range(1, 8)))
    replies = [train_reply(i + 1, arrays_from_vector(v)) for i, v in enumerate(vectors)]
    with caplog.at_level(logging.ERROR, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(4, replies)
    assert arrays is not None and metrics is not None
    assert metrics["kappa_worst"] > metrics["bound_upper"]
    assert "exceeds the proven bound" in caplog.text
    saved = np.load(tmp_path / "anomalies" / "round-4.npz")
    assert saved["dist"].shape == (7, 7) and saved["weights"][-1] == 1.0


def test_a_failing_kappa_report_never_costs_the_round(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise FloatingPointError("injected")

    monkeypatch.setattr("strategies.base.kappa_report", broken)
    vectors = honest_vectors(5)
    strategy = MultiKrum(num_byzantine=1)
    configured(strategy, [1, 2, 3, 4, 5])
    replies = [train_reply(i + 1, arrays_from_vector(v)) for i, v in enumerate(vectors)]
    with caplog.at_level(logging.ERROR, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    assert "κ report failed" in caplog.text
    np.testing.assert_allclose(
        flat(arrays), brute_multikrum(vectors, 1, 4).astype(np.float32), rtol=1e-6
    )
