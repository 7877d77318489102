"""The byzflower ClientApp: honest and Byzantine clients of one Flower federation.

Who a node is comes from its node config (`--node-config` on the SuperNode):
`partition-id`, `num-partitions`, `role` ("honest" | "byzantine", default honest),
optional `attack` (overrides the run config's), optional `data-path` (its own .npz)
and optional `fault` (a malformed reply, to test the server's screening).

Train: the global model's state_dict arrives in content["arrays"] and the round in
content["config"]["server-round"]. An honest client trains locally and replies with
its model; a Byzantine client computes the same honest update Δ on its own data,
then sends w_global + A(Δ) for its attack A (see clients.attacks). Every reply
carries {"role", "attack"} in an "experiment" ConfigRecord that the aggregation
rules never read; the server uses it only to measure damage.

Flower starts a fresh process for each message, so this module imports only numpy,
torch and Flower's app types (no scikit-learn, scipy, matplotlib or pydantic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from clients.attacks import (
    ATTACKS,
    COLLUDING_ATTACKS,
    DATA_ATTACKS,
    alie_z,
    bootstrap_indices,
    byzantine_update,
    flip_labels,
    training_seed,
)
from clients.data import (
    PARTITIONINGS,
    ConfigValue,
    client_data,
    optional_str,
    require_float,
    require_int,
    require_str,
)
from clients.model import (
    arrays_to_state,
    build_model,
    flatten_state,
    state_to_arrays,
    train,
    unflatten_state,
)
from clients.model import evaluate as evaluate_model

ROLES = ("honest", "byzantine")
FAULTS = (
    "none",
    "nan",
    "wrong-shape",
    "extra-key",
    "missing-num-examples",
    "huge-num-examples",
    "negative-num-examples",
    "raise",
)
HUGE_NUM_EXAMPLES = 10**12  # above any sane max_num_examples
EXTRA_KEY = "byzflower.extra"

Arrays = dict[str, np.ndarray]
Metrics = dict[str, int | float]

app = ClientApp()


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """The run config keys a client uses, typed and range-checked."""

    seed: int
    local_epochs: int
    learning_rate: float
    batch_size: int
    attack: str
    attack_scale: float
    alie_z: float
    ipm_epsilon: float
    attack_passes: int
    num_byzantine: int


@dataclass(frozen=True)
class NodeRole:
    """Who this node is: its role, the attack it runs and the fault it injects."""

    role: str
    attack: str
    fault: str


def _check(condition: bool, key: str, value: object, allowed: str) -> None:
    """Raise ValueError naming the key, its value and what is allowed."""
    if not condition:
        raise ValueError(f"config key '{key}' = {value!r}: expected {allowed}")


def run_settings(run_config: Mapping[str, ConfigValue]) -> RunSettings:
    """Read and validate the client's run config keys; raise ValueError if any is bad.

    The data keys (test-fraction, partitioning, dirichlet-alpha) are checked here
    too, so a bad run fails on its first message whatever the node's role.
    """
    settings = RunSettings(
        seed=require_int(run_config, "seed"),
        local_epochs=require_int(run_config, "local-epochs"),
        learning_rate=require_float(run_config, "learning-rate"),
        batch_size=require_int(run_config, "batch-size"),
        attack=require_str(run_config, "attack"),
        attack_scale=require_float(run_config, "attack-scale"),
        alie_z=require_float(run_config, "alie-z"),
        ipm_epsilon=require_float(run_config, "ipm-epsilon"),
        attack_passes=require_int(run_config, "attack-passes"),
        num_byzantine=require_int(run_config, "num-byzantine"),
    )
    _check(settings.seed >= 0, "seed", settings.seed, "an int ≥ 0")
    _check(settings.local_epochs >= 1, "local-epochs", settings.local_epochs, "≥ 1")
    _check(settings.learning_rate > 0, "learning-rate", settings.learning_rate, "> 0")
    _check(settings.batch_size >= 1, "batch-size", settings.batch_size, "≥ 1")
    _check(settings.attack in ATTACKS, "attack", settings.attack, f"one of {ATTACKS}")
    _check(settings.attack_scale >= 0, "attack-scale", settings.attack_scale, "≥ 0")
    _check(settings.alie_z >= 0, "alie-z", settings.alie_z, "≥ 0 (0 = from n, f)")
    _check(settings.ipm_epsilon >= 0, "ipm-epsilon", settings.ipm_epsilon, "≥ 0")
    _check(settings.attack_passes >= 1, "attack-passes", settings.attack_passes, "≥ 1")
    _check(settings.num_byzantine >= 0, "num-byzantine", settings.num_byzantine, "≥ 0")
    test_fraction = require_float(run_config, "test-fraction")
    _check(0 < test_fraction < 1, "test-fraction", test_fraction, "0 < value < 1")
    partitioning = require_str(run_config, "partitioning")
    _check(
        partitioning in PARTITIONINGS,
        "partitioning",
        partitioning,
        f"one of {PARTITIONINGS}",
    )
    alpha = require_float(run_config, "dirichlet-alpha")
    _check(alpha > 0, "dirichlet-alpha", alpha, "> 0")
    return settings


def node_role(
    node_config: Mapping[str, ConfigValue], settings: RunSettings
) -> NodeRole:
    """Read the node's role, attack and fault; an honest node's attack is "none"."""
    # Limitation: a node config without `role` is honest; Flower's Simulation
    # Runtime gives nodes no role, so simulated federations have no Byzantine nodes.
    role = optional_str(node_config, "role", "honest")
    _check(role in ROLES, "role", role, f"one of {ROLES}")
    attack = optional_str(node_config, "attack", settings.attack)
    _check(attack in ATTACKS, "attack", attack, f"one of {ATTACKS}")
    fault = optional_str(node_config, "fault", "none")
    _check(fault in FAULTS, "fault", fault, f"one of {FAULTS}")
    return NodeRole(role, attack if role == "byzantine" else "none", fault)


def federation_size(
    run_config: Mapping[str, ConfigValue], node_config: Mapping[str, ConfigValue]
) -> int:
    """Return the number of clients n that ALIE's z depends on.

    n = run config `num-clients` when present and > 0, else node config
    `num-partitions`; ValueError when neither is known.
    """
    if "num-clients" in run_config and require_int(run_config, "num-clients") > 0:
        return require_int(run_config, "num-clients")
    if "num-partitions" in node_config:
        return require_int(node_config, "num-partitions")
    raise ValueError(
        "attack 'alie' with alie-z = 0 derives z from the number of clients n: "
        "set run config 'num-clients' > 0, node config 'num-partitions', or run "
        "config 'alie-z' > 0"
    )


def resolved_alie_z(
    settings: RunSettings,
    run_config: Mapping[str, ConfigValue],
    node_config: Mapping[str, ConfigValue],
) -> float:
    """Return alie-z if > 0, else ALIE's z from n clients and f = num-byzantine."""
    if settings.alie_z > 0:
        return settings.alie_z
    return alie_z(federation_size(run_config, node_config), settings.num_byzantine)


