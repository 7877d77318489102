"""The run configuration, validated at start.

Flower checks that run-config keys exist but not their types, so a string
where a float belongs would only fail rounds later. Every key is validated
here before round 1; an invalid value stops the run with the key, the value
and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clients.attacks import Attack
from strategies.rules import Rule

PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigError(ValueError):
    """A run configuration that cannot run; the message names key and value."""


class RunConfig(BaseModel):
    """byzflower's run config: the ``[tool.flwr.app.config]`` keys, kebab-case.

    ``num-clients`` is the number of SuperNodes the run expects (0: whatever is
    connected when the run starts); the rule's conditions (n > 2f, m ≤ n − f)
    are checked against it before round 1.
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=True
    )

    rule: Rule = "multikrum"
    num_byzantine: int = Field(3, ge=0, alias="num-byzantine")
    num_selected: int = Field(0, ge=0, alias="num-selected")
    krum_neighbours: Literal["self", "blanchard"] = Field(
        "self", alias="krum-neighbours"
    )
    geomed_tol: PositiveFloat = Field(1e-8, alias="geomed-tol")
    geomed_max_iter: int = Field(1000, ge=1, alias="geomed-max-iter")
    num_server_rounds: int = Field(10, ge=1, le=100_000, alias="num-server-rounds")
    num_clients: int = Field(0, ge=0, alias="num-clients")
    fraction_train: float = Field(1.0, gt=0, le=1, alias="fraction-train")
    min_train_nodes: int = Field(2, ge=1, alias="min-train-nodes")
    fraction_evaluate: float = Field(0.0, ge=0, le=1, alias="fraction-evaluate")
    round_timeout: PositiveFloat = Field(120.0, alias="round-timeout")
    node_wait_timeout: PositiveFloat = Field(60.0, alias="node-wait-timeout")
    seed: int = Field(0, ge=0)
    out_dir: str = Field("", alias="out-dir")
    test_fraction: float = Field(0.2, gt=0, lt=0.9, alias="test-fraction")
    partitioning: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: PositiveFloat = Field(0.5, alias="dirichlet-alpha")
    local_epochs: int = Field(2, ge=1, le=1000, alias="local-epochs")
    learning_rate: PositiveFloat = Field(0.1, alias="learning-rate")
    batch_size: int = Field(32, ge=1, alias="batch-size")
    attack: Attack = "sign-flip"
    attack_scale: PositiveFloat = Field(4.0, alias="attack-scale")
    alie_z: float = Field(0.0, ge=0, alias="alie-z")
    ipm_epsilon: PositiveFloat = Field(0.5, alias="ipm-epsilon")
    attack_passes: int = Field(3, ge=1, le=100, alias="attack-passes")
    kappa_max_subsets: int = Field(20_000, ge=1, alias="kappa-max-subsets")

    @field_validator("out_dir")
    @classmethod
    def _absolute_out_dir(cls, out_dir: str) -> str:
        if out_dir and not Path(out_dir).is_absolute():
            raise ValueError(
                "must be an absolute path (the ServerApp runs in the SuperLink's "
                "working directory, not yours)"
            )
        return out_dir

    def train_nodes(self, num_nodes: int) -> int:
        """How many nodes a round samples out of ``num_nodes`` connected."""
        return min(
            num_nodes, max(int(num_nodes * self.fraction_train), self.min_train_nodes)
        )

    def check_federation(self, num_nodes: int) -> None:
        """Check the rule's conditions for a federation of ``num_nodes`` clients.

        Raises:
            ConfigError: naming the key, the value and the allowed range.
        """
        n = self.train_nodes(num_nodes)
        f = self.num_byzantine
        if self.rule != "mean" and n <= 2 * f:
            raise ConfigError(
                f"num-byzantine={f} is too large for rule={self.rule!r} with "
                f"{n} clients per round: it needs n > 2f, so num-byzantine <= "
                f"{max((n - 1) // 2, 0)}"
            )
        if (
            self.rule != "mean"
            and self.krum_neighbours == "blanchard"
            and n <= 2 * f + 2
        ) and self.rule in ("krum", "multikrum"):
            raise ConfigError(
                f"krum-neighbours='blanchard' needs n > 2f + 2; got n={n}, f={f}"
            )
        if self.rule == "multikrum" and self.num_selected > n - f:
            raise ConfigError(
                f"num-selected={self.num_selected} is out of range for multikrum with "
                f"n={n} clients per round and num-byzantine={f}: allowed 1..{n - f} "
                "(or 0 for n - f)"
            )


def parse_run_config(raw: Mapping[str, object]) -> RunConfig:
    """Validate a raw run config (Flower's ``context.run_config``).

    Raises:
        ConfigError: one line per invalid key: key, value and what is allowed.
    """
    try:
        return RunConfig.model_validate(dict(raw))
    except ValidationError as error:
        raise ConfigError(describe_errors(error, raw)) from None


def describe_errors(error: ValidationError, raw: Mapping[str, object]) -> str:
    """Turn pydantic's errors into 'key=value: what is allowed' lines."""
    lines = ["invalid run config:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(config)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
            continue
        if key in raw:
            lines.append(f"  {key}={raw[key]!r}: {_allowed(item)}")
        else:
            lines.append(f"  {key}: {_allowed(item)}")
    return "\n".join(lines)


def _allowed(item: Mapping[str, object]) -> str:
    message = str(item["msg"])
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    context = item.get("ctx")
    if isinstance(context, dict) and "expected" in context:
        return f"must be one of {context['expected']}"
    return message[0].lower() + message[1:]
