"""One description of byzflower's Flower services and their command lines.

The local launcher (child processes on loopback), the compose generator
(containers) and the multi-host test (network namespaces) all build their
SuperLink, SuperNode and SuperExec command lines here, so the three cannot
drift apart. Every flag was checked against ``--help`` of flwr 1.39.0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

ROLES = ("honest", "byzantine")
ISOLATIONS = ("subprocess", "process")

# TOML bare keys; Flower's --node-config parser also splits pairs on "=".
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# A TOML literal string ('...') admits any character but "'" and controls
# other than tab; Flower's parser ends a quoted value at the next "'".
_LITERAL_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f']")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

NodeConfigValue = str | int | float


def flower_env(flwr_home: str) -> dict[str, str]:
    """Return the environment every Flower process of byzflower runs with.

    Telemetry and update checks are off (otherwise each process contacts the
    vendor), ``FLWR_HOME`` is private, and Ray (simulation only) stays on
    loopback without usage reports.
    """
    return {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_HOME": flwr_home,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


@dataclass(frozen=True)
class Tls:
    """Paths of the TLS material: the CA always, the server pair on the server.

    Clients (SuperNodes, SuperExec, the ``flwr`` CLI) need only ``ca_cert`` to
    verify the SuperLink; the SuperLink needs all three.
    """

    ca_cert: str
    server_cert: str | None = None
    server_key: str | None = None


def superlink_argv(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    fleet_address: str = "127.0.0.1:9092",
    database: str,
    tls: Tls | None = None,
    supernode_auth: bool = False,
    isolation: str = "subprocess",
    superexec_auth_secret_file: str | None = None,
    executable: str = "flower-superlink",
) -> list[str]:
    """Return the SuperLink command line.

    ``host:port`` is the HTTP API of the ``flwr`` CLI and the ServerApp
    executor; ``fleet_address`` is the gRPC Fleet API the SuperNodes dial. The
    Fleet address is always passed because Flower's default binds every
    interface. Runtime dependency installation is always off: the app's
    dependencies are installed beforehand (venv or image).

    ``superexec_auth_secret_file`` makes the runtime API on ``host:port``
    serve runs only to a SuperExec holding the same secret (Flower signs each
    task request with an HMAC-SHA256 key derived from it). Without it, anyone
    who reaches ``host:port`` can start a ``flower-superexec`` against it, take
    a submitted run and read its results.

    Raises:
        ValueError: a server certificate or key is missing from ``tls``, or
            SuperNode authentication is asked for without TLS (Flower refuses
            it), or ``isolation`` is unknown, or a SuperExec secret is given
            in subprocess isolation (Flower ignores it there).
    """
    _check_isolation(isolation)
    _check_port(port, "port")
    secret_args = _superexec_secret_args(superexec_auth_secret_file, isolation)
    argv = [
        executable,
        "--host",
        host,
        "--port",
        str(port),
        "--fleet-api-address",
        fleet_address,
        "--database",
        database,
        "--isolation",
        isolation,
        "--disable-runtime-dependency-installation",
        *secret_args,
    ]
    if tls is None:
        if supernode_auth:
            raise ValueError(
                "supernode_auth=True needs TLS: flower-superlink refuses "
                "--enable-supernode-auth together with --insecure"
            )
        return [*argv, "--insecure"]
    if tls.server_cert is None or tls.server_key is None:
        raise ValueError(
            "a TLS SuperLink needs server_cert and server_key, got "
            f"server_cert={tls.server_cert!r}, server_key={tls.server_key!r}"
        )
    argv += [
        "--ssl-ca-certfile",
        tls.ca_cert,
        "--ssl-certfile",
        tls.server_cert,
        "--ssl-keyfile",
        tls.server_key,
    ]
    if supernode_auth:
        argv.append("--enable-supernode-auth")
    return argv


def supernode_argv(
    *,
    superlink: str,
    host: str = "127.0.0.1",
    port: int,
    node_config: Mapping[str, NodeConfigValue],
    tls: Tls | None = None,
    auth_private_key: str | None = None,
    isolation: str = "subprocess",
    superexec_auth_secret_file: str | None = None,
    executable: str = "flower-supernode",
) -> list[str]:
    """Return the SuperNode command line.

    ``superlink`` is the SuperLink's Fleet API address (``host:9092``);
    ``host:port`` is this SuperNode's own runtime API, which its ClientApp
    executor dials (each SuperNode on one host needs its own port). With TLS
    only ``tls.ca_cert`` is used, to verify the SuperLink. With
    ``superexec_auth_secret_file`` that runtime API serves only a ClientApp
    executor holding the same secret.

    Raises:
        ValueError: an authentication key without TLS, a bad port or
            isolation, a SuperExec secret in subprocess isolation, or a node
            config value that is not valid TOML.
    """
    _check_isolation(isolation)
    _check_port(port, "port")
    secret_args = _superexec_secret_args(superexec_auth_secret_file, isolation)
    argv = [
        executable,
        "--superlink",
        superlink,
        "--host",
        host,
        "--port",
        str(port),
        "--isolation",
        isolation,
        "--node-config",
        node_config_arg(node_config),
        *secret_args,
    ]
    if tls is None:
        if auth_private_key is not None:
            raise ValueError(
                "auth_private_key needs TLS: SuperNode authentication only "
                f"works over TLS (key {auth_private_key!r})"
            )
        return [*argv, "--insecure"]
    argv += ["--root-certificates", tls.ca_cert]
    if auth_private_key is not None:
        argv += ["--auth-supernode-private-key", auth_private_key]
    return argv


def superexec_argv(
    *,
    runtime_api_address: str,
    tls: Tls | None = None,
    superexec_auth_secret_file: str | None = None,
    executable: str = "flower-superexec",
) -> list[str]:
    """Return the command line of a SuperExec (a ServerApp or ClientApp executor).

    Used in process isolation, where each SuperLink or SuperNode leaves
    starting the app to a separate executor dialing its runtime API. With
    ``tls`` the executor verifies that API with ``tls.ca_cert`` (the SuperLink
    serves its HTTP API over TLS when it has certificates); without, it
    connects in plaintext (a SuperNode's runtime API inside a private network).
    ``superexec_auth_secret_file`` must hold the same bytes as the file given
    to the SuperLink or SuperNode it dials. Flower 1.39 refuses a SuperExec
    without the secret or with a wrong one (HTTP 401), and that SuperExec then
    exits with status 0, logging only "SuperExec terminated gracefully."; the
    reason is in the SuperLink's or SuperNode's log.
    """
    argv = [executable, "--runtime-api-address", runtime_api_address]
    if superexec_auth_secret_file is not None:
        argv += ["--superexec-auth-secret-file", superexec_auth_secret_file]
    if tls is None:
        return [*argv, "--insecure"]
    return [*argv, "--root-certificates", tls.ca_cert]


def node_config_arg(cfg: Mapping[str, NodeConfigValue]) -> str:
    """Render a node configuration as Flower's ``--node-config`` string.

    Pairs ``key=value`` are separated by one space; every value is a TOML
    value: integers and floats as written by Python (finite floats always
    carry a ``.`` or an exponent), booleans as ``true``/``false``, strings as
    TOML literal strings in single quotes. Flower parses a bare word as TOML
    and crashes, so nothing is left unquoted.

    Raises:
        ValueError: a key that is not a TOML bare key, a string holding a
            ``'`` or a control character, an integer outside int64, or a value
            of another type; the message names the key and the value.
    """
    return " ".join(f"{key}={_toml_value(key, value)}" for key, value in cfg.items())


def _toml_value(key: str, value: object) -> str:
    """Return one node-config value as TOML text, or raise naming key and value."""
    if not isinstance(key, str) or not _BARE_KEY.fullmatch(key):
        raise ValueError(
            f"node-config key {key!r} is not a TOML bare key [A-Za-z0-9_-]+"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"node-config {key}={value} is outside TOML's int64 range")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if _LITERAL_FORBIDDEN.search(value):
            raise ValueError(
                f"node-config {key}={value!r}: a string value may not contain "
                "a single quote or a control character"
            )
        return f"'{value}'"
    raise ValueError(
        f"node-config {key}={value!r}: type {type(value).__name__} is not "
        "str, int, float or bool"
    )


@dataclass(frozen=True)
class ClientSpec:
    """Who one SuperNode is: its data partition, its role and its attack.

    ``attack`` (Byzantine only) overrides the run config's attack for this
    node; ``data_path`` replaces the partition by a local data directory;
    ``fault`` names a fault for the ClientApp to inject (tests of screening).
    """

    partition_id: int
    num_partitions: int
    role: str
    attack: str | None = None
    data_path: str | None = None
    fault: str | None = None

    def __post_init__(self) -> None:
        """Reject a role, partition or attack that cannot describe a node."""
        if self.role not in ROLES:
            raise ValueError(f"role={self.role!r}; allowed: {', '.join(ROLES)}")
        if self.num_partitions < 1:
            raise ValueError(f"num_partitions={self.num_partitions}; must be ≥ 1")
        if not 0 <= self.partition_id < self.num_partitions:
            raise ValueError(
                f"partition_id={self.partition_id}; must be in "
                f"[0, {self.num_partitions - 1}] for "
                f"num_partitions={self.num_partitions}"
            )
        if self.role == "honest" and self.attack is not None:
            raise ValueError(
                f"partition {self.partition_id} is honest but has "
                f"attack={self.attack!r}"
            )

    def node_config(self) -> dict[str, NodeConfigValue]:
        """Return the node config (kebab-case keys) the ClientApp reads.

        Always ``partition-id``, ``num-partitions`` and ``role``; ``attack``,
        ``data-path`` and ``fault`` only when set.
        """
        config: dict[str, NodeConfigValue] = {
            "partition-id": self.partition_id,
            "num-partitions": self.num_partitions,
            "role": self.role,
        }
        optional = {
            "attack": self.attack,
            "data-path": self.data_path,
            "fault": self.fault,
        }
        config.update(
            {key: value for key, value in optional.items() if value is not None}
        )
        return config


def federation_clients(
    num_clients: int, num_byzantine: int, attack: str | None = None
) -> list[ClientSpec]:
    """Return the n client specs of a federation, the last f of them Byzantine.

    With n = ``num_clients`` and f = ``num_byzantine``, partition i is honest
    for 0 ≤ i < n − f and Byzantine for n − f ≤ i < n; every Byzantine node
    carries ``attack`` (None: the run config's attack). Deterministic, so the
    launcher, the compose files and the tests agree on who is who.

    Raises:
        ValueError: n < 1, f < 0 or f > n; the message names both values.
    """
    if num_clients < 1 or not 0 <= num_byzantine <= num_clients:
        raise ValueError(
            f"num_clients={num_clients}, num_byzantine={num_byzantine}: need "
            "num_clients ≥ 1 and 0 ≤ num_byzantine ≤ num_clients"
        )
    first_byzantine = num_clients - num_byzantine
    return [
        ClientSpec(
            partition_id=partition_id,
            num_partitions=num_clients,
            role="byzantine" if partition_id >= first_byzantine else "honest",
            attack=attack if partition_id >= first_byzantine else None,
        )
        for partition_id in range(num_clients)
    ]


def _superexec_secret_args(secret_file: str | None, isolation: str) -> list[str]:
    """Return the SuperExec secret flag, or raise where Flower would ignore it.

    Flower 1.39 authenticates SuperExecs only in process isolation; in
    subprocess isolation it logs a warning and drops the secret, which would
    leave a deployment believed protected unprotected.
    """
    if secret_file is None:
        return []
    if isolation != "process":
        raise ValueError(
            f"superexec_auth_secret_file={secret_file!r} needs "
            f"isolation='process'; Flower ignores it with isolation={isolation!r}"
        )
    return ["--superexec-auth-secret-file", secret_file]


def _check_isolation(isolation: str) -> None:
    """Raise unless ``isolation`` is one Flower 1.39 accepts."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation={isolation!r}; allowed: {', '.join(ISOLATIONS)}")


def _check_port(port: int, name: str) -> None:
    """Raise unless ``port`` is a TCP port number."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{name}={port!r}; must be an integer in [1, 65535]")
