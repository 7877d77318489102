"""Write byzflower's docker compose files from the one description in services.py.

Every container's command line is a command line of server/services.py (the
one the local launcher runs) minus its program name, which is the image's
entrypoint; so compose files and launcher cannot drift. Four layouts:

- ``one-host``: a whole federation on one machine — SuperLink, ServerApp
  executor, n SuperNodes (the last f Byzantine) each with its ClientApp
  executor, and a ``submit`` service that starts the run with the rule,
  attack and rounds of ``.env``. Plaintext inside a private compose network;
  only the CLI port is published, on 127.0.0.1.
- ``server``: the server machine of a multi-machine deployment — SuperLink
  with TLS and SuperNode authentication, ServerApp executor; publishes the
  SuperLink's two ports (HTTP for the CLI, gRPC Fleet for SuperNodes).
- ``client``: one SuperNode of a client machine (TLS, authentication key),
  given the server's address, a role and a partition in ``.env``.
- ``client-data``: the same SuperNode training on a local ``.npz`` file from
  a directory mounted read-only instead of a partition.

In every layout each runtime API (the SuperLink's port 8000, each
SuperNode's port 9094) serves only executors holding the SuperExec secret,
a file made by docker/superexec-secret.sh on the machine that uses it and
mounted as the compose secret ``superexec-secret``. Port 8000 also carries
the CLI's API, so without the secret anyone reaching it could run a
SuperExec of their own, take a submitted run and collect its results.

The docstring of each ``*_document`` function lists its ``.env`` variables.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from clients.attacks import ATTACKS
from server.services import (
    NodeConfigValue,
    Tls,
    federation_clients,
    flower_env,
    node_config_arg,
    superexec_argv,
    superlink_argv,
    supernode_argv,
)
from strategies.rules import RULES

FLWR_VERSION = "1.39.0"
SUPERLINK_IMAGE = f"flwr/superlink:{FLWR_VERSION}"
SUPERNODE_IMAGE = f"flwr/supernode:{FLWR_VERSION}"
APP_IMAGE = f"byzflower-superexec:{FLWR_VERSION}"
LAYOUTS = ("one-host", "server", "client", "client-data")
CHECKED_IN = {
    "one-host": "docker/compose.yml",
    "server": "docker/server/compose.yml",
    "client": "docker/client/compose.yml",
    "client-data": "docker/client/compose.data.yml",
}

CONTROL_PORT = 8000
FLEET_PORT = 9092
SUPERNODE_PORT = 9094
# The official images run as user app (uid 49999) in /app. A named volume
# mounted on a directory the image owns inherits its owner, so the
# SuperLink's state volume is mounted on /app itself.
APP_HOME = "/app"
FLWR_HOME = "/app/.flwr"
# The ServerApp writes each run to ~/byzflower-runs/run-<run id> when the run
# config has no out-dir; HOME is /app in the official images.
RESULTS_DIR = "/app/byzflower-runs"
SECRETS = "/run/secrets"
SERVER_TLS = Tls(
    ca_cert=f"{SECRETS}/ca-cert",
    server_cert=f"{SECRETS}/server-cert",
    server_key=f"{SECRETS}/server-key",
)
CLIENT_TLS = Tls(ca_cert=f"{SECRETS}/ca-cert")
SUPERNODE_KEY = f"{SECRETS}/supernode-key"
SUPEREXEC_SECRET_NAME = "superexec-secret"
SUPEREXEC_SECRET = f"{SECRETS}/{SUPEREXEC_SECRET_NAME}"
# The file docker/superexec-secret.sh writes, where each layout expects it
# (certs/ and keys/ folders are git-ignored).
SUPEREXEC_SECRET_FILE = "superexec.secret"
DEFAULTS_ANCHOR = "flower-defaults"

# Stand-ins for values that compose fills in from .env: rendered by
# services.py like any value (so quoting is services.py's), then replaced.
_INT_SENTINEL_BASE = 7_130_000_001
_STR_SENTINEL = "@@{}@@"


class _EnvValues:
    """Sentinels for ``${VAR...}`` references and their replacements."""

    def __init__(self) -> None:
        self.replacements: dict[str, str] = {}

    def integer(self, reference: str) -> int:
        """Return an int stand-in for ``reference`` (e.g. ``${PARTITION_ID:?}``)."""
        sentinel = _INT_SENTINEL_BASE + len(self.replacements)
        self.replacements[str(sentinel)] = reference
        return sentinel

    def text(self, reference: str) -> str:
        """Return a str stand-in for ``reference``."""
        sentinel = _STR_SENTINEL.format(len(self.replacements))
        self.replacements[sentinel] = reference
        return sentinel

    def command(self, argv: Sequence[str]) -> list[str]:
        """Return argv without its program, ``$`` escaped, stand-ins replaced."""
        command = []
        for token in argv[1:]:
            token = token.replace("$", "$$")
            for sentinel, reference in self.replacements.items():
                token = token.replace(sentinel, reference)
            command.append(token)
        return command


def _app_build(context: str) -> dict[str, object]:
    """Return the build section of the byzflower executor image."""
    return {"context": context, "dockerfile": "docker/Dockerfile"}


class _Alias:
    """A YAML alias ``*name`` (merged into a mapping with ``<<``)."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Anchored(dict[str, object]):
    """A mapping rendered with the YAML anchor ``&name``."""

    def __init__(self, name: str, mapping: Mapping[str, object]) -> None:
        super().__init__(mapping)
        self.name = name


