"""byzflower's ServerApp: validated config, robust strategy, central evaluation.

The round itself (screen, aggregate, κ, log) lives in the strategies; this
module wires a run config to one of them, evaluates every round's global model
on a test split only the server holds, and writes the run's artifacts to
``out-dir``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from logging import ERROR, INFO
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from server.config import ConfigError, RunConfig, parse_run_config
from server.report import write_report, write_summary
from strategies import STRATEGIES, RobustStrategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one byzflower experiment from the run config."""
    try:
        config = parse_run_config(context.run_config)
        num_nodes = wait_for_nodes(grid, config)
        config.check_federation(num_nodes)
        out_dir = output_directory(config, context.run_id)
    except ConfigError as error:
        log(ERROR, "byzflower: %s", error)
        raise
    log(INFO, "byzflower: %d nodes, results in %s", num_nodes, out_dir)

    from clients.data import server_test_set
    from clients.model import build_model

    model = build_model(config.seed)
    initial = ArrayRecord(model.state_dict())
    x_test, y_test = server_test_set(context.run_config)
    strategy = build_strategy(config, out_dir)
    _write_json(out_dir / "config.json", config.model_dump(by_alias=True))

    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=config.num_server_rounds,
        timeout=config.round_timeout,
        train_config=ConfigRecord({"server-round": 0}),
        evaluate_fn=central_evaluation(config.seed, x_test, y_test),
    )
    seconds = time.perf_counter() - started

    save_model(result.arrays if len(result.arrays) else initial, out_dir)
    write_summary(out_dir, config, strategy.rounds, result, seconds, num_nodes)
    write_report(
        out_dir, strategy.rounds, result, title=report_title(config, num_nodes)
    )
    log(INFO, "byzflower: done in %.1fs; results in %s", seconds, out_dir)


def report_title(config: RunConfig, num_nodes: int) -> str:
    """E.g. ``multikrum (f = 3) vs alie, 10 clients``."""
    return (
        f"{config.rule} (f = {config.num_byzantine}) vs {config.attack}, "
        f"{num_nodes} clients"
    )


def output_directory(config: RunConfig, run_id: int) -> Path:
    """``out-dir`` if set, else ``~/byzflower-runs/run-<run id>``; created empty.

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    out_dir = Path(config.out_dir or Path.home() / "byzflower-runs" / f"run-{run_id}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ".write-test").touch()
        (out_dir / ".write-test").unlink()
    except OSError as error:
        raise ConfigError(
            f"out-dir={str(out_dir)!r} cannot be written: {error.strerror}"
        ) from None
    stale = out_dir / "rounds.jsonl"
    if stale.exists():
        stale.unlink()
    return out_dir


def wait_for_nodes(grid: Grid, config: RunConfig) -> int:
    """Wait (bounded by ``node-wait-timeout``) for ``num-clients`` nodes.

    Returns the number connected; with ``num-clients`` = 0, whatever is
    connected once at least ``min-train-nodes`` are.
    """
    wanted = config.num_clients or config.min_train_nodes
    deadline = time.monotonic() + config.node_wait_timeout
    while len(nodes := list(grid.get_node_ids())) < wanted:
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return len(nodes)


def build_strategy(config: RunConfig, out_dir: Path) -> RobustStrategy:
    """The strategy for ``config.rule`` with the config's settings."""
    common: dict[str, object] = {
        "num_byzantine": config.num_byzantine,
        "fraction_train": config.fraction_train,
        "fraction_evaluate": config.fraction_evaluate,
        "min_train_nodes": config.min_train_nodes,
        "min_evaluate_nodes": 1 if config.fraction_evaluate else 0,
        "min_available_nodes": max(config.num_clients, config.min_train_nodes),
        "node_wait_timeout": config.node_wait_timeout,
        "kappa_max_subsets": config.kappa_max_subsets,
        "out_dir": out_dir,
        "seed": config.seed,
    }
    if config.rule in ("krum", "multikrum"):
        common["neighbours"] = config.krum_neighbours
    if config.rule == "multikrum":
        common["num_selected"] = config.num_selected or None
    if config.rule == "geomed":
        common["tol"] = config.geomed_tol
        common["max_iter"] = config.geomed_max_iter
    return STRATEGIES[config.rule](**common)  # type: ignore[arg-type]


def central_evaluation(
    seed: int, x_test: np.ndarray, y_test: np.ndarray
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Return Flower's ``evaluate_fn``: the global model on the server's split."""
    from clients.model import build_model, evaluate

    model = build_model(seed)

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = evaluate(model, x_test, y_test)
        return MetricRecord({"accuracy": float(accuracy), "loss": float(loss)})

    return evaluate_global


def save_model(arrays: ArrayRecord, out_dir: Path) -> None:
    """Save the final global model as ``model.pt`` (a torch state_dict)."""
    import torch

    torch.save(arrays.to_torch_state_dict(), out_dir / "model.pt")


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")
