"""Tests of server/services.py: command lines, node-config strings and roles.

Command lines are checked twice: by their expected tokens, and by parsing them
with the installed flwr 1.39.0's own argument parsers, so a flag Flower does
not know fails here rather than in a container. Node-config strings are
parsed back with ``tomllib`` and with Flower's own ``--node-config`` parser.
"""

from __future__ import annotations

import argparse
import math
import tomllib

import pytest
from flwr.common.config import parse_config_args
from flwr.supercore.cli.flower_superexec import _parse_args as superexec_parser
from flwr.superlink.cli.flower_superlink import (
    _parse_args_run_superlink as superlink_parser,
)
from flwr.supernode.cli.flower_supernode import (
    _parse_args_run_supernode as supernode_parser,
)

from server.services import (
    ClientSpec,
    Tls,
    federation_clients,
    flower_env,
    node_config_arg,
    superexec_argv,
    superlink_argv,
    supernode_argv,
)

SERVER_TLS = Tls(ca_cert="/c/ca.crt", server_cert="/c/server.pem", server_key="/c/k")


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse argv (without its program name) with Flower's parser; fail on extras."""
    return parser.parse_args(argv[1:])


def value_after(argv: list[str], flag: str) -> str:
    """Return the token following the single occurrence of ``flag``."""
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def test_flower_env_disables_telemetry_and_update_checks() -> None:
    env = flower_env("/tmp/flwr-home")
    assert env == {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_HOME": "/tmp/flwr-home",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def test_superlink_insecure_defaults_stay_on_loopback() -> None:
    argv = superlink_argv(database="/s/state.db")
    assert argv[0] == "flower-superlink"
    args = parse(superlink_parser(), argv)
    assert args.insecure is True
    assert args.host == "127.0.0.1"
    assert args.port == 8000
    assert args.fleet_api_address == "127.0.0.1:9092"
    assert args.database == "/s/state.db"
    assert args.isolation == "subprocess"
    assert args.runtime_dependency_install is False
    assert args.enable_supernode_auth is False
    assert args.ssl_certfile is None


def test_superlink_tls_and_auth() -> None:
    argv = superlink_argv(
        host="0.0.0.0",
        port=8100,
        fleet_address="0.0.0.0:9192",
        database="state/state.db",
        tls=SERVER_TLS,
        supernode_auth=True,
        isolation="process",
        executable="/venv/bin/flower-superlink",
    )
    assert argv[0] == "/venv/bin/flower-superlink"
    assert "--insecure" not in argv
    args = parse(superlink_parser(), argv)
    assert (args.host, args.port) == ("0.0.0.0", 8100)
    assert args.fleet_api_address == "0.0.0.0:9192"
    assert args.ssl_ca_certfile == "/c/ca.crt"
    assert args.ssl_certfile == "/c/server.pem"
    assert args.ssl_keyfile == "/c/k"
    assert args.enable_supernode_auth is True
    assert args.isolation == "process"
    assert args.insecure is False
    assert args.runtime_dependency_install is False


def test_superlink_rejects_auth_without_tls_and_tls_without_server_pair() -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        superlink_argv(database="x.db", supernode_auth=True)
    with pytest.raises(ValueError, match="server_key=None"):
        superlink_argv(database="x.db", tls=Tls("/c/ca.crt", "/c/server.pem"))
    with pytest.raises(ValueError, match="isolation='thread'"):
        superlink_argv(database="x.db", isolation="thread")
    with pytest.raises(ValueError, match="port=0"):
        superlink_argv(database="x.db", port=0)


def test_supernode_insecure() -> None:
    argv = supernode_argv(
        superlink="127.0.0.1:9092",
        port=9101,
        node_config={"partition-id": 3, "num-partitions": 5, "role": "honest"},
    )
    args = parse(supernode_parser(), argv)
    assert args.insecure is True
    assert args.superlink == "127.0.0.1:9092"
    assert (args.host, args.port) == ("127.0.0.1", 9101)
    assert args.root_certificates is None
    assert args.auth_supernode_private_key is None
    assert parse_config_args([args.node_config]) == {
        "partition-id": 3,
        "num-partitions": 5,
        "role": "honest",
    }


def test_supernode_tls_and_auth_key() -> None:
    argv = supernode_argv(
        superlink="10.77.0.1:9092",
        host="0.0.0.0",
        port=9094,
        node_config={"role": "byzantine"},
        tls=Tls(ca_cert="/c/ca.crt"),
        auth_private_key="/k/node1",
        isolation="process",
    )
    assert "--insecure" not in argv
    args = parse(supernode_parser(), argv)
    assert args.root_certificates == "/c/ca.crt"
    assert args.auth_supernode_private_key == "/k/node1"
    assert args.isolation == "process"
    assert args.insecure is False


def test_supernode_rejects_auth_key_without_tls() -> None:
    with pytest.raises(ValueError, match="/k/node1"):
        supernode_argv(
            superlink="a:9092", port=9094, node_config={}, auth_private_key="/k/node1"
        )


def test_superexec_argv() -> None:
    plain = parse(superexec_parser(), superexec_argv(runtime_api_address="sn-0:9094"))
    assert plain.runtime_api_address == "sn-0:9094"
    assert plain.insecure is True
    secure = parse(
        superexec_parser(),
        superexec_argv(runtime_api_address="superlink:8000", tls=Tls("/c/ca.crt")),
    )
    assert secure.insecure is False
    assert secure.root_certificates == "/c/ca.crt"


def test_superexec_secret_reaches_all_three_in_process_isolation() -> None:
    secret = "/s/superexec.secret"
    superlink = parse(
        superlink_parser(),
        superlink_argv(
            database="x.db", isolation="process", superexec_auth_secret_file=secret
        ),
    )
    supernode = parse(
        supernode_parser(),
        supernode_argv(
            superlink="a:9092",
            port=9094,
            node_config={},
            isolation="process",
            superexec_auth_secret_file=secret,
        ),
    )
    executor = parse(
        superexec_parser(),
        superexec_argv(runtime_api_address="a:9094", superexec_auth_secret_file=secret),
    )
    assert superlink.superexec_auth_secret_file == secret
    assert supernode.superexec_auth_secret_file == secret
    assert executor.superexec_auth_secret_file == secret
    assert executor.insecure is True


def test_superexec_secret_is_absent_unless_asked_for() -> None:
    argvs = [
        superlink_argv(database="x.db", isolation="process"),
        supernode_argv(
            superlink="a:9092", port=9094, node_config={}, isolation="process"
        ),
        superexec_argv(runtime_api_address="a:9094"),
    ]
    assert all("--superexec-auth-secret-file" not in argv for argv in argvs)


def test_superexec_secret_is_refused_in_subprocess_isolation() -> None:
    # Flower 1.39 only warns and drops the secret there: the runtime API
    # would stay open while the deployment looks protected.
    with pytest.raises(ValueError, match="isolation='subprocess'"):
        superlink_argv(database="x.db", superexec_auth_secret_file="/s/secret")
    with pytest.raises(ValueError, match="/s/secret"):
        supernode_argv(
            superlink="a:9092",
            port=9094,
            node_config={},
            superexec_auth_secret_file="/s/secret",
        )


ROUND_TRIP_CONFIGS = [
    {"partition-id": 0, "num-partitions": 1, "role": "honest"},
    {"role": "byzantine", "attack": "alie", "data-path": "/data/my client"},
    {"scale": 1e-05, "big": 1.5e300, "neg": -2.25, "zero": 0.0, "i": -(2**63)},
    {"empty": "", "eq": "a=b c=d", "dq": 'say "hi"', "uni": "κ ≤ 4c²", "tab": "a\tb"},
    {"flag": True, "other": False},
]


@pytest.mark.parametrize("cfg", ROUND_TRIP_CONFIGS)
def test_node_config_arg_round_trips_through_toml_and_flower(cfg: dict) -> None:
    rendered = node_config_arg(cfg)
    as_toml = tomllib.loads("\n".join(rendered_pairs(rendered, cfg)))
    assert as_toml == cfg
    assert all(type(as_toml[k]) is type(v) for k, v in cfg.items())
    assert parse_config_args([rendered]) == cfg


def rendered_pairs(rendered: str, cfg: dict) -> list[str]:
    """Split a rendered string into 'key = value' lines, using the known keys.

    Independent of Flower's regex: each pair starts at "<key>=" in the order of
    ``cfg`` and ends where the next one starts.
    """
    starts = []
    position = 0
    for key in cfg:
        position = rendered.index(f"{key}=", position)
        starts.append(position)
    ends = [start - 1 for start in starts[1:]] + [len(rendered)]
    lines = []
    for key, start, end in zip(cfg, starts, ends, strict=True):
        lines.append(f"{key} = {rendered[start + len(key) + 1 : end]}")
    return lines


def test_node_config_arg_non_finite_floats() -> None:
    parsed = tomllib.loads(
        "\n".join(
            rendered_pairs(node_config_arg({"a": math.inf, "b": -math.inf}), "ab")
        )
    )
    assert parsed == {"a": math.inf, "b": -math.inf}
    nan = tomllib.loads(f"x = {node_config_arg({'x': math.nan}).split('=')[1]}")
    assert math.isnan(nan["x"])


def test_node_config_arg_exact_text() -> None:
    assert (
        node_config_arg({"partition-id": 2, "num-partitions": 4, "role": "byzantine"})
        == "partition-id=2 num-partitions=4 role='byzantine'"
    )
    assert node_config_arg({}) == ""


@pytest.mark.parametrize(
    ("cfg", "named"),
    [
        ({"role": "it's"}, "role"),
        ({"path": "a\nb"}, "path"),
        ({"bell": "a\x07"}, "bell"),
        ({"bad key": 1}, "bad key"),
        ({"k=v": 1}, "k=v"),
        ({"": 1}, "''"),
        ({"huge": 2**63}, "huge"),
        ({"listed": [1, 2]}, "listed"),
        ({"none": None}, "none"),
    ],
)
def test_node_config_arg_rejects_what_would_break_toml(cfg: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        node_config_arg(cfg)


def test_client_spec_node_config() -> None:
    honest = ClientSpec(partition_id=1, num_partitions=4, role="honest")
    assert honest.node_config() == {
        "partition-id": 1,
        "num-partitions": 4,
        "role": "honest",
    }
    byzantine = ClientSpec(
        partition_id=3,
        num_partitions=4,
        role="byzantine",
        attack="ipm",
        data_path="/data",
        fault="nan",
    )
    assert byzantine.node_config() == {
        "partition-id": 3,
        "num-partitions": 4,
        "role": "byzantine",
        "attack": "ipm",
        "data-path": "/data",
        "fault": "nan",
    }


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"partition_id": 0, "num_partitions": 2, "role": "evil"}, "evil"),
        ({"partition_id": 2, "num_partitions": 2, "role": "honest"}, "partition_id=2"),
        (
            {"partition_id": -1, "num_partitions": 2, "role": "honest"},
            "partition_id=-1",
        ),
        (
            {"partition_id": 0, "num_partitions": 0, "role": "honest"},
            "num_partitions=0",
        ),
        (
            {"partition_id": 0, "num_partitions": 2, "role": "honest", "attack": "a"},
            "attack='a'",
        ),
    ],
)
def test_client_spec_rejects_impossible_nodes(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ClientSpec(**kwargs)


@pytest.mark.parametrize(("n", "f"), [(1, 0), (1, 1), (5, 2), (10, 3), (20, 4)])
def test_federation_clients_last_f_are_byzantine(n: int, f: int) -> None:
    clients = federation_clients(n, f, attack="alie")
    assert [c.partition_id for c in clients] == list(range(n))
    assert all(c.num_partitions == n for c in clients)
    byzantine_ids = {c.partition_id for c in clients if c.role == "byzantine"}
    assert byzantine_ids == set(range(n - f, n))
    assert sum(c.role == "honest" for c in clients) == n - f
    assert {c.attack for c in clients if c.role == "byzantine"} <= {"alie"}
    assert {c.attack for c in clients if c.role == "honest"} <= {None}
    assert federation_clients(n, f, attack="alie") == clients


def test_federation_clients_without_attack_leaves_it_to_the_run_config() -> None:
    clients = federation_clients(3, 1)
    assert "attack" not in clients[2].node_config()
    assert clients[2].role == "byzantine"


@pytest.mark.parametrize(("n", "f"), [(3, 4), (3, -1), (0, 0)])
def test_federation_clients_rejects_impossible_counts(n: int, f: int) -> None:
    with pytest.raises(ValueError, match=f"num_clients={n}, num_byzantine={f}"):
        federation_clients(n, f)
