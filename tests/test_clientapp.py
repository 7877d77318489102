"""Tests of the ClientApp, driven in-process with real Flower Messages.

Instructions are built offline as a ServerApp would send them (the global model as
ArrayRecord(state_dict), the round in a ConfigRecord) and dispatched through the
ClientApp object itself. Expected replies are recomputed independently from
clients.model, clients.data and the attack definitions.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from flwr.app import (
    DEFAULT_TTL,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.common.serde import message_from_proto, message_to_proto

from clients.app import EXTRA_KEY, FAULTS, HUGE_NUM_EXAMPLES, app
from clients.attacks import bootstrap_indices, training_seed
from clients.data import client_data
from clients.model import build_model, evaluate, state_to_arrays, train

REPO = Path(__file__).resolve().parents[1]
RUN_CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"][
    "app"
]["config"]
SERVER_NODE_ID = 1
ROUND = 3


@pytest.fixture(autouse=True)
def flower_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))


@pytest.fixture(autouse=True)
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def global_model(round_number: int = ROUND) -> torch.nn.Module:
    """A global model that differs from round to round, as a trained one would."""
    return build_model(seed=100 + round_number)


def instruction(message_type: str, node_id: int, round_number: int = ROUND) -> Message:
    """Build the message a ServerApp sends: the global model and the round."""
    content = RecordDict(
        {
            "arrays": ArrayRecord(global_model(round_number).state_dict()),
            "config": ConfigRecord({"server-round": round_number}),
        }
    )
    metadata = Metadata(
        run_id=1,
        message_id=f"{message_type}-{node_id}-{round_number}",
        src_node_id=SERVER_NODE_ID,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id=str(round_number),
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=message_type,
    )
    return make_message(metadata, content=content)


def context(node_id: int, run_overrides: dict | None = None, **node: object) -> Context:
    node_config = {"partition-id": 2, "num-partitions": 10} | node
    return Context(
        run_id=1,
        node_id=node_id,
        node_config=node_config,  # type: ignore[arg-type]
        state=RecordDict(),
        run_config=RUN_CONFIG | (run_overrides or {}),
    )


def send(
    message_type: str,
    node_id: int = 21,
    round_number: int = ROUND,
    run_overrides: dict | None = None,
    **node: object,
) -> Message:
    """Dispatch one instruction through the ClientApp; return the reply off the wire."""
    msg = instruction(message_type, node_id, round_number)
    reply = app(msg, context(node_id, run_overrides, **node))
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id
    assert reply.metadata.dst_node_id == SERVER_NODE_ID
    return message_from_proto(message_to_proto(reply))


def reply_arrays(reply: Message) -> dict[str, np.ndarray]:
    return {name: a.numpy() for name, a in reply.content["arrays"].items()}


def flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([v.ravel().astype(np.float64) for v in arrays.values()])


def independent_training(
    x: np.ndarray, y: np.ndarray, pass_index: int, round_number: int = ROUND
) -> dict[str, np.ndarray]:
    """Train the round's global model on (x, y) the way the protocol prescribes."""
    model = global_model(round_number)
    train(
        model,
        x,
        y,
        epochs=RUN_CONFIG["local-epochs"],
        lr=RUN_CONFIG["learning-rate"],
        batch_size=RUN_CONFIG["batch-size"],
        seed=training_seed(RUN_CONFIG["seed"], round_number, pass_index),
    )
    return state_to_arrays(model)


