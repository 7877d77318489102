"""Benchmark byzflower's Krum, MultiKrum and GeomMed against Flower's MultiKrum.

Run from the repository root:

    .venv/bin/python bench/aggregation.py            # n = 10, 50, 100; d = 1e5, 1e6
    .venv/bin/python bench/aggregation.py --quick    # a small run

Both sides get the same replies: for each of n clients a RecordDict holding an
ArrayRecord "arrays" of four float32 arrays (d numbers in all) and a MetricRecord
with "num-examples". Flower's side is ``select_multikrum`` from
``flwr.serverapp.strategy.multikrum`` (deserialize, concatenate, stack, float32
‖x‖² + ‖y‖² − 2⟨x, y⟩ distances, n − f − 2 closest others, argsort). Our side is
deserialize into one preallocated matrix (``geometry.stack_arrays``), exact
centred float64 distances (``geometry.pairwise_sq_distances``), then the rule's
choice from D. Neither side averages the selected models.

For the "same" columns our MultiKrum and Krum use Flower's convention,
neighbours="blanchard" (N(v) = the n − f − 2 closest *other* updates), so any
difference in the selected set comes from the arithmetic, not the definition.
Selections are compared on the timed replies and on "close" replies (weights
near 1.0, clients 1e-4 apart), where Flower's float32 shortcut loses the
distances.

Times are medians over the repeats, runs of the two sides interleaved. Peak
memory is measured in a separate run under tracemalloc (numpy's allocations are
traced; BLAS work buffers are not) as the peak above what was allocated before
the call.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

_FLOWER_HOME = tempfile.TemporaryDirectory(prefix="byzflower-bench-")
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
os.environ["FLWR_HOME"] = _FLOWER_HOME.name

import numpy as np  # noqa: E402
from flwr.app import ArrayRecord, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy.multikrum import select_multikrum  # noqa: E402

from strategies import geometry, rules  # noqa: E402

FULL_CLIENTS = (10, 50, 100)
FULL_DIMENSIONS = (100_000, 1_000_000)
QUICK_CLIENTS = (10, 50)
QUICK_DIMENSIONS = (100_000,)


@dataclass(frozen=True)
class Measure:
    """The median time (s) and peak extra memory (bytes) of one computation."""

    seconds: float
    peak_bytes: int


# --- the replies ------------------------------------------------------------------


def layer_sizes(d: int) -> list[tuple[int, ...]]:
    """Split d numbers into four array shapes, like a small network's layers."""
    weight_rows = (d // 2) // 100
    hidden = d // 4
    output = 10
    rest = d - weight_rows * 100 - hidden - output
    return [(weight_rows, 100), (hidden,), (rest,), (output,)]


@dataclass(frozen=True)
class Scenario:
    """How the replies are drawn: the global model's level and the clients' spread.

    Honest client i sends w₀ + σ_i ξ_i with σ_i = spread · (1 + i/n); a Byzantine
    client sends w₀ − 4 · spread · ξ (a scaled sign flip of a fresh update). w₀ has
    weights near ``level`` (± 0.02).
    """

    name: str
    level: float
    spread: float


SPREAD = Scenario("spread", level=0.05, spread=1e-3)
CLOSE = Scenario("close", level=1.0, spread=1e-4)


def make_replies(
    n: int, d: int, f: int, scenario: Scenario, seed: int
) -> list[RecordDict]:
    """Build n clients' replies: n − f honest models, then f Byzantine ones."""
    rng = np.random.default_rng(seed)
    global_model = [
        (scenario.level + 0.02 * rng.standard_normal(shape)).astype(np.float32)
        for shape in layer_sizes(d)
    ]
    replies = []
    for i in range(n):
        byzantine = i >= n - f
        scale = scenario.spread * (-4.0 if byzantine else 1.0 + i / n)
        arrays = [
            (layer + scale * rng.standard_normal(layer.shape)).astype(np.float32)
            for layer in global_model
        ]
        replies.append(
            RecordDict(
                {
                    "arrays": ArrayRecord(arrays),
                    "metrics": MetricRecord({"num-examples": 100}),
                }
            )
        )
    return replies


class DeserializedRows(Sequence[list[np.ndarray]]):
    """The replies' arrays as a lazy sequence: one client deserialized per access."""

    def __init__(self, replies: list[RecordDict]) -> None:
        self.replies = replies

    def __len__(self) -> int:
        return len(self.replies)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        record = self.replies[index]["arrays"]
        assert isinstance(record, ArrayRecord)
        return record.to_numpy_ndarrays()


# --- the two sides --------------------------------------------------------------------


def our_distances(replies: list[RecordDict]) -> np.ndarray:
    """Load the replies into one matrix and return exact squared distances."""
    updates = geometry.stack_arrays(DeserializedRows(replies))
    return geometry.pairwise_sq_distances(updates)


def our_multikrum(replies: list[RecordDict], f: int, m: int) -> list[int]:
    """Return our MultiKrum_m selection (Flower's neighbour convention)."""
    chosen = rules.multikrum_from_distances(
        our_distances(replies), f, m, neighbours="blanchard"
    )
    assert chosen.selected is not None
    return chosen.selected.tolist()


def our_geomed(replies: list[RecordDict]) -> list[int]:
    """Return the updates carrying weight in our geometric median."""
    chosen = rules.geomed_from_distances(our_distances(replies))
    return np.flatnonzero(chosen.weights).tolist()


def flower_multikrum(replies: list[RecordDict], f: int, m: int) -> list[int]:
    """Return Flower's select_multikrum choice as indices into the replies."""
    position = {id(reply): i for i, reply in enumerate(replies)}
    chosen = select_multikrum(replies, num_malicious_nodes=f, num_nodes_to_select=m)
    return [position[id(reply)] for reply in chosen]


# --- measuring --------------------------------------------------------------------


def peak_extra_bytes(compute: Callable[[], object]) -> int:
    """Return the peak memory allocated by ``compute`` above the starting level."""
    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    compute()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - start


def measure_pair(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[Measure, Measure]:
    """Time both computations, interleaved, and measure each one's peak memory."""
    our_times: list[float] = []
    their_times: list[float] = []
    for _ in range(repeats):
        for compute, times in ((theirs, their_times), (ours, our_times)):
            gc.collect()
            start = time.perf_counter()
            compute()
            times.append(time.perf_counter() - start)
    return (
        Measure(statistics.median(our_times), peak_extra_bytes(ours)),
        Measure(statistics.median(their_times), peak_extra_bytes(theirs)),
    )


COLUMNS = (
    ("n×d", 8),
    ("rule", 9),
    ("ours s", 7),
    ("flower s", 8),
    ("ratio", 5),
    ("ours MiB", 8),
    ("flower MiB", 10),
    ("same", 4),
    ("same close", 10),
    ("honest close", 12),
)


def format_row(cells: Sequence[str]) -> str:
    """Return one table row, columns padded."""
    widths = [width for _, width in COLUMNS]
    return "  ".join(
        cell.rjust(width) for cell, width in zip(cells, widths, strict=True)
    )


def selections(replies: list[RecordDict], f: int, m: int) -> tuple[set[int], set[int]]:
    """Return our and Flower's MultiKrum_m selections as sets of indices."""
    return set(our_multikrum(replies, f, m)), set(flower_multikrum(replies, f, m))


def run_config(n: int, d: int, repeats: int) -> list[str]:
    """Benchmark one (n, d) and return its table rows.

    Times and memory are measured on the "spread" replies; the selections are
    compared on those and on the "close" replies.
    """
    f = max(1, n // 5)
    replies = make_replies(n, d, f, SPREAD, seed=n * 7 + d)
    close_replies = make_replies(n, d, f, CLOSE, seed=n * 11 + d)
    honest = set(range(n - f))
    label = f"{n}×{d:.0e}".replace("+0", "")
    rows = []

    for rule, m in (("krum", 1), ("multikrum", n - f)):
        our_measure, their_measure = measure_pair(
            partial(our_multikrum, replies, f, m),
            partial(flower_multikrum, replies, f, m),
            repeats,
        )
        ours, theirs = selections(replies, f, m)
        ours_close, theirs_close = selections(close_replies, f, m)
        rows.append(
            format_row(
                [
                    label,
                    rule,
                    f"{our_measure.seconds:.3f}",
                    f"{their_measure.seconds:.3f}",
                    f"{our_measure.seconds / their_measure.seconds:.2f}",
                    f"{our_measure.peak_bytes / 2**20:.0f}",
                    f"{their_measure.peak_bytes / 2**20:.0f}",
                    "yes" if ours == theirs else "NO",
                    "yes" if ours_close == theirs_close else "NO",
                    f"{len(ours_close & honest)}/{len(theirs_close & honest)} of {m}",
                ]
            )
        )

    our_measure, their_measure = measure_pair(
        partial(our_geomed, replies),
        partial(flower_multikrum, replies, f, n - f),
        repeats,
    )
    rows.append(
        format_row(
            [
                label,
                "geomed",
                f"{our_measure.seconds:.3f}",
                f"{their_measure.seconds:.3f}",
                f"{our_measure.seconds / their_measure.seconds:.2f}",
                f"{our_measure.peak_bytes / 2**20:.0f}",
                f"{their_measure.peak_bytes / 2**20:.0f}",
                "n/a",
                "n/a",
                "n/a",
            ]
        )
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 10, 50; d = 1e5")
    parser.add_argument("--repeats", type=int, default=None, help="runs per config")
    args = parser.parse_args(argv)

    clients = QUICK_CLIENTS if args.quick else FULL_CLIENTS
    dimensions = QUICK_DIMENSIONS if args.quick else FULL_DIMENSIONS
    repeats = args.repeats or (2 if args.quick else 3)

    import flwr

    print(
        f"numpy {np.__version__}, flwr {flwr.__version__}, python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; median of {repeats} runs; f = max(1, n // 5)"
    )
    print(
        "ours = stack_arrays + exact centred float64 D + rule; flower = "
        "select_multikrum (float32 shortcut); ratio = ours / flower."
    )
    print(
        f"Timed on '{SPREAD.name}' replies (weights ~{SPREAD.level}, clients "
        f"{SPREAD.spread:g} apart); 'close' replies: weights ~{CLOSE.level}, "
        f"clients {CLOSE.spread:g} apart. Byzantine: the last f clients. "
        "honest close = honest updates selected on 'close', ours/flower."
    )
    print(format_row([title for title, _ in COLUMNS]))
    for d in dimensions:
        for n in clients:
            for row in run_config(n, d, repeats):
                print(row, flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        _FLOWER_HOME.cleanup()
