"""Build real Flower reply messages offline, as a SuperLink would deliver them."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message

SHAPES = {"layer.weight": (4, 3), "layer.bias": (4,)}


def global_model(seed: int = 0) -> ArrayRecord:
    """A small two-array float32 model."""
    rng = np.random.default_rng(seed)
    return ArrayRecord(
        {
            key: Array(rng.normal(size=shape).astype(np.float32))
            for key, shape in SHAPES.items()
        }
    )


def metadata(node_id: int, message_type: str = "train") -> Metadata:
    """Reply metadata from ``node_id`` to the ServerApp."""
    return Metadata(
        run_id=1,
        message_id=f"reply-{node_id}-{time.monotonic_ns()}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id=f"instruction-{node_id}",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )


def train_reply(
    node_id: int,
    arrays: dict[str, np.ndarray],
    *,
    num_examples: object = 100,
    role: str | None = "honest",
    extra_records: dict[str, object] | None = None,
    metrics: dict[str, object] | None = None,
) -> Message:
    """A train reply carrying ``arrays`` and metrics, like our ClientApp's."""
    metric_values: dict[str, object] = {"train-loss": 0.5}
    if num_examples is not None:
        metric_values["num-examples"] = num_examples
    if metrics is not None:
        metric_values.update(metrics)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metric_values),  # type: ignore[arg-type]
        }
    )
    if role is not None:
        content["experiment"] = ConfigRecord({"role": role, "attack": ""})
    for key, record in (extra_records or {}).items():
        content[key] = record  # type: ignore[assignment]
    return make_message(metadata(node_id), content=content)


def error_reply(
    node_id: int, code: int = 2, reason: str = "ClientApp raised"
) -> Message:
    """An error reply, as Flower returns when a ClientApp fails."""
    return make_message(metadata(node_id), error=Error(code=code, reason=reason))


def arrays_from_vector(vector: np.ndarray) -> dict[str, np.ndarray]:
    """Split a flat vector into the arrays of :data:`SHAPES`, float32."""
    arrays, offset = {}, 0
    for key, shape in SHAPES.items():
        size = int(np.prod(shape))
        arrays[key] = vector[offset : offset + size].reshape(shape).astype(np.float32)
        offset += size
    return arrays


class NodeList:
    """The one Grid method sampling needs: the ids of connected nodes.

    Unit tests drive ``configure_train``/``aggregate_train`` with it; the
    integration tests run a real SuperLink instead.
    """

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)
