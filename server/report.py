"""Run artifacts: ``summary.json`` and ``report.png``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from flwr.serverapp.strategy import Result

from server.config import RunConfig
from strategies.base import jsonable


def write_summary(
    out_dir: Path,
    config: RunConfig,
    rounds: Sequence[dict[str, object]],
    result: Result,
    seconds: float,
    num_nodes: int,
) -> dict[str, object]:
    """Write ``summary.json``: the config, final metrics and per-round extremes."""
    initial = result.evaluate_metrics_serverapp.get(0)
    final = rounds[-1] if rounds else {}
    summary = {
        "config": config.model_dump(by_alias=True),
        "nodes": num_nodes,
        "rounds": len(rounds),
        "seconds": seconds,
        "initial_accuracy": None if initial is None else initial.get("accuracy"),
        "final_accuracy": final.get("accuracy"),
        "final_loss": final.get("loss"),
        "rejected_replies": sum(int(r.get("rejected", 0) or 0) for r in rounds),  # type: ignore[call-overload]
        "rounds_global_kept": sum(bool(r.get("kept_global")) for r in rounds),
        "max_kappa_hon": _max(r.get("kappa_hon") for r in rounds),
        "max_kappa_worst": _max(r.get("kappa_worst") for r in rounds),
        "bound_upper": final.get("bound_upper"),
        "bound_violations": sum(bool(r.get("violation")) for r in rounds),
        "byzantine_selected": [r.get("byzantine_selected") for r in rounds],
        "artifacts": [
            "config.json",
            "rounds.jsonl",
            "summary.json",
            "model.pt",
            "report.png",
        ],
    }
    (out_dir / "summary.json").write_text(
        json.dumps(jsonable(summary), indent=2) + "\n"
    )
    return summary


def _max(values: object) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float)]  # type: ignore[attr-defined]
    finite = [v for v in numbers if not math.isnan(v)]
    return max(finite) if finite else None


def write_report(
    out_dir: Path,
    rounds: Sequence[dict[str, object]],
    result: Result,
    title: str = "byzflower",
) -> Path:
    """Draw accuracy and κ̂ per round, with the rule's proven bound, to report.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [int(r["round"]) for r in rounds]  # type: ignore[call-overload]
    accuracy = [_float(r.get("accuracy")) for r in rounds]
    initial = result.evaluate_metrics_serverapp.get(0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)

    if initial is not None:
        top.plot([0, *numbers], [float(initial["accuracy"]), *accuracy], marker="o")  # type: ignore[arg-type]
    else:
        top.plot(numbers, accuracy, marker="o")
    top.set_ylabel("test accuracy (server split)")
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.set_title(title)

    for key, label in (
        ("kappa_hon", "κ̂_hon (real damage)"),
        ("kappa_worst", "κ̂_worst"),
    ):
        bottom.plot(
            numbers, [_float(r.get(key)) for r in rounds], marker="o", label=label
        )
    bounds = [_float(r.get("bound_upper")) for r in rounds]
    if any(math.isfinite(b) for b in bounds):
        bottom.plot(
            numbers, bounds, linestyle="--", color="black", label="proven bound on κ*"
        )
    bottom.set_yscale("symlog", linthresh=1e-2)
    bottom.set_xlabel("round")
    bottom.set_ylabel("ρ = ‖agg − v̄_S‖² / Σ_S")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="best", fontsize=8)

    path = out_dir / "report.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan
