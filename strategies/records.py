"""Screening of client replies and the flat layout of a model's arrays.

This is the thin adapter between Flower's records and the pure rules: it turns
the replies of a round into one (n, d) matrix of models, ordered by node id,
and a list of rejections, each with the node id and the reason. A malformed
reply is rejected here and never reaches the rules; nothing in this module
raises because of what a client sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord

#: Key of the record a client uses to say, in experiments, whether it is
#: Byzantine. The rules never read it; the κ report does.
EXPERIMENT_RECORD = "experiment"
ROLES = ("honest", "byzantine")


@dataclass(frozen=True)
class Rejection:
    """A reply that was not aggregated, with the sender and the reason."""

    node_id: int
    reason: str


@dataclass(frozen=True)
class ModelLayout:
    """Where each floating-point array of a model sits in one flat vector.

    Non-floating arrays (e.g. integer counters) are not aggregated: the new
    global model keeps the current global value for them.
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    offsets: tuple[int, ...]
    floating: tuple[bool, ...]
    size: int
    dtype: np.dtype

    @classmethod
    def of(cls, arrays: ArrayRecord) -> ModelLayout:
        """Describe the global model ``arrays``."""
        keys, shapes, dtypes, offsets, floating = [], [], [], [], []
        size = 0
        widest = np.dtype(np.float32)
        for key, array in arrays.items():
            dtype = np.dtype(array.dtype)
            is_float = dtype.kind == "f"
            keys.append(key)
            shapes.append(tuple(int(s) for s in array.shape))
            dtypes.append(str(dtype))
            offsets.append(size)
            floating.append(is_float)
            if is_float:
                size += math.prod(shapes[-1])
                widest = np.promote_types(widest, dtype)
        return cls(
            keys=tuple(keys),
            shapes=tuple(shapes),
            dtypes=tuple(dtypes),
            offsets=tuple(offsets),
            floating=tuple(floating),
            size=size,
            dtype=np.dtype(widest),
        )

    def flatten(self, arrays: ArrayRecord) -> np.ndarray:
        """Return the floating arrays of ``arrays`` as one flat vector."""
        row = np.empty(self.size, dtype=self.dtype)
        problem = self.copy_into(arrays, row)
        if problem is not None:
            raise ValueError(problem)
        return row

    def copy_into(self, arrays: ArrayRecord, row: np.ndarray) -> str | None:
        """Check ``arrays`` against the layout and copy them into ``row``.

        Returns None when the arrays match the global model key for key, dtype
        for dtype and shape for shape and are all finite; otherwise a sentence
        saying what differs (``row`` is then partly written and must be
        discarded).
        """
        missing = [k for k in self.keys if k not in arrays]
        extra = [k for k in arrays if k not in self.keys]
        if missing or extra:
            return (
                "array keys differ from the global model: "
                f"missing {missing}, extra {extra}"
            )
        for key, shape, dtype, offset, is_float in zip(
            self.keys,
            self.shapes,
            self.dtypes,
            self.offsets,
            self.floating,
            strict=False,
        ):
            problem = _check_declared(key, arrays[key], shape, dtype)
            if problem is not None:
                return problem
            try:
                values = arrays[key].numpy()
            except Exception as error:  # a client controls these bytes
                return f"array {key!r} cannot be decoded: {type(error).__name__}"
            if values.shape != shape or str(values.dtype) != dtype:
                return (
                    f"array {key!r} decodes to shape {values.shape} dtype "
                    f"{values.dtype}, declared {shape} {dtype}"
                )
            if not is_float:
                continue
            if not np.isfinite(values).all():
                return f"array {key!r} has non-finite values"
            row[offset : offset + values.size] = values.ravel()
        return None

    def unflatten(self, vector: np.ndarray, template: ArrayRecord) -> ArrayRecord:
        """Build an ArrayRecord from ``vector`` in the model's own dtypes.

        Non-floating arrays are taken from ``template`` (the current global).
        """
        record = ArrayRecord()
        for key, shape, dtype, offset, is_float in zip(
            self.keys,
            self.shapes,
            self.dtypes,
            self.offsets,
            self.floating,
            strict=False,
        ):
            if not is_float:
                record[key] = template[key]
                continue
            count = math.prod(shape)
            values = vector[offset : offset + count].astype(dtype).reshape(shape)
            record[key] = Array(values)
        return record


def _check_declared(
    key: str, array: object, shape: tuple[int, ...], dtype: str
) -> str | None:
    """Compare an Array's declared shape and dtype with the global model's."""
    if not isinstance(array, Array):
        return f"array {key!r} is not an Array"
    declared = tuple(int(s) for s in array.shape)
    if declared != shape:
        return f"array {key!r} has shape {declared}, expected {shape}"
    if str(np.dtype(array.dtype)) != dtype:
        return f"array {key!r} has dtype {array.dtype}, expected {dtype}"
    return None


@dataclass
class ScreenedReplies:
    """Accepted train replies as one matrix, ordered by node id, and the rest.

    ``models[i]`` is the flattened model of ``node_ids[i]``; ``roles[i]`` is
    the role that client declared (experiments only), or None.
    """

    node_ids: list[int]
    models: np.ndarray
    metrics: list[MetricRecord]
    num_examples: list[int]
    roles: list[str | None]
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """Whether every accepted reply declared its role."""
        return bool(self.roles) and all(role in ROLES for role in self.roles)


def sender_of(message: Message, senders: Mapping[str, int] | None = None) -> int:
    """The node a reply answers for.

    When the SuperLink itself reports a dead node, the error reply's
    ``src_node_id`` is the SuperLink's; ``senders`` (instruction message id →
    destination node id) recovers the node the instruction went to.
    """
    if senders:
        node = senders.get(message.metadata.reply_to_message_id)
        if node is not None:
            return node
    return message.metadata.src_node_id


def reply_problem(
    message: Message,
    *,
    arrays_key: str | None,
    max_num_examples: int,
    seen: set[int],
    node_id: int | None = None,
) -> str | None:
    """Say what is wrong with a reply's envelope and metrics, or None.

    Checks an error reply, a duplicate sender, the array records present
    (exactly ``arrays_key``, when given) and the metric records:
    every metric must be a finite number or a list of them, and one record must
    hold ``num-examples``, a whole number in [1, ``max_num_examples``].
    """
    if message.has_error():
        error = message.error
        return f"error reply (code {error.code}): {error.reason}"
    if (message.metadata.src_node_id if node_id is None else node_id) in seen:
        return "duplicate reply from the same node"
    content = message.content
    array_keys = sorted(content.array_records.keys())
    if arrays_key is not None and array_keys != [arrays_key]:
        return f"array records {array_keys}, expected {[arrays_key]}"
    return metrics_problem(list(content.metric_records.values()), max_num_examples)


def metrics_problem(
    records: Sequence[MetricRecord], max_num_examples: int
) -> str | None:
    """Check client metrics: finite numbers and a sane ``num-examples``."""
    num_examples = None
    for record in records:
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            if not all(_is_finite_number(v) for v in values):
                return f"metric {key!r} is not a finite number"
            if key == "num-examples":
                num_examples = value
    if num_examples is None:
        return "no 'num-examples' metric"
    if isinstance(num_examples, list) or float(num_examples) != int(num_examples):
        return f"'num-examples' = {num_examples!r} is not a whole number"
    if not 1 <= int(num_examples) <= max_num_examples:
        return f"'num-examples' = {num_examples} outside [1, {max_num_examples}]"
    return None


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def declared_role(message: Message) -> str | None:
    """The role a client declared in its experiment record, if any."""
    record = message.content.config_records.get(EXPERIMENT_RECORD)
    if record is None:
        return None
    role = record.get("role")
    return role if role in ROLES else None


def num_examples_of(message: Message) -> int:
    """The ``num-examples`` metric of a screened reply."""
    for record in message.content.metric_records.values():
        value = record.get("num-examples")
        if isinstance(value, int | float):
            return int(value)
    raise KeyError("num-examples")


def screen_train_replies(
    replies: Iterable[Message],
    layout: ModelLayout,
    *,
    arrays_key: str = "arrays",
    max_num_examples: int = 10_000_000,
    senders: Mapping[str, int] | None = None,
) -> ScreenedReplies:
    """Screen a round's train replies into accepted models and rejections.

    Replies are taken in node-id order, so the result does not depend on the
    order they arrived in. A reply is rejected, with its reason, when it is an
    error, a duplicate, has missing or extra array records, keys, shapes or
    dtypes that differ from the global model, non-finite values, or bad
    metrics (see :func:`reply_problem`). Memory: one (n, d) matrix in the
    model's dtype, filled reply by reply.
    """
    replies = list(replies)
    models = np.empty((len(replies), layout.size), dtype=layout.dtype)
    accepted = ScreenedReplies([], models, [], [], [])
    for node_id, message, problem in _in_node_order(
        replies, senders, arrays_key=arrays_key, max_num_examples=max_num_examples
    ):
        if problem is None:
            row = models[len(accepted.node_ids)]
            problem = layout.copy_into(message.content.array_records[arrays_key], row)
        if problem is not None:
            accepted.rejected.append(Rejection(node_id, problem))
            continue
        accepted.node_ids.append(node_id)
        accepted.metrics.append(next(iter(message.content.metric_records.values())))
        accepted.num_examples.append(num_examples_of(message))
        accepted.roles.append(declared_role(message))
    accepted.models = models[: len(accepted.node_ids)]
    return accepted


def screen_evaluate_replies(
    replies: Iterable[Message],
    *,
    max_num_examples: int = 10_000_000,
    senders: Mapping[str, int] | None = None,
) -> tuple[list[int], list[MetricRecord], list[Rejection]]:
    """Screen evaluate replies: keep those whose metrics are finite and sane."""
    node_ids: list[int] = []
    metrics: list[MetricRecord] = []
    rejected: list[Rejection] = []
    for node_id, message, problem in _in_node_order(
        replies, senders, arrays_key=None, max_num_examples=max_num_examples
    ):
        if problem is not None:
            rejected.append(Rejection(node_id, problem))
            continue
        node_ids.append(node_id)
        metrics.append(next(iter(message.content.metric_records.values())))
    return node_ids, metrics, rejected


def _in_node_order(
    replies: Iterable[Message],
    senders: Mapping[str, int] | None,
    *,
    arrays_key: str | None,
    max_num_examples: int,
) -> Iterator[tuple[int, Message, str | None]]:
    """Replies in node-id order, each with its node id and envelope problem."""
    seen: set[int] = set()
    for message in sorted(replies, key=lambda reply: sender_of(reply, senders)):
        node_id = sender_of(message, senders)
        problem = reply_problem(
            message,
            arrays_key=arrays_key,
            max_num_examples=max_num_examples,
            seen=seen,
            node_id=node_id,
        )
        seen.add(node_id)
        yield node_id, message, problem


def median_metrics(records: Sequence[MetricRecord]) -> MetricRecord:
    """Coordinate-wise median of the clients' scalar metrics.

    A metric enters when every record has it as a number; the median keeps any
    one client's number from dominating (unlike FedAvg's weighted mean).
    """
    if not records:
        return MetricRecord()
    shared = set(records[0].keys())
    for record in records[1:]:
        shared &= set(record.keys())
    medians: dict[str, int | float | list[int] | list[float]] = {}
    for key in sorted(shared):
        values = [record[key] for record in records]
        if all(_is_finite_number(v) for v in values):
            medians[key] = float(np.median(np.asarray(values, dtype=np.float64)))
    return MetricRecord(medians)
