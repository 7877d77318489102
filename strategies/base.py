"""The Flower side of every robust rule: sample, screen, aggregate, report.

:class:`RobustStrategy` is a ``flwr.serverapp.strategy.FedAvg`` whose
``aggregate_train`` is replaced by the round described in DESIGN.md: screen
every reply, stack the accepted models in node-id order, compute the (n, n)
squared distances once, let the rule pick hull weights, apply them, and report
κ. Subclasses (:class:`~strategies.Mean`, :class:`~strategies.Krum`,
:class:`~strategies.MultiKrum`, :class:`~strategies.GeomMed`) only say how the
weights are chosen.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from logging import DEBUG, ERROR, INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from strategies.geometry import combine, pairwise_sq_distances
from strategies.kappa_report import KappaReport, kappa_report
from strategies.records import (
    ModelLayout,
    Rejection,
    ScreenedReplies,
    median_metrics,
    screen_evaluate_replies,
    screen_train_replies,
    sender_of,
)
from strategies.rules import Aggregate


class RobustStrategy(FedAvg):
    """A FedAvg-compatible strategy that aggregates with a robust rule.

    Args:
        num_byzantine: f, the number of Byzantine clients the rule tolerates.
        fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes,
        min_available_nodes, arrayrecord_key, configrecord_key: as in FedAvg.
        node_wait_timeout: seconds to wait for ``min_available_nodes`` before
            sampling from the nodes that are connected (FedAvg waits for ever,
            so one dead SuperNode stalls the run).
        max_num_examples: replies claiming more examples than this, or fewer
            than one, are rejected. Rules are unweighted: the claim is never a
            weight (except ``Mean(weighted=True)``).
        kappa_max_subsets: budget of subsets for the exact worst ratio; beyond
            it a local search gives a lower estimate.
        out_dir: when set, one JSON line per round is appended to
            ``out_dir/rounds.jsonl``, and inputs of a bound violation are saved
            under ``out_dir/anomalies``.
        seed: seed of node sampling, so a run samples the same nodes again.
    """

    rule = "robust"

    def __init__(
        self,
        *,
        num_byzantine: int = 0,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        node_wait_timeout: float = 120.0,
        max_num_examples: int = 10_000_000,
        kappa_max_subsets: int = 20_000,
        out_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
        )
        _check_int("num_byzantine", num_byzantine, minimum=0)
        _check_int("kappa_max_subsets", kappa_max_subsets, minimum=1)
        _check_int("max_num_examples", max_num_examples, minimum=1)
        if not 0.0 <= fraction_train <= 1.0:
            raise ValueError(f"fraction_train={fraction_train} must be in [0, 1]")
        if not 0.0 <= fraction_evaluate <= 1.0:
            raise ValueError(f"fraction_evaluate={fraction_evaluate} must be in [0, 1]")
        if not node_wait_timeout > 0:
            raise ValueError(f"node_wait_timeout={node_wait_timeout} must be > 0")
        self.num_byzantine = num_byzantine
        self.node_wait_timeout = node_wait_timeout
        self.max_num_examples = max_num_examples
        self.kappa_max_subsets = kappa_max_subsets
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.seed = seed
        self.rounds: list[dict[str, object]] = []
        self._global: ArrayRecord | None = None
        self._layout: ModelLayout | None = None
        self._sent: dict[str, list[Message]] = {}
        self._pending: dict[str, object] | None = None
        self._connected_after_timeout: int | None = None

    # ------------------------------------------------------------------ rule

    def aggregate_distances(
        self, dist: np.ndarray, screened: ScreenedReplies
    ) -> Aggregate:
        """Choose hull weights from the (n, n) squared distances."""
        raise NotImplementedError

    def too_few(self, n: int) -> str | None:
        """Why ``n`` accepted replies are too few for the rule, or None."""
        if n <= 2 * self.num_byzantine:
            return f"n={n} replies <= 2f={2 * self.num_byzantine}"
        return None

    def selection_size(self, n: int) -> int | None:
        """m, the number of vectors the rule averages (None if not a selection)."""
        return None

    def describe(self, aggregate: Aggregate, n: int) -> str:
        """A few words on what the rule chose this round, for the round line."""
        return self.rule

    # -------------------------------------------------------------- sampling

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(
            INFO,
            "\t├──> %s: f=%d (tolerated Byzantine clients)",
            self.rule,
            self.num_byzantine,
        )
        log(INFO, "\t├──> Replies screened; num-examples is never a weight")
        log(
            INFO, "\t├──> κ: exact worst ratio up to %d subsets", self.kappa_max_subsets
        )
        log(
            INFO,
            "\t└──> Sampling: fraction train %.2f, evaluate %.2f; minimum nodes "
            "train %d, evaluate %d, available %d (waiting at most %.0fs)",
            self.fraction_train,
            self.fraction_evaluate,
            self.min_train_nodes,
            self.min_evaluate_nodes,
            self.min_available_nodes,
            self.node_wait_timeout,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes (bounded wait) and send them the global model."""
        self._global = arrays
        self._layout = ModelLayout.of(arrays)
        if self.fraction_train == 0.0:
            return []
        node_ids = self._sample(
            grid, server_round, self.fraction_train, self.min_train_nodes
        )
        config["server-round"] = server_round
        record = RecordDict(
            {self.arrayrecord_key: arrays, self.configrecord_key: config}
        )
        messages = list(self._construct_messages(record, node_ids, MessageType.TRAIN))
        self._sent["train"] = messages
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes (bounded wait) for federated evaluation."""
        if self.fraction_evaluate == 0.0:
            return []
        node_ids = self._sample(
            grid, server_round, self.fraction_evaluate, self.min_evaluate_nodes
        )
        config["server-round"] = server_round
        record = RecordDict(
            {self.arrayrecord_key: arrays, self.configrecord_key: config}
        )
        messages = list(
            self._construct_messages(record, node_ids, MessageType.EVALUATE)
        )
        self._sent["evaluate"] = messages
        return messages

    def _sample(
        self, grid: Grid, server_round: int, fraction: float, minimum: int
    ) -> list[int]:
        """Wait at most ``node_wait_timeout`` for nodes, then sample.

        After a wait times out, later rounds wait only for as many nodes as
        were connected then (a dead SuperNode costs one wait, not one per
        round). Sampling is seeded by (seed, round) and sorted, so a run is
        repeatable.
        """
        wanted = max(self.min_available_nodes, minimum)
        if self._connected_after_timeout is not None:
            wanted = min(wanted, max(self._connected_after_timeout, minimum))
        deadline = time.monotonic() + self.node_wait_timeout
        while len(nodes := sorted(grid.get_node_ids())) < wanted:
            if time.monotonic() >= deadline:
                log(
                    WARNING,
                    "round %d: only %d node(s) connected after %.0fs (wanted %d); "
                    "going on with them, and waiting for no more than that from now",
                    server_round,
                    len(nodes),
                    self.node_wait_timeout,
                    wanted,
                )
                self._connected_after_timeout = len(nodes)
                break
            time.sleep(1.0)
        size = min(len(nodes), max(int(len(nodes) * fraction), minimum))
        rng = random.Random(self.seed * 1_000_003 + server_round)
        return sorted(rng.sample(nodes, size))

    # ----------------------------------------------------------- aggregation

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, aggregate robustly, report κ; never raise because of a client."""
        started = time.perf_counter()
        replies = list(replies)
        if self._layout is None or self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")

        screened = screen_train_replies(
            replies,
            self._layout,
            arrays_key=self.arrayrecord_key,
            max_num_examples=self.max_num_examples,
            senders=self._senders("train"),
        )
        missing = self._missing("train", replies)
        self._log_rejections(server_round, "train", screened.rejected, missing)
        record = self._base_record(server_round, len(replies), screened, missing)
        n = len(screened.node_ids)

        if (reason := self.too_few(n)) is not None:
            log(
                WARNING,
                "round %d: %s for %s: global model kept",
                server_round,
                reason,
                self.rule,
            )
            record.update(kept_global=True, reason=reason)
            self._pending = record
            return None, self._metric_record(record, screened)

        dist = pairwise_sq_distances(screened.models)
        aggregate = self.aggregate_distances(dist, screened)
        vector = combine(screened.models, aggregate.weights)
        arrays = self._layout.unflatten(vector, self._global)
        aggregated = time.perf_counter()

        record.update(self._rule_fields(aggregate, screened))
        record["choice"] = self.describe(aggregate, n)
        record.update(self._kappa_fields(server_round, dist, aggregate, screened))
        record["seconds_aggregate"] = aggregated - started
        record["seconds_kappa"] = time.perf_counter() - aggregated
        self._pending = record
        return arrays, self._metric_record(record, screened)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Median of the clients' evaluation metrics; bad replies rejected."""
        replies = list(replies)
        _, metrics, rejected = screen_evaluate_replies(
            replies,
            max_num_examples=self.max_num_examples,
            senders=self._senders("evaluate"),
        )
        self._log_rejections(
            server_round, "evaluate", rejected, self._missing("evaluate", replies)
        )
        if not metrics:
            return None
        return median_metrics(metrics)

    def _senders(self, phase: str) -> dict[str, int]:
        """Instruction message id → destination node, for this phase's messages.

        Flower fills in message ids when it pushes the messages; offline (no
        push) the map is empty and replies are known by their sender id.
        """
        return {
            message.metadata.message_id: message.metadata.dst_node_id
            for message in self._sent.get(phase, [])
            if message.metadata.message_id
        }

    def _missing(self, phase: str, replies: list[Message]) -> list[int]:
        """Nodes that were sent an instruction and did not reply at all."""
        senders = self._senders(phase)
        replied = {sender_of(message, senders) for message in replies}
        sent = [message.metadata.dst_node_id for message in self._sent.get(phase, [])]
        return [node for node in sent if node not in replied]

    def _log_rejections(
        self,
        server_round: int,
        phase: str,
        rejected: list[Rejection],
        missing: list[int],
    ) -> None:
        for rejection in rejected:
            log(
                WARNING,
                "round %d %s: rejected reply from node %d: %s",
                server_round,
                phase,
                rejection.node_id,
                rejection.reason,
            )
        if missing:
            log(
                WARNING,
                "round %d %s: no reply from node(s) %s",
                server_round,
                phase,
                missing,
            )

    def _base_record(
        self,
        server_round: int,
        num_replies: int,
        screened: ScreenedReplies,
        missing: list[int],
    ) -> dict[str, object]:
        roles = screened.roles
        return {
            "round": server_round,
            "rule": self.rule,
            "f": self.num_byzantine,
            "replies": num_replies,
            "accepted": len(screened.node_ids),
            "rejected": len(screened.rejected),
            "rejections": [
                {"node_id": r.node_id, "reason": r.reason} for r in screened.rejected
            ],
            "missing": missing,
            "node_ids": screened.node_ids,
            "roles": roles if screened.labelled else None,
            "byzantine_accepted": (
                sum(role == "byzantine" for role in roles)
                if screened.labelled
                else None
            ),
            "kept_global": False,
        }

    def _rule_fields(
        self, aggregate: Aggregate, screened: ScreenedReplies
    ) -> dict[str, object]:
        ids = screened.node_ids
        fields: dict[str, object] = {
            "m": self.selection_size(len(ids)),
            "weights": [float(w) for w in aggregate.weights],
        }
        if aggregate.scores is not None:
            fields["scores"] = [float(s) for s in aggregate.scores]
        if aggregate.selected is not None:
            selected = [int(i) for i in aggregate.selected]
            fields["selected_node_ids"] = [ids[i] for i in selected]
            if screened.labelled:
                fields["byzantine_selected"] = sum(
                    screened.roles[i] == "byzantine" for i in selected
                )
        if aggregate.iterations is not None:
            fields["geomed_iterations"] = aggregate.iterations
            fields["geomed_residual"] = aggregate.residual
            fields["geomed_converged"] = aggregate.converged
        return fields

    def _kappa_fields(
        self,
        server_round: int,
        dist: np.ndarray,
        aggregate: Aggregate,
        screened: ScreenedReplies,
    ) -> dict[str, object]:
        """κ for this round; an error here is logged and never fails the round."""
        byzantine = None
        if screened.labelled:
            byzantine = np.array([role == "byzantine" for role in screened.roles])
        try:
            report = kappa_report(
                dist,
                aggregate.weights,
                rule=self.rule,
                f=self.num_byzantine,
                m=self.selection_size(dist.shape[0]),
                byzantine=byzantine,
                max_subsets=self.kappa_max_subsets,
                converged=aggregate.converged is not False,
            )
        except Exception as error:  # κ is a report: it must not cost the round
            log(ERROR, "round %d: κ report failed: %r", server_round, error)
            return {"kappa_error": repr(error)}
        if report.violation:
            self._save_violation(server_round, dist, aggregate, byzantine, report)
        return report.as_dict()

    def _save_violation(
        self,
        server_round: int,
        dist: np.ndarray,
        aggregate: Aggregate,
        byzantine: np.ndarray | None,
        report: KappaReport,
    ) -> None:
        where = "not saved (no out_dir)"
        if self.out_dir is not None:
            folder = self.out_dir / "anomalies"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"round-{server_round}.npz"
            np.savez(
                path,
                dist=dist,
                weights=aggregate.weights,
                byzantine=np.array([]) if byzantine is None else byzantine,
                f=self.num_byzantine,
            )
            where = str(path)
        log(
            ERROR,
            "round %d: κ̂_worst %.6g exceeds the proven bound %.6g for %s (n=%d, f=%d): "
            "this is a bug; inputs %s",
            server_round,
            report.kappa_worst,
            report.bound_upper,
            self.rule,
            report.n,
            report.f,
            where,
        )

    def _metric_record(
        self, record: dict[str, object], screened: ScreenedReplies
    ) -> MetricRecord:
        """The round's numbers for Flower's Result, plus clients' median metrics."""
        metrics = median_metrics(screened.metrics)
        for key in (
            "accepted",
            "rejected",
            "byzantine_accepted",
            "byzantine_selected",
            "geomed_iterations",
        ):
            count = record.get(key)
            if isinstance(count, int) and not isinstance(count, bool):
                metrics[key] = count
        for key in (
            "kappa_hon",
            "kappa_worst",
            "bound_upper",
            "bound_lower",
            "bias_hon",
            "spread_hon",
            "geomed_residual",
        ):
            value = record.get(key)
            if isinstance(value, float | int) and not isinstance(value, bool):
                metrics[key] = float(value)
        selected = record.get("selected_node_ids")
        if isinstance(selected, list) and selected:
            metrics["selected_node_ids"] = [int(i) for i in selected]
        metrics["kept_global"] = int(bool(record.get("kept_global")))
        return metrics

    # ---------------------------------------------------------- round record

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run FedAvg's loop; after each round's evaluation, log and record it."""

        def evaluate_and_record(
            server_round: int, arrays: ArrayRecord
        ) -> MetricRecord | None:
            started = time.perf_counter()
            metrics = evaluate_fn(server_round, arrays) if evaluate_fn else None
            if server_round > 0:
                self._finish_round(server_round, metrics, time.perf_counter() - started)
            return metrics

        return super().start(
            PromptGrid(grid),  # type: ignore[arg-type]
            initial_arrays,
            num_rounds=num_rounds,
            timeout=timeout,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=evaluate_and_record,
        )

    def _finish_round(
        self, server_round: int, metrics: MetricRecord | None, seconds_eval: float
    ) -> None:
        record = self._pending or {
            "round": server_round,
            "rule": self.rule,
            "replies": 0,
        }
        self._pending = None
        if metrics is not None:
            record.update({key: value for key, value in metrics.items()})
        record["seconds_eval"] = seconds_eval
        self.rounds.append(record)
        log(INFO, "%s", round_line(record))
        log(DEBUG, "round %d record: %s", server_round, record)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with (self.out_dir / "rounds.jsonl").open("a") as stream:
                stream.write(json.dumps(jsonable(record)) + "\n")


class PromptGrid:
    """A Grid whose ``send_and_receive`` polls for replies every 0.5 s.

    Flower's own polls every 3 s, which adds 1.5 s on average to every phase
    of every round. Everything else is the wrapped Grid's. The wait is bounded
    by ``timeout`` (an hour when None, where Flower would wait for ever).
    """

    poll_interval = 0.5

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> object:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and collect replies until all came or time is up."""
        pending = set(self._grid.push_messages(messages))
        deadline = time.monotonic() + (3600.0 if timeout is None else timeout)
        replies: list[Message] = []
        while pending:
            arrived = list(self._grid.pull_messages(pending))
            replies.extend(arrived)
            pending -= {message.metadata.reply_to_message_id for message in arrived}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval)
        return replies