# ---------------------------------------------------------------------------
# Messages in
# ---------------------------------------------------------------------------


def global_arrays(msg: Message) -> Arrays:
    """Return the global model sent in content["arrays"], as numpy arrays in order."""
    if "arrays" not in msg.content or not isinstance(
        msg.content["arrays"], ArrayRecord
    ):
        raise ValueError("instruction has no ArrayRecord 'arrays' (the global model)")
    return {name: array.numpy() for name, array in msg.content["arrays"].items()}


def server_round(msg: Message) -> int:
    """Return content["config"]["server-round"], an int ≥ 0."""
    config = msg.content.get("config")
    if not isinstance(config, ConfigRecord) or "server-round" not in config:
        raise ValueError("instruction has no ConfigRecord 'config' with 'server-round'")
    value = config["server-round"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"server-round = {value!r}: expected an int ≥ 0")
    return value


# ---------------------------------------------------------------------------
# Local work
# ---------------------------------------------------------------------------


def local_training(
    start: Arrays,
    x: np.ndarray,
    y: np.ndarray,
    settings: RunSettings,
    seed: int,
) -> tuple[Arrays, float]:
    """Train a copy of the model `start` on (x, y); return its weights and mean loss."""
    model = build_model(settings.seed)
    model.load_state_dict(arrays_to_state(start))
    loss = train(
        model,
        x,
        y,
        epochs=settings.local_epochs,
        lr=settings.learning_rate,
        batch_size=settings.batch_size,
        seed=seed,
    )
    return state_to_arrays(model), loss


def honest_estimates(
    start: Arrays,
    x: np.ndarray,
    y: np.ndarray,
    honest_update: np.ndarray,
    settings: RunSettings,
    round_number: int,
) -> np.ndarray:
    """Return (1 + P, d) estimates of honest updates from this client's data alone.

    Row 0 is its honest update Δ; row p = 1 … P (P = attack-passes) is the update of
    a local training from `start` on bootstrap resample p of (x, y). Resamples and
    batch orders are seeded from (seed, round, p) only, never from the node.
    """
    # Limitation: colluders send one identical vector only when they hold the same
    # data; on different partitions their estimates, hence their vectors, differ.
    origin = flatten_state(start)
    rows = [honest_update]
    for pass_index in range(1, settings.attack_passes + 1):
        resample = bootstrap_indices(len(x), settings.seed, round_number, pass_index)
        seed = training_seed(settings.seed, round_number, pass_index)
        local, _ = local_training(start, x[resample], y[resample], settings, seed)
        rows.append(flatten_state(local) - origin)
    return np.stack(rows)