def own_data(partition_id: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return client_data({"partition-id": partition_id, "num-partitions": 10}, RUN_CONFIG)


# ---------------------------------------------------------------------------
# Honest clients
# ---------------------------------------------------------------------------


def test_honest_train_reply_follows_the_protocol() -> None:
    reply = send("train")
    start = state_to_arrays(global_model())
    arrays = reply_arrays(reply)
    x, y = own_data()

    assert set(reply.content.keys()) == {"arrays", "metrics", "experiment"}
    assert list(arrays) == list(start)
    for name, value in start.items():
        assert arrays[name].shape == value.shape and arrays[name].dtype == np.float32
    metrics = reply.content["metrics"]
    assert isinstance(metrics, MetricRecord)
    assert set(metrics) == {"num-examples", "train-loss"}
    assert metrics["num-examples"] == len(x)
    assert np.isfinite(metrics["train-loss"]) and metrics["train-loss"] > 0
    assert dict(reply.content["experiment"]) == {"role": "honest", "attack": "none"}

    expected = independent_training(x, y, pass_index=0)
    for name in start:
        np.testing.assert_array_equal(arrays[name], expected[name])
    assert not np.array_equal(flat(arrays), flat(start))


def test_honest_node_ignores_an_attack_override() -> None:
    honest = send("train", attack="sign-flip")
    plain = send("train")
    assert dict(honest.content["experiment"]) == {"role": "honest", "attack": "none"}
    np.testing.assert_array_equal(flat(reply_arrays(honest)), flat(reply_arrays(plain)))


def test_evaluate_reply_follows_the_protocol() -> None:
    reply = send("evaluate", role="byzantine")
    x, y = own_data()
    loss, accuracy = evaluate(global_model(), x, y)

    assert set(reply.content.keys()) == {"metrics", "experiment"}
    metrics = reply.content["metrics"]
    assert set(metrics) == {"num-examples", "eval-loss", "eval-accuracy"}
    assert metrics["num-examples"] == len(x)
    assert metrics["eval-loss"] == pytest.approx(loss, rel=1e-12)
    assert metrics["eval-accuracy"] == pytest.approx(accuracy, rel=1e-12)
    assert dict(reply.content["experiment"]) == {
        "role": "byzantine",
        "attack": RUN_CONFIG["attack"],
    }


def test_client_with_its_own_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.random((23, 64)).astype(np.float32)
    y = rng.integers(0, 10, 23)
    path = tmp_path / "own.npz"
    np.savez(path, x=x, y=y)

    reply = send("train", **{"data-path": str(path)})

    assert reply.content["metrics"]["num-examples"] == 23
    expected = independent_training(x, y, pass_index=0)
    np.testing.assert_array_equal(flat(reply_arrays(reply)), flat(expected))


# ---------------------------------------------------------------------------
# Byzantine clients
# ---------------------------------------------------------------------------


def honest_estimates(round_number: int = ROUND) -> np.ndarray:
    """Row 0 the honest update, rows 1 … P trainings on bootstrap resamples."""
    x, y = own_data()
    start = flat(state_to_arrays(global_model(round_number)))
    rows = [flat(independent_training(x, y, 0, round_number)) - start]
    for pass_index in range(1, RUN_CONFIG["attack-passes"] + 1):
        resample = bootstrap_indices(
            len(x), RUN_CONFIG["seed"], round_number, pass_index
        )
        local = independent_training(x[resample], y[resample], pass_index, round_number)
        rows.append(flat(local) - start)
    return np.stack(rows)


def test_alie_reply_is_mean_minus_z_sigma_of_its_own_estimates() -> None:
    reply = send("train", role="byzantine", attack="alie")
    estimates = honest_estimates()
    n, f = 10, RUN_CONFIG["num-byzantine"]
    z = NormalDist().inv_cdf((n - (n // 2 + 1 - f)) / n)
    expected = estimates.mean(axis=0) - z * estimates.std(axis=0, ddof=1)
    start = flat(state_to_arrays(global_model()))

    sent = flat(reply_arrays(reply)) - start
    np.testing.assert_allclose(sent, expected, rtol=0, atol=1e-6)
    assert dict(reply.content["experiment"]) == {"role": "byzantine", "attack": "alie"}


def test_ipm_reply_is_minus_epsilon_times_the_estimated_mean() -> None:
    reply = send("train", role="byzantine", attack="ipm")
    expected = -RUN_CONFIG["ipm-epsilon"] * honest_estimates().mean(axis=0)
    sent = flat(reply_arrays(reply)) - flat(state_to_arrays(global_model()))
    np.testing.assert_allclose(sent, expected, rtol=0, atol=1e-6)


def test_colluding_alie_clients_send_identical_arrays() -> None:
    first = reply_arrays(send("train", node_id=31, role="byzantine", attack="alie"))
    second = reply_arrays(send("train", node_id=47, role="byzantine", attack="alie"))
    next_round = reply_arrays(
        send(
            "train", node_id=31, round_number=ROUND + 1, role="byzantine", attack="alie"
        )
    )

    assert list(first) == list(second)
    for name in first:
        assert first[name].tobytes() == second[name].tobytes()
    assert not np.array_equal(flat(first), flat(next_round))


def test_colluders_in_separate_processes_agree() -> None:
    """Flower runs every ClientApp call in a fresh process: colluders must agree."""
    script = (
        "import hashlib, sys; sys.path.insert(0, 'tests');"
        "import test_clientapp as t;"
        "arrays = t.reply_arrays(t.send('train', node_id=99, role='byzantine',"
        " attack='alie'));"
        "print(hashlib.sha256(b''.join(a.tobytes() for a in arrays.values()))"
        ".hexdigest())"
    )
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    arrays = reply_arrays(send("train", node_id=5, role="byzantine", attack="alie"))
    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays.values()))
    assert result.stdout.strip() == digest.hexdigest()


def test_sign_flip_reply_reverses_and_scales_the_honest_update() -> None:
    start = flat(state_to_arrays(global_model()))
    honest = flat(reply_arrays(send("train"))) - start
    byzantine = send("train", role="byzantine", attack="sign-flip")
    sent = flat(reply_arrays(byzantine)) - start

    np.testing.assert_allclose(sent, -RUN_CONFIG["attack-scale"] * honest, atol=1e-6)
    assert dict(byzantine.content["experiment"])["attack"] == "sign-flip"


def test_run_config_attack_applies_to_byzantine_nodes() -> None:
    reply = send("train", role="byzantine", run_overrides={"attack": "sign-flip"})
    assert dict(reply.content["experiment"]) == {
        "role": "byzantine",
        "attack": "sign-flip",
    }
    override = send(
        "train", role="byzantine", attack="ipm", run_overrides={"attack": "sign-flip"}
    )
    assert dict(override.content["experiment"])["attack"] == "ipm"


def test_gaussian_reply_is_noise_of_the_documented_size() -> None:
    start = flat(state_to_arrays(global_model()))
    honest = flat(reply_arrays(send("train"))) - start
    sent = (
        flat(reply_arrays(send("train", role="byzantine", attack="gaussian"))) - start
    )

    # ‖g‖² is σ² times a χ² with d degrees of freedom: within a few % of scale·‖Δ‖.
    expected_norm = RUN_CONFIG["attack-scale"] * np.linalg.norm(honest)
    assert np.linalg.norm(sent) == pytest.approx(expected_norm, rel=0.05)
    cosine = sent @ honest / (np.linalg.norm(sent) * np.linalg.norm(honest))
    assert abs(cosine) < 0.1


def test_label_flip_trains_on_reversed_labels() -> None:
    x, y = own_data()
    reply = send("train", role="byzantine", attack="label-flip")
    expected = independent_training(x, 9 - y, pass_index=0)
    np.testing.assert_array_equal(flat(reply_arrays(reply)), flat(expected))


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [f for f in FAULTS if f not in ("none", "raise")])
def test_fault_makes_the_reply_malformed_as_named(fault: str) -> None:
    reply = send("train", fault=fault)
    start = state_to_arrays(global_model())
    arrays = reply_arrays(reply)
    metrics = reply.content["metrics"]
    num_examples = len(own_data()[0])
    first = next(iter(start))

    if fault == "nan":
        assert np.isnan(arrays[first]).all()
        assert all(np.isfinite(arrays[name]).all() for name in list(start)[1:])
    elif fault == "wrong-shape":
        assert arrays[first].shape == (
            start[first].shape[0] + 1,
            *start[first].shape[1:],
        )
    elif fault == "extra-key":
        assert list(arrays) == [*start, EXTRA_KEY]
    elif fault == "missing-num-examples":
        assert "num-examples" not in metrics and "train-loss" in metrics
    elif fault == "huge-num-examples":
        assert metrics["num-examples"] == HUGE_NUM_EXAMPLES
    elif fault == "negative-num-examples":
        assert metrics["num-examples"] == -num_examples
    if fault not in ("nan", "wrong-shape", "extra-key"):
        assert list(arrays) == list(start)
        assert all(arrays[n].shape == start[n].shape for n in start)
    if "num-examples" not in fault:
        assert metrics["num-examples"] == num_examples


@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_raise_fault_raises_inside_the_clientapp(message_type: str) -> None:
    msg = instruction(message_type, 21)
    with pytest.raises(RuntimeError, match="fault injection"):
        app(msg, context(21, fault="raise"))


def test_fault_is_applied_after_the_attack() -> None:
    reply = send("train", role="byzantine", attack="sign-flip", fault="extra-key")
    clean = send("train", role="byzantine", attack="sign-flip")
    arrays = reply_arrays(reply)
    assert EXTRA_KEY in arrays
    del arrays[EXTRA_KEY]
    np.testing.assert_array_equal(flat(arrays), flat(reply_arrays(clean)))


# ---------------------------------------------------------------------------
# Configuration errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_overrides", "node", "message"),
    [
        ({"learning-rate": "0.1"}, {}, "'learning-rate' = '0.1'"),
        ({"local-epochs": 0}, {}, "'local-epochs' = 0"),
        ({"attack": "min-max"}, {}, "'attack' = 'min-max'"),
        ({"attack-passes": 0}, {}, "'attack-passes' = 0"),
        ({"partitioning": "shards"}, {}, "'partitioning' = 'shards'"),
        ({}, {"role": "evil"}, "'role' = 'evil'"),
        ({}, {"attack": "min-max"}, "'attack' = 'min-max'"),
        ({}, {"fault": "slow"}, "'fault' = 'slow'"),
        ({}, {"partition-id": 10}, "partition-id = 10"),
        ({}, {"data-path": "relative.npz"}, "absolute path"),
    ],
)
def test_bad_configuration_fails_with_a_clear_message(
    run_overrides: dict, node: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        app(instruction("train", 21), context(21, run_overrides, **node))


def test_missing_run_config_key() -> None:
    run_config = {k: v for k, v in RUN_CONFIG.items() if k != "seed"}
    ctx = context(21)
    ctx.run_config = run_config
    with pytest.raises(ValueError, match="'seed' is missing"):
        app(instruction("train", 21), ctx)


def test_alie_without_n_needs_an_explicit_z(tmp_path: Path) -> None:
    path = tmp_path / "own.npz"
    np.savez(path, x=np.zeros((12, 64)), y=np.arange(12) % 10)
    ctx = context(21, role="byzantine", attack="alie", **{"data-path": str(path)})
    del ctx.node_config["num-partitions"]
    with pytest.raises(ValueError, match="'num-partitions', or run config 'alie-z'"):
        app(instruction("train", 21), ctx)

    ctx.run_config = ctx.run_config | {"alie-z": 1.0}
    reply = app(instruction("train", 21), ctx)
    assert dict(reply.content["experiment"])["attack"] == "alie"


def test_alie_takes_n_from_num_clients_when_set() -> None:
    # n = 20, f = 3: s = ⌊20/2 + 1⌋ − 3 = 8, z = Φ⁻¹((20 − 8)/20) = Φ⁻¹(0.6).
    from_n = send(
        "train", role="byzantine", attack="alie", run_overrides={"num-clients": 20}
    )
    explicit = send(
        "train",
        role="byzantine",
        attack="alie",
        run_overrides={"alie-z": NormalDist().inv_cdf(0.6)},
    )
    np.testing.assert_array_equal(
        flat(reply_arrays(from_n)), flat(reply_arrays(explicit))
    )
    default = send("train", role="byzantine", attack="alie")
    assert not np.array_equal(flat(reply_arrays(from_n)), flat(reply_arrays(default)))


def test_instruction_without_round() -> None:
    msg = instruction("train", 21)
    del msg.content["config"]
    with pytest.raises(ValueError, match="server-round"):
        app(msg, context(21))


# ---------------------------------------------------------------------------
# Import cost
# ---------------------------------------------------------------------------


def test_clientapp_import_and_one_round_avoid_heavy_libraries() -> None:
    """A fresh process per message pays for every import: keep them out."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); import test_clientapp as t;"
        "t.send('train', role='byzantine', attack='alie'); t.send('evaluate');"
        "heavy = ('sklearn', 'scipy', 'matplotlib', 'pydantic', 'pandas',"
        " 'torch._dynamo');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "[]"
