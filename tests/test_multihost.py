"""A byzflower federation across hosts, rehearsed with Linux network namespaces.

One namespace per host — a server host, two client hosts and the laptop that
submits runs — each with one veth leg on a bridge that lives in a namespace
of its own. Addresses (10.77.0.0/24) exist only inside those namespaces;
nothing is routed to or from the machine's own network. On the server host a
SuperLink with TLS (certificate from docker/certs.sh, SAN = the server's
address) and SuperNode authentication; on the client hosts honest and
Byzantine SuperNodes with keys from docker/supernode-keys.sh, registered from
the laptop with ``flwr supernode register``. Every runtime API (the
SuperLink's, each SuperNode's) demands a SuperExec secret from
docker/superexec-secret.sh, one per host, that only that host's executors
hold. Every process runs with the command line server/services.py gives the
containers (process isolation, one SuperExec per SuperLink/SuperNode), so
this test also covers the compose files' command lines.

Checked: registered SuperNodes join under the ids their registration
returned; an unregistered key is refused; plaintext clients (SuperNode, CLI,
raw HTTP, raw gRPC) cannot talk to the SuperLink; a SuperExec without the
secret, or with a wrong one, cannot take a submitted run (nor a SuperNode's
tasks) even with the CA certificate, while the server's own executor takes
it; that byzflower run, submitted over TLS, completes and its log carries the
κ fields.

Needs root and iproute2 (skipped otherwise, with the reason), openssl and
ssh-keygen. Everything made is removed at the end, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.services import (
    ClientSpec,
    Tls,
    federation_clients,
    flower_env,
    superexec_argv,
    superlink_argv,
    supernode_argv,
)

pytestmark = pytest.mark.multihost

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SUBNET_PREFIX = "10.77.0."
SERVER_ADDRESS = SUBNET_PREFIX + "1"
CONTROL_PORT = 8000
FLEET_PORT = 9092
CONNECTION = "byz"
PLAINTEXT_CONNECTION = "plain"
# n = 3 SuperNodes, f = 1 of them Byzantine (the last partition).
CLIENTS = federation_clients(3, 1, attack="sign-flip")
# Which client host runs which partition.
PLACEMENT = {0: "c1", 1: "c2", 2: "c2"}
STOP_GRACE_S = 15.0
# What Flower 1.39 logs where a SuperExec's secret is missing or wrong.
AUTH_FAILED = "SuperExec authentication failed for /flwr.proto.Runtime/AcquireTask"


def _skip_reason() -> str | None:
    """Return why namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs as root)"
    if shutil.which("ip") is None:
        return "`ip` not found: install the Debian package iproute2"
    probe = f"bzfprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` every 0.5 s for at most ``timeout_s`` seconds, else fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@dataclass
class Process:
    """A process started in a namespace, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        """Return the log written so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        """SIGTERM this process, SIGKILL it after STOP_GRACE_S; return its status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout=5)


@dataclass
class Network:
    """Namespaces joined by a bridge, and the processes started inside them."""

    prefix: str
    workdir: Path
    hosts: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    def namespace(self, host: str) -> str:
        """Return the namespace name of ``host``."""
        return f"{self.prefix}-{host}"

    def add_bridge(self) -> None:
        """Create the namespace holding the bridge all hosts plug into."""
        bridge_ns = self.namespace("br")
        _ip("netns", "add", bridge_ns)
        self.hosts["br"] = ""
        _ip("-n", bridge_ns, "link", "set", "lo", "up")
        _ip("-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge_ns, "link", "set", "br0", "up")

    def add_host(self, host: str, address: str) -> None:
        """Create ``host``'s namespace with ``address`` on a veth to the bridge."""
        namespace, bridge_ns = self.namespace(host), self.namespace("br")
        leg = f"v{len(self.hosts)}"
        _ip("netns", "add", namespace)
        self.hosts[host] = address
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip(
            "-n", bridge_ns, "link", "add", leg, "type", "veth",
            "peer", "name", "eth0", "netns", namespace,
        )  # fmt: skip
        _ip("-n", bridge_ns, "link", "set", leg, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")

    def spawn(self, host: str, name: str, argv: list[str], home: Path) -> Process:
        """Start ``argv`` in ``host``'s namespace with a private FLWR_HOME."""
        home.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(host), *argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=process_env(home),
                cwd=home,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def run(
        self, host: str, argv: list[str], home: Path, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in ``host``'s namespace, bounded in time."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace(host), *argv],
            capture_output=True,
            text=True,
            env=process_env(home),
            timeout=timeout_s,
        )

    def stop_all(self) -> None:
        """SIGTERM every started process (newest first), then SIGKILL stragglers."""
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in reversed(self.processes):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=5)

    def remove(self) -> None:
        """Kill what still runs inside our namespaces, then delete them.

        What still runs there are children of our processes (flwr-serverapp,
        flwr-clientapp started by the SuperExecs).
        """
        # Limitation: a test process killed by SIGKILL cannot clean up; its
        # namespaces (named bzf<random>-*) stay until `ip netns del`.
        for host in list(self.hosts):
            namespace = self.namespace(host)
            listed = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True
            )
            for pid in listed.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
            del self.hosts[host]