def _service_defaults() -> _Anchored:
    """Return what every service shares: Flower env, no privileges, restarts.

    Telemetry and update checks are off in every container; the official
    images already run as the unprivileged user ``app``.
    """
    return _Anchored(
        DEFAULTS_ANCHOR,
        {
            "environment": flower_env(FLWR_HOME),
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "restart": "unless-stopped",
        },
    )


def _service(image: str, command: list[str], **extra: object) -> dict[str, object]:
    """Return one service: the shared defaults, its image, command and extras."""
    service: dict[str, object] = {"<<": _Alias(DEFAULTS_ANCHOR)}
    service.update({"image": image, "command": command, **extra})
    return service


def _executor(context: str, command: list[str], **extra: object) -> dict[str, object]:
    """Return a service running the byzflower executor image."""
    return _service(APP_IMAGE, command, build=_app_build(context), **extra)


def one_host_document(
    num_clients: int, num_byzantine: int, attack: str, rule: str
) -> dict[str, object]:
    """Return the compose document of a whole federation on one host.

    n = ``num_clients`` SuperNodes, partitions 0 … n − 1, the last f =
    ``num_byzantine`` Byzantine (services.federation_clients). ``.env``:
    RULE, ATTACK, NUM_BYZANTINE (the f the rule assumes; default the f of
    this file), ROUNDS; defaults are the generator's arguments.
    """
    env = _EnvValues()
    # Limitation: n and f are the file's structure (one service per SuperNode,
    # each with its own partition), so .env cannot change them: regenerate.
    clients = federation_clients(num_clients, num_byzantine)
    services: dict[str, object] = {
        "superlink": _service(
            SUPERLINK_IMAGE,
            env.command(
                superlink_argv(
                    host="0.0.0.0",
                    port=CONTROL_PORT,
                    fleet_address=f"0.0.0.0:{FLEET_PORT}",
                    database=f"{APP_HOME}/state.db",
                    isolation="process",
                    superexec_auth_secret_file=SUPEREXEC_SECRET,
                )
            ),
            volumes=[f"superlink-state:{APP_HOME}"],
            ports=[f"127.0.0.1:{CONTROL_PORT}:{CONTROL_PORT}"],
            secrets=[SUPEREXEC_SECRET_NAME],
        ),
        "superexec-serverapp": _executor(
            "..",
            env.command(
                superexec_argv(
                    runtime_api_address=f"superlink:{CONTROL_PORT}",
                    superexec_auth_secret_file=SUPEREXEC_SECRET,
                )
            ),
            volumes=[f"results:{RESULTS_DIR}"],
            secrets=[SUPEREXEC_SECRET_NAME],
            depends_on=["superlink"],
        ),
    }
    for client in clients:
        name = f"supernode-{client.partition_id}"
        services[name] = _supernode(
            env, client.node_config(), f"superlink:{FLEET_PORT}", None
        )
        services[f"superexec-{name}"] = _clientapp_executor("..", env, name)
    services["submit"] = _submit(env, num_clients, num_byzantine, attack, rule)
    # Limitation: one secret guards the SuperLink and every SuperNode here:
    # all run on one machine, in one compose project, for one user.
    return {
        "name": "byzflower",
        "x-flower-defaults": _service_defaults(),
        "services": services,
        "volumes": {"superlink-state": {}, "results": {}},
        "secrets": {
            SUPEREXEC_SECRET_NAME: {"file": f"./certs/{SUPEREXEC_SECRET_FILE}"}
        },
    }