def round_line(record: dict[str, object]) -> str:
    """One readable line per round, e.g.

    ``round 3 | 10 replies, 0 rejected | multikrum m=7 kept 7 (1 byzantine) |
    κ̂_hon 0.31  κ̂_worst 1.8 (exact)  bound ≤ 4.79 | acc 0.93``
    """
    parts = [
        f"round {record['round']}",
        f"{record.get('replies', 0)} replies, {record.get('rejected', 0)} rejected",
    ]
    if record.get("kept_global"):
        parts.append(f"global model kept ({record.get('reason')})")
    else:
        parts.append(_choice_text(record))
    if "kappa_worst" in record or "kappa_hon" in record:
        parts.append(_kappa_text(record))
    elif "kappa_error" in record:
        parts.append("κ unavailable (see error above)")
    if "accuracy" in record:
        parts.append(f"acc {float(record['accuracy']):.3f}")  # type: ignore[arg-type]
    return " | ".join(parts)


def _choice_text(record: dict[str, object]) -> str:
    choice = str(record.get("choice", record.get("rule")))
    if record.get("byzantine_selected") is not None:
        return f"{choice}, {record['byzantine_selected']} byzantine selected"
    if record.get("byzantine_accepted") is not None:
        return f"{choice}, {record['byzantine_accepted']} byzantine among them"
    return choice


def _kappa_text(record: dict[str, object]) -> str:
    hon = record.get("kappa_hon")
    worst = record.get("kappa_worst")
    upper = record.get("bound_upper")
    text = "κ̂_hon " + ("n/a" if hon is None else _number(hon))
    if worst is not None:
        exact = "exact" if record.get("kappa_worst_exact") else "search, lower est."
        text += f"  κ̂_worst {_number(worst)} ({exact})"
    text += "  bound ≤ " + ("none" if upper is None else _number(upper))
    return text


def _number(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    return f"{number:.3g}"


def jsonable(value: object) -> object:
    """Make a record JSON-safe: numpy scalars to Python, ±inf/NaN to strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


__all__ = ["PromptGrid", "RobustStrategy", "jsonable", "round_line"]