def _ip(*args: str) -> None:
    """Run one ``ip`` command; fail with its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def process_env(home: Path) -> dict[str, str]:
    """Return the environment of a Flower process: ours, private homes, venv PATH.

    HOME is the private home too, so nothing lands in the real user's home.
    The venv's bin comes first on PATH because a SuperExec starts
    ``flwr-serverapp``/``flwr-clientapp`` by name.
    """
    env = {key: value for key, value in os.environ.items() if key != "FLWR_HOME"}
    env.update(flower_env(str(home)))
    env["HOME"] = str(home)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _need(tool: str, package: str) -> None:
    """Fail naming the Debian package when ``tool`` is not installed."""
    if shutil.which(tool) is None:
        pytest.fail(f"`{tool}` not found: install the Debian package {package}")


def write_connections(home: Path, ca_cert: Path) -> None:
    """Write the laptop's CLI config: a TLS connection and a plaintext one."""
    home.mkdir(parents=True, exist_ok=True)
    address = f"{SERVER_ADDRESS}:{CONTROL_PORT}"
    (home / "config.toml").write_text(
        "[superlink]\n"
        f'default = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "{address}"\n'
        f'root-certificates = "{ca_cert}"\n\n'
        f"[superlink.{PLAINTEXT_CONNECTION}]\n"
        f'address = "{address}"\n'
        "insecure = true\n"
    )