def _supernode(
    env: _EnvValues,
    node_config: Mapping[str, NodeConfigValue],
    superlink_address: str,
    tls: Tls | None,
) -> dict[str, object]:
    """Return a SuperNode service (process isolation, runtime API on 9094).

    It always gets the SuperExec secret. Without TLS (one host) it waits for
    the ``superlink`` service; with TLS it also gets the CA and its
    authentication key as secrets.
    """
    argv = supernode_argv(
        superlink=superlink_address,
        host="0.0.0.0",
        port=SUPERNODE_PORT,
        node_config=node_config,
        tls=tls,
        auth_private_key=None if tls is None else SUPERNODE_KEY,
        isolation="process",
        superexec_auth_secret_file=SUPEREXEC_SECRET,
    )
    extra: dict[str, object] = {"stop_grace_period": "20s"}
    if tls is None:
        extra["secrets"] = [SUPEREXEC_SECRET_NAME]
        extra["depends_on"] = ["superlink"]
    else:
        extra["secrets"] = ["ca-cert", "supernode-key", SUPEREXEC_SECRET_NAME]
    return _service(SUPERNODE_IMAGE, env.command(argv), **extra)


def _clientapp_executor(
    context: str, env: _EnvValues, supernode: str, **extra: object
) -> dict[str, object]:
    """Return the ClientApp executor of SuperNode service ``supernode``.

    It dials the SuperNode's runtime API in plaintext inside the compose
    network and proves itself with the SuperExec secret.
    """
    argv = superexec_argv(
        runtime_api_address=f"{supernode}:{SUPERNODE_PORT}",
        superexec_auth_secret_file=SUPEREXEC_SECRET,
    )
    return _executor(
        context,
        env.command(argv),
        secrets=[SUPEREXEC_SECRET_NAME],
        depends_on=[supernode],
        **extra,
    )


def _submit(
    env: _EnvValues, num_clients: int, num_byzantine: int, attack: str, rule: str
) -> dict[str, object]:
    """Return the one-shot service that submits the run and follows its log."""
    run_config: dict[str, NodeConfigValue] = {
        "rule": env.text(f"${{RULE:-{rule}}}"),
        "attack": env.text(f"${{ATTACK:-{attack}}}"),
        "num-byzantine": env.integer(f"${{NUM_BYZANTINE:-{num_byzantine}}}"),
        "num-clients": num_clients,
        "num-server-rounds": env.integer("${ROUNDS:-10}"),
    }
    submit_argv = [
        "submit.py",
        "--app",
        "/app/project",
        "--superlink",
        f"superlink:{CONTROL_PORT}",
        "--insecure",
        "--run-config",
        node_config_arg(run_config),
    ]
    service = _executor(
        "..",
        env.command(submit_argv),
        entrypoint=["python", "/app/project/docker/submit.py"],
        volumes=["..:/app/project:ro"],
        depends_on=["superexec-serverapp"],
    )
    service["restart"] = "no"
    return service