def attacked_arrays(
    start: Arrays,
    local: Arrays,
    x: np.ndarray,
    y: np.ndarray,
    attack: str,
    settings: RunSettings,
    context: Context,
    round_number: int,
) -> Arrays:
    """Return w_global + A(Δ), Δ = local − start, for a model-poisoning attack A."""
    origin = flatten_state(start)
    honest_update = flatten_state(local) - origin
    estimates = None
    if attack in COLLUDING_ATTACKS:
        estimates = honest_estimates(start, x, y, honest_update, settings, round_number)
    z = 0.0
    if attack == "alie":
        z = resolved_alie_z(settings, context.run_config, context.node_config)
    update = byzantine_update(
        attack,
        honest_update,
        estimates,
        scale=settings.attack_scale,
        z=z,
        epsilon=settings.ipm_epsilon,
        seed=settings.seed,
        server_round=round_number,
    )
    return unflatten_state(origin + update, like=start)


# ---------------------------------------------------------------------------
# Replies out
# ---------------------------------------------------------------------------


def inject_fault(
    fault: str, arrays: Arrays, metrics: Metrics
) -> tuple[Arrays, Metrics]:
    """Return copies of the reply's arrays and metrics made malformed as `fault` names.

    nan: the first array filled with NaN; wrong-shape: the first array given one
    more row; extra-key: an array the model does not have; missing-, huge- and
    negative-num-examples: num-examples removed, set to 10⁶, or negated (−max(1, n));
    raise: RuntimeError, which Flower turns into an error reply.
    """
    arrays, metrics = dict(arrays), dict(metrics)
    first = next(iter(arrays))
    if fault == "nan":
        arrays[first] = np.full_like(arrays[first], np.nan)
    elif fault == "wrong-shape":
        extra_row = np.zeros((1, *arrays[first].shape[1:]), arrays[first].dtype)
        arrays[first] = np.concatenate([arrays[first], extra_row])
    elif fault == "extra-key":
        arrays[EXTRA_KEY] = np.zeros(1, dtype=np.float32)
    elif fault == "missing-num-examples":
        del metrics["num-examples"]
    elif fault == "huge-num-examples":
        metrics["num-examples"] = HUGE_NUM_EXAMPLES
    elif fault == "negative-num-examples":
        metrics["num-examples"] = -max(1, int(metrics["num-examples"]))
    elif fault == "raise":
        raise RuntimeError("fault injection: this ClientApp raises (node config)")
    elif fault != "none":
        raise ValueError(f"fault = {fault!r}: expected one of {FAULTS}")
    return arrays, metrics


def experiment_record(node: NodeRole) -> ConfigRecord:
    """Return the record the server reads only to measure damage: role and attack."""
    return ConfigRecord({"role": node.role, "attack": node.attack})


def array_record(arrays: Arrays) -> ArrayRecord:
    """Return named numpy arrays as an ArrayRecord, keeping their order."""
    return ArrayRecord(
        {
            name: Array.from_numpy_ndarray(np.ascontiguousarray(value))
            for name, value in arrays.items()
        }
    )


# ---------------------------------------------------------------------------
# The ClientApp
# ---------------------------------------------------------------------------


@app.train()
def train_handler(msg: Message, context: Context) -> Message:
    """Train on this node's data; a Byzantine node then applies its attack."""
    torch.set_num_threads(1)
    settings = run_settings(context.run_config)
    node = node_role(context.node_config, settings)
    round_number = server_round(msg)
    start = global_arrays(msg)
    x, y = client_data(context.node_config, context.run_config)

    labels = flip_labels(y) if node.attack in DATA_ATTACKS else y
    seed = training_seed(settings.seed, round_number, 0)
    local, loss = local_training(start, x, labels, settings, seed)

    if node.attack not in ("none", *DATA_ATTACKS):
        local = attacked_arrays(
            start, local, x, y, node.attack, settings, context, round_number
        )

    metrics: Metrics = {"num-examples": len(x), "train-loss": float(loss)}
    arrays, metrics = inject_fault(node.fault, local, metrics)
    content = RecordDict(
        {
            "arrays": array_record(arrays),
            "metrics": MetricRecord({**metrics}),
            "experiment": experiment_record(node),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    """Evaluate the global model on this node's own data.

    Faults target the train reply, which the rules aggregate; only "raise" also
    applies here.
    """
    torch.set_num_threads(1)
    settings = run_settings(context.run_config)
    node = node_role(context.node_config, settings)
    start = global_arrays(msg)
    x, y = client_data(context.node_config, context.run_config)

    model = build_model(settings.seed)
    model.load_state_dict(arrays_to_state(start))
    loss, accuracy = evaluate_model(model, x, y)

    if node.fault == "raise":
        raise RuntimeError("fault injection: this ClientApp raises (node config)")
    metrics = MetricRecord(
        {"num-examples": len(x), "eval-loss": loss, "eval-accuracy": accuracy}
    )
    content = RecordDict({"metrics": metrics, "experiment": experiment_record(node)})
    return Message(content=content, reply_to=msg)