@dataclass
class Deployment:
    """The running federation the tests inspect.

    ``secrets`` maps each host ("srv", "c1", "c2") to the SuperExec secret its
    runtime APIs and executors share; ``runtime_addresses`` maps a partition
    to the host and port of its SuperNode's runtime API.
    """

    network: Network
    workdir: Path
    ca_cert: Path
    secrets: dict[str, Path]
    superlink: Process
    serverapp_executor: Process
    supernodes: dict[int, Process]
    node_ids: dict[int, int]
    runtime_addresses: dict[int, tuple[str, int]] = field(default_factory=dict)

    @property
    def laptop_home(self) -> Path:
        """Return the laptop's FLWR_HOME (holds config.toml)."""
        return self.workdir / "laptop"

    def flwr(self, *args: str, timeout_s: float = 60.0) -> dict:
        """Run ``flwr ARGS --format json`` on the laptop; return its JSON."""
        done = self.network.run(
            "lap",
            [str(VENV_BIN / "flwr"), *args, "--format", "json"],
            self.laptop_home,
            timeout_s,
        )
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError as error:
            raise AssertionError(
                f"flwr {' '.join(args)}: no JSON (exit {done.returncode})\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            ) from error


def start_server(
    network: Network, workdir: Path, tls: Tls, secret: Path
) -> tuple[Process, Process]:
    """Start the SuperLink and its ServerApp executor on the server host.

    Returns (SuperLink, ServerApp executor).
    """
    server_home = workdir / "server"
    superlink = network.spawn(
        "srv",
        "superlink",
        superlink_argv(
            host=SERVER_ADDRESS,
            port=CONTROL_PORT,
            fleet_address=f"{SERVER_ADDRESS}:{FLEET_PORT}",
            database=str(server_home / "state.db"),
            tls=tls,
            supernode_auth=True,
            isolation="process",
            superexec_auth_secret_file=str(secret),
            executable=str(VENV_BIN / "flower-superlink"),
        ),
        server_home,
    )
    wait_until(
        lambda: (
            "Application startup complete" in superlink.text()
            and "Fleet API" in superlink.text()
        ),
        60,
        "the SuperLink to start",
    )
    return superlink, start_serverapp_executor(
        network, workdir, tls.ca_cert, secret, "superexec-serverapp"
    )


def start_serverapp_executor(
    network: Network, workdir: Path, ca_cert: str, secret: Path, name: str
) -> Process:
    """Start the server's own ServerApp executor (TLS, the server's secret)."""
    return network.spawn(
        "srv",
        name,
        superexec_argv(
            runtime_api_address=f"{SERVER_ADDRESS}:{CONTROL_PORT}",
            tls=Tls(ca_cert=ca_cert),
            superexec_auth_secret_file=str(secret),
            executable=str(VENV_BIN / "flower-superexec"),
        ),
        workdir / "serverapp",
    )


def start_supernode(
    network: Network,
    workdir: Path,
    client: ClientSpec,
    host: str,
    port: int,
    key: Path | None,
    ca_cert: Path,
    secret: Path,
    extra: tuple[str, ...] = (),
) -> Process:
    """Start one SuperNode (and, with a key, its ClientApp executor) on ``host``.

    Both hold ``secret``, the host's SuperExec secret.
    """
    name = f"supernode-{client.partition_id}-{host}-{port}"
    home = workdir / name
    tls = None if key is None else Tls(ca_cert=str(ca_cert))
    argv = supernode_argv(
        superlink=f"{SERVER_ADDRESS}:{FLEET_PORT}",
        host="127.0.0.1",
        port=port,
        node_config=client.node_config(),
        tls=tls,
        auth_private_key=None if key is None else str(key),
        isolation="process",
        superexec_auth_secret_file=str(secret),
        executable=str(VENV_BIN / "flower-supernode"),
    )
    supernode = network.spawn(host, name, [*argv, *extra], home)
    if key is not None:
        network.spawn(
            host,
            f"superexec-{name}",
            superexec_argv(
                runtime_api_address=f"127.0.0.1:{port}",
                superexec_auth_secret_file=str(secret),
                executable=str(VENV_BIN / "flower-superexec"),
            ),
            home,
        )
    return supernode


def register_all(deployment: Deployment, public_keys: list[Path]) -> list[int]:
    """Register SuperNode public keys from the laptop, concurrently; return ids."""
    namespace = deployment.network.namespace("lap")
    flwr = str(VENV_BIN / "flwr")
    registrations = []
    for key in public_keys:
        argv = [flwr, "supernode", "register", str(key), CONNECTION, "--format", "json"]
        registrations.append(
            subprocess.Popen(
                ["ip", "netns", "exec", namespace, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=process_env(deployment.laptop_home),
            )
        )
    node_ids = []
    for key, registration in zip(public_keys, registrations, strict=True):
        stdout, stderr = registration.communicate(timeout=120)
        reply = json.loads(stdout) if stdout.strip() else {"stderr": stderr}
        assert reply.get("success") is True, (key, reply)
        node_ids.append(int(reply["node-id"]))
    return node_ids


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Build the namespaces, the TLS/auth material and the federation; tear down."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    _need("openssl", "openssl")
    _need("ssh-keygen", "openssh-client")
    workdir = tmp_path_factory.mktemp("multihost")
    network = Network(prefix=f"bzf{secrets.token_hex(3)}", workdir=workdir)
    try:
        yield _deploy(network, workdir)
    finally:
        network.stop_all()
        network.remove()
        _dump_logs_on_failure(workdir)


def _deploy(network: Network, workdir: Path) -> Deployment:
    """Bring the whole federation up; return what the tests need."""
    network.add_bridge()
    network.add_host("srv", SERVER_ADDRESS)
    network.add_host("c1", SUBNET_PREFIX + "2")
    network.add_host("c2", SUBNET_PREFIX + "3")
    network.add_host("lap", SUBNET_PREFIX + "4")

    certs, keys = workdir / "certs", workdir / "keys"
    _script("certs.sh", str(certs), SERVER_ADDRESS)
    names = [f"node{client.partition_id}" for client in CLIENTS]
    _script("supernode-keys.sh", str(keys), *names, "intruder")
    # One secret per host, made where it is used (it never travels), and a
    # different one the outsiders will guess with.
    secrets = {
        host: workdir / host / "superexec.secret" for host in ("srv", "c1", "c2")
    }
    for secret in [*secrets.values(), workdir / "lap" / "wrong.secret"]:
        _script("superexec-secret.sh", str(secret))
    tls = Tls(
        ca_cert=str(certs / "ca.crt"),
        server_cert=str(certs / "server.pem"),
        server_key=str(certs / "server.key"),
    )

    superlink, serverapp_executor = start_server(network, workdir, tls, secrets["srv"])
    write_connections(workdir / "laptop", certs / "ca.crt")
    deployment = Deployment(
        network,
        workdir,
        certs / "ca.crt",
        secrets,
        superlink,
        serverapp_executor,
        supernodes={},
        node_ids={},
    )
    node_ids = register_all(deployment, [keys / f"{name}.pub" for name in names])
    for client, node_id in zip(CLIENTS, node_ids, strict=True):
        deployment.node_ids[client.partition_id] = node_id

    ports: dict[str, int] = {}
    for client, name in zip(CLIENTS, names, strict=True):
        host = PLACEMENT[client.partition_id]
        ports[host] = ports.get(host, 9093) + 1
        deployment.runtime_addresses[client.partition_id] = (host, ports[host])
        deployment.supernodes[client.partition_id] = start_supernode(
            network,
            workdir,
            client,
            host,
            ports[host],
            keys / name,
            certs / "ca.crt",
            secrets[host],
        )
    for partition_id, supernode in deployment.supernodes.items():
        wait_until(
            lambda supernode=supernode: "SuperNode ID:" in supernode.text(),
            60,
            f"SuperNode of partition {partition_id} to join",
        )
    return deployment


def _script(name: str, *args: str) -> None:
    """Run one of docker/'s scripts; fail with its output."""
    done = subprocess.run(
        ["bash", str(REPO / "docker" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{name} failed: {done.stdout}{done.stderr}"


def _dump_logs_on_failure(workdir: Path) -> None:
    """Print the tail of every process log (pytest shows it on failure)."""
    for log in sorted((workdir / "logs").glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print(f"===== {log.name}", *tail, sep="\n")


def test_registered_supernodes_join_under_their_registered_ids(
    deployment: Deployment,
) -> None:
    for partition_id, supernode in deployment.supernodes.items():
        assert f"SuperNode ID: {deployment.node_ids[partition_id]}" in supernode.text()
    listed = deployment.flwr("supernode", "ls", CONNECTION)
    assert listed.get("success") is True, listed
    online = {
        int(node["node-id"]) for node in listed["nodes"] if node["status"] == "online"
    }
    assert online == set(deployment.node_ids.values())


def test_superlink_listens_only_on_the_server_address(deployment: Deployment) -> None:
    sockets = deployment.network.run(
        "srv", ["ss", "-ltnH"], deployment.workdir, timeout_s=30
    ).stdout
    listening = set()
    for line in sockets.splitlines():
        host, _, port = line.split()[3].rpartition(":")
        listening.add((host.strip("[]").removeprefix("::ffff:"), int(port)))
    assert listening == {(SERVER_ADDRESS, CONTROL_PORT), (SERVER_ADDRESS, FLEET_PORT)}


def test_unregistered_key_is_refused(deployment: Deployment) -> None:
    intruder = ClientSpec(partition_id=0, num_partitions=3, role="byzantine")
    before = deployment.flwr("supernode", "ls", CONNECTION)["nodes"]
    process = start_supernode(
        deployment.network,
        deployment.workdir,
        intruder,
        "c1",
        9190,
        deployment.workdir / "keys" / "intruder",
        deployment.ca_cert,
        deployment.secrets["c1"],
        extra=("--max-retries", "1"),
    )
    wait_until(lambda: process.popen.poll() is not None, 60, "the intruder to exit")
    # Flower's code 305 is only logged; the process exits with status 1.
    assert process.popen.returncode == 1
    assert "Exit Code: 305" in process.text()
    assert "SuperNode ID:" not in process.text()
    assert "No SuperNode found with the given public key" in deployment.superlink.text()
    after = deployment.flwr("supernode", "ls", CONNECTION)["nodes"]
    assert sorted(n["node-id"] for n in after) == sorted(n["node-id"] for n in before)


def test_plaintext_supernode_is_refused(deployment: Deployment) -> None:
    plaintext = ClientSpec(partition_id=1, num_partitions=3, role="honest")
    process = start_supernode(
        deployment.network,
        deployment.workdir,
        plaintext,
        "c2",
        9191,
        None,
        deployment.ca_cert,
        deployment.secrets["c2"],
        extra=("--max-retries", "2", "--max-wait-time", "20"),
    )
    wait_until(lambda: process.popen.poll() is not None, 90, "the plaintext node")
    assert process.popen.returncode != 0
    assert "SuperNode ID:" not in process.text()
    assert "Exit Code: 305" in process.text()


def test_plaintext_cli_and_raw_requests_are_refused(deployment: Deployment) -> None:
    listed = deployment.flwr("ls", PLAINTEXT_CONNECTION)
    assert listed.get("success") is False, listed
    secure = deployment.flwr("ls", CONNECTION)
    assert secure.get("success") is True, secure

    probe = (
        "import sys, urllib.request, grpc\n"
        f"url = 'http://{SERVER_ADDRESS}:{CONTROL_PORT}/'\n"
        "try:\n"
        "    urllib.request.urlopen(url, timeout=10)\n"
        "    http = 'answered'\n"
        "except Exception as error:\n"
        "    http = type(error).__name__\n"
        f"channel = grpc.insecure_channel('{SERVER_ADDRESS}:{FLEET_PORT}')\n"
        "try:\n"
        "    grpc.channel_ready_future(channel).result(timeout=5)\n"
        "    fleet = 'ready'\n"
        "except grpc.FutureTimeoutError:\n"
        "    fleet = 'never-ready'\n"
        "print(http, fleet)\n"
    )
    done = deployment.network.run(
        "lap", [sys.executable, "-c", probe], deployment.laptop_home, timeout_s=60
    )
    assert done.returncode == 0, done.stderr
    http, fleet = done.stdout.split()
    assert http != "answered"
    assert fleet == "never-ready"


RUN_CONFIG = (
    "rule='multikrum' num-byzantine=1 num-clients=3 num-server-rounds=1 "
    "attack='sign-flip' local-epochs=1 fraction-evaluate=0.0 round-timeout=300.0"
)


def _app_ready() -> str | None:
    """Return why the byzflower app cannot run yet, or None when it can."""
    missing = [
        path
        for path in ("server/app.py", "clients/app.py")
        if not (REPO / path).exists()
    ]
    return f"the app is not written yet: {', '.join(missing)}" if missing else None


@dataclass
class GuardedRun:
    """One run submitted while the server's own ServerApp executor was stopped.

    ``statuses`` holds the run's status right after submission and after the
    outsiders gave up; ``auth_failures`` counts the refusals the SuperLink
    ("srv") and SuperNode 0 ("c1") logged meanwhile.
    """

    run_id: str
    results: Path
    submit: Process
    outsiders: dict[str, Process]
    statuses: dict[str, str]
    auth_failures: dict[str, int]


def run_status(deployment: Deployment, run_id: str) -> str:
    """Return the status ``flwr ls`` reports for one run."""
    (run,) = deployment.flwr("ls", CONNECTION, "--run-id", run_id)["runs"]
    return str(run["status"])


def start_submit(deployment: Deployment, run_config: str) -> Process:
    """Start docker/submit.py on the laptop; it exits when the run finishes."""
    argv = [
        sys.executable,
        str(REPO / "docker" / "submit.py"),
        "--app",
        str(REPO),
        "--superlink",
        f"{SERVER_ADDRESS}:{CONTROL_PORT}",
        "--root-certificates",
        str(deployment.ca_cert),
        "--connection",
        CONNECTION,
        "--run-config",
        run_config,
        "--poll-s",
        "2",
        "--timeout-s",
        "600",
    ]
    return deployment.network.spawn("lap", "submit", argv, deployment.laptop_home)


def start_outsiders(deployment: Deployment) -> dict[str, Process]:
    """Start SuperExecs that hold the CA certificate but not the right secret.

    On the laptop against the SuperLink: one without a secret, one with a
    secret of its own. On c1 against SuperNode 0's runtime API: one without,
    one with the server's secret (a real secret, of another host).
    """
    wrong = deployment.workdir / "lap" / "wrong.secret"
    host, port = deployment.runtime_addresses[0]
    targets = {
        "superlink-no-secret": ("lap", f"{SERVER_ADDRESS}:{CONTROL_PORT}", None),
        "superlink-wrong-secret": ("lap", f"{SERVER_ADDRESS}:{CONTROL_PORT}", wrong),
        "supernode-no-secret": (host, f"127.0.0.1:{port}", None),
        "supernode-wrong-secret": (
            host,
            f"127.0.0.1:{port}",
            deployment.secrets["srv"],
        ),
    }
    outsiders = {}
    for name, (where, address, secret) in targets.items():
        argv = superexec_argv(
            runtime_api_address=address,
            tls=Tls(ca_cert=str(deployment.ca_cert)) if where == "lap" else None,
            superexec_auth_secret_file=None if secret is None else str(secret),
            executable=str(VENV_BIN / "flower-superexec"),
        )
        home = deployment.workdir / f"outsider-{name}"
        outsiders[name] = deployment.network.spawn(
            where, f"outsider-{name}", argv, home
        )
    return outsiders


@pytest.fixture(scope="module")
def guarded_run(deployment: Deployment) -> GuardedRun:
    """Submit a run that only outsiders could take, then let the server take it.

    Steps: stop the server's ServerApp executor; submit (the run stays
    pending); start the outsiders and wait until they give up; restart the
    server's executor; wait until the run finishes. Every wait is bounded.
    """
    not_ready = _app_ready()
    if not_ready:
        pytest.skip(not_ready)
    network = deployment.network
    supernode = deployment.supernodes[0]
    deployment.serverapp_executor.stop()

    results = deployment.workdir / "server" / "results"
    submit = start_submit(deployment, f"{RUN_CONFIG} out-dir='{results}'")
    started = r"submit: run (\d+) started"
    wait_until(
        lambda: (
            bool(re.search(started, submit.text())) or submit.popen.poll() is not None
        ),
        180,
        "submit.py to start the run",
    )
    match = re.search(started, submit.text())
    assert match, submit.text()[-3000:]
    run_id = match.group(1)
    statuses = {"submitted": run_status(deployment, run_id)}

    refused_before = {
        "srv": deployment.superlink.text().count(AUTH_FAILED),
        "c1": supernode.text().count(AUTH_FAILED),
    }
    outsiders = start_outsiders(deployment)
    for name, outsider in outsiders.items():
        wait_until(lambda o=outsider: o.popen.poll() is not None, 60, f"{name} to exit")
    statuses["after-outsiders"] = run_status(deployment, run_id)
    auth_failures = {
        "srv": deployment.superlink.text().count(AUTH_FAILED) - refused_before["srv"],
        "c1": supernode.text().count(AUTH_FAILED) - refused_before["c1"],
    }

    secret = deployment.secrets["srv"]
    ca_cert = str(deployment.ca_cert)
    deployment.serverapp_executor = start_serverapp_executor(
        network, deployment.workdir, ca_cert, secret, "superexec-serverapp-again"
    )
    wait_until(lambda: submit.popen.poll() is not None, 660, "the run to finish")
    return GuardedRun(run_id, results, submit, outsiders, statuses, auth_failures)


def test_outside_superexecs_cannot_take_a_run(guarded_run: GuardedRun) -> None:
    # The run waited for a ServerApp executor the whole time the outsiders,
    # holding ca.crt, asked for it.
    assert guarded_run.statuses == {
        "submitted": "pending",
        "after-outsiders": "pending",
    }
    for name, outsider in guarded_run.outsiders.items():
        # Flower 1.39: refused with HTTP 401, the SuperExec stops itself and
        # exits 0; only the API it dialed says why.
        assert outsider.popen.returncode == 0, name
        assert "SuperExec terminated gracefully." in outsider.text(), name
    assert guarded_run.auth_failures == {"srv": 2, "c1": 2}


def test_the_servers_executor_takes_the_run_and_it_logs_kappa(
    deployment: Deployment, guarded_run: GuardedRun
) -> None:
    submit = guarded_run.submit
    assert submit.popen.returncode == 0, submit.text()[-3000:]
    assert run_status(deployment, guarded_run.run_id) == "finished:completed"

    shown = deployment.network.run(
        "lap",
        [str(VENV_BIN / "flwr"), "log", guarded_run.run_id, CONNECTION, "--show"],
        deployment.laptop_home,
        timeout_s=120,
    )
    round_lines = [line for line in shown.stdout.splitlines() if "round 1 |" in line]
    assert round_lines, shown.stdout[-3000:]
    assert "κ̂_hon" in round_lines[0] and "κ̂_worst" in round_lines[0]

    (record,) = [
        json.loads(line)
        for line in (guarded_run.results / "rounds.jsonl").read_text().splitlines()
        if line.strip()
    ]
    assert record["round"] == 1
    roles = dict(zip(record["node_ids"], record["roles"], strict=True))
    assert roles == {
        deployment.node_ids[client.partition_id]: client.role for client in CLIENTS
    }
    # S = Hon is one of the subsets max_S ρ_S ranges over, and with
    # C(3, 1) = 3 subsets the maximum is exact: ρ_Hon ≤ max_S ρ_S.
    assert 0.0 <= record["kappa_hon"] <= record["kappa_worst"]