def server_document() -> dict[str, object]:
    """Return the compose document of the server machine.

    ``.env``: CERTS_DIR (ca.crt, server.pem, server.key from docker/certs.sh,
    and superexec.secret from docker/superexec-secret.sh; default ./certs),
    CLI_PUBLISH_ADDRESS and FLEET_PUBLISH_ADDRESS (the interfaces the CLI
    port 8000 and the Fleet port 9092 are published on; default 0.0.0.0,
    every interface).
    """
    env = _EnvValues()
    cli_publish = "${CLI_PUBLISH_ADDRESS:-0.0.0.0}"
    fleet_publish = "${FLEET_PUBLISH_ADDRESS:-0.0.0.0}"
    superlink = _service(
        SUPERLINK_IMAGE,
        env.command(
            superlink_argv(
                host="0.0.0.0",
                port=CONTROL_PORT,
                fleet_address=f"0.0.0.0:{FLEET_PORT}",
                database=f"{APP_HOME}/state.db",
                tls=SERVER_TLS,
                supernode_auth=True,
                isolation="process",
                superexec_auth_secret_file=SUPEREXEC_SECRET,
            )
        ),
        volumes=[f"superlink-state:{APP_HOME}"],
        ports=[
            f"{cli_publish}:{CONTROL_PORT}:{CONTROL_PORT}",
            f"{fleet_publish}:{FLEET_PORT}:{FLEET_PORT}",
        ],
        secrets=["ca-cert", "server-cert", "server-key", SUPEREXEC_SECRET_NAME],
    )
    serverapp = _executor(
        "../..",
        env.command(
            superexec_argv(
                runtime_api_address=f"superlink:{CONTROL_PORT}",
                tls=Tls(ca_cert=SERVER_TLS.ca_cert),
                superexec_auth_secret_file=SUPEREXEC_SECRET,
            )
        ),
        volumes=[f"results:{RESULTS_DIR}"],
        secrets=["ca-cert", SUPEREXEC_SECRET_NAME],
        depends_on=["superlink"],
    )
    certs = "${CERTS_DIR:-./certs}"
    return {
        "name": "byzflower-server",
        "x-flower-defaults": _service_defaults(),
        "services": {"superlink": superlink, "superexec-serverapp": serverapp},
        "volumes": {"superlink-state": {}, "results": {}},
        "secrets": {
            "ca-cert": {"file": f"{certs}/ca.crt"},
            "server-cert": {"file": f"{certs}/server.pem"},
            "server-key": {"file": f"{certs}/server.key"},
            SUPEREXEC_SECRET_NAME: {"file": f"{certs}/{SUPEREXEC_SECRET_FILE}"},
        },
    }


def client_document(with_data: bool) -> dict[str, object]:
    """Return the compose document of one SuperNode on a client machine.

    ``.env``: SUPERNODE_NAME (names the compose project,
    byzflower-<name> or byzflower-<name>-data; default client),
    SUPERLINK_ADDRESS (host:9092, required), PARTITION_ID and NUM_PARTITIONS
    (required), ROLE (honest | byzantine; default honest), CA_CERT (default
    ./certs/ca.crt), SUPERNODE_KEY (this node's private key; default
    ./keys/supernode), SUPEREXEC_SECRET (shared by the SuperNode and its
    ClientApp executor; default ./keys/superexec.secret); with data also
    DATA_DIR (mounted read-only at /data; default ./data) and DATA_FILE (the
    .npz in it; default client.npz).
    """
    env = _EnvValues()
    # Limitation: one SuperNode per compose project; a machine running several
    # starts one project per env file, each with its own SUPERNODE_NAME.
    node_config: dict[str, NodeConfigValue] = {
        "partition-id": env.integer(
            "${PARTITION_ID:?set PARTITION_ID, this node's partition}"
        ),
        "num-partitions": env.integer(
            "${NUM_PARTITIONS:?set NUM_PARTITIONS, the number of partitions}"
        ),
        "role": env.text("${ROLE:-honest}"),
    }
    executor_extra: dict[str, object] = {}
    if with_data:
        node_config["data-path"] = env.text("/data/${DATA_FILE:-client.npz}")
        executor_extra["volumes"] = ["${DATA_DIR:-./data}:/data:ro"]
    superlink = env.text("${SUPERLINK_ADDRESS:?set SUPERLINK_ADDRESS, host:9092}")
    supernode = _supernode(env, node_config, superlink, CLIENT_TLS)
    executor = _clientapp_executor("../..", env, "supernode", **executor_extra)
    # Two names, so compose.yml and compose.data.yml started from one folder
    # are two projects rather than one replacing the other's containers.
    project = "byzflower-${SUPERNODE_NAME:-client}" + ("-data" if with_data else "")
    return {
        "name": project,
        "x-flower-defaults": _service_defaults(),
        "services": {"supernode": supernode, "superexec-clientapp": executor},
        "secrets": {
            "ca-cert": {"file": "${CA_CERT:-./certs/ca.crt}"},
            "supernode-key": {"file": "${SUPERNODE_KEY:-./keys/supernode}"},
            SUPEREXEC_SECRET_NAME: {
                "file": f"${{SUPEREXEC_SECRET:-./keys/{SUPEREXEC_SECRET_FILE}}}"
            },
        },
    }


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def to_yaml(value: object, indent: int = 0) -> str:
    """Render dicts, lists, strings, ints and bools as block-style YAML.

    Strings are written as JSON strings (a subset of YAML), so no value can be
    misread as a number, a boolean or a comment. An ``_Anchored`` mapping gets
    its ``&anchor``; an ``_Alias`` is written ``*anchor`` (used as ``<<:``).
    """
    pad = "  " * indent
    if isinstance(value, _Alias):
        return f"*{value.name}"
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for key, item in value.items():
            name = key if key == "<<" or _PLAIN_KEY.fullmatch(key) else json.dumps(key)
            anchor = f" &{item.name}" if isinstance(item, _Anchored) else ""
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{name}:{anchor}\n{to_yaml(item, indent + 1)}")
            else:
                lines.append(f"{pad}{name}:{anchor} {to_yaml(item, indent + 1)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        return "\n".join(f"{pad}- {to_yaml(item, indent + 1)}" for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot render {type(value).__name__} as YAML: {value!r}")


def render_compose(
    *,
    layout: str = "one-host",
    num_clients: int = 10,
    num_byzantine: int = 3,
    attack: str = "alie",
    rule: str = "multikrum",
) -> str:
    """Return the compose file of ``layout`` as text, with a generated-by header.

    ``num_clients``, ``num_byzantine``, ``attack`` and ``rule`` shape only the
    one-host layout (the others are configured by ``.env``).

    Raises:
        ValueError: an unknown layout, rule or attack, or impossible n and f.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: {', '.join(LAYOUTS)}")
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; allowed: {', '.join(RULES)}")
    if attack not in ATTACKS:
        raise ValueError(f"attack={attack!r}; allowed: {', '.join(ATTACKS)}")
    if layout == "one-host":
        document = one_host_document(num_clients, num_byzantine, attack, rule)
        invocation = (
            f"byzflower compose --layout one-host --clients {num_clients} "
            f"--byzantine {num_byzantine} --attack {attack} --rule {rule}"
        )
    else:
        document = (
            server_document()
            if layout == "server"
            else client_document(with_data=layout == "client-data")
        )
        invocation = f"byzflower compose --layout {layout}"
    header = (
        f"# Generated by `{invocation}`\n"
        "# from server/services.py (server/compose.py): regenerate, do not edit.\n"
        "# Settings: the .env.example beside this file, and the README section\n"
        "# 'Deploy on several machines'.\n"
    )
    return header + to_yaml(document) + "\n"


def _parser() -> argparse.ArgumentParser:
    """Return the parser of ``byzflower compose``."""
    parser = argparse.ArgumentParser(
        prog="byzflower compose",
        description="Write a docker compose file for a byzflower deployment.",
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="one-host")
    parser.add_argument("--clients", type=int, default=10, help="n SuperNodes")
    parser.add_argument("--byzantine", type=int, default=3, help="f of them")
    parser.add_argument("--attack", choices=ATTACKS, default="alie")
    parser.add_argument("--rule", choices=RULES, default="multikrum")
    parser.add_argument("--out", type=Path, help="file to write (default stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``byzflower compose [ARGS]``; return the exit code.

    ``argv`` holds the arguments after ``compose``.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        text = render_compose(
            layout=args.layout,
            num_clients=args.clients,
            num_byzantine=args.byzantine,
            attack=args.attack,
            rule=args.rule,
        )
    except ValueError as error:
        parser.error(str(error))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
