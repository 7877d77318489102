"""``byzflower run``: a real Flower federation on this machine, from one command.

Starts a SuperLink and one SuperNode per client as child processes on loopback
(both of the SuperLink's ports bound to 127.0.0.1), submits the app with
Flower's own ``flwr run``, follows the ServerApp's log, reads the run's final
status (``flwr run --stream`` exits 0 even when a run fails), prints a table
of the rounds, and stops every child it started, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from clients.attacks import ATTACKS
from server.config import ConfigError, RunConfig, parse_run_config
from server.processes import Federation, LaunchError, _signal_group, become_subreaper
from server.services import (
    federation_clients,
    flower_env,
    superlink_argv,
    supernode_argv,
)
from strategies.rules import RULES

CONNECTION = "byzflower-local"
APP_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Lines of the ServerApp log shown live: our round lines, warnings, errors.
SHOWN = re.compile(r"round \d+ \||WARNING|ERROR|byzflower:")


def federation_env(flwr_home: Path) -> dict[str, str]:
    """The environment of every Flower process we start.

    Telemetry and update checks off, a private FLWR_HOME, and this
    interpreter's bin directory first on PATH: the SuperLink and SuperNodes
    start ``flower-superexec`` and ``flwr-clientapp`` by name.
    """
    env = {**os.environ, **flower_env(str(flwr_home)), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free TCP ports on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, timeout: float, federation: Federation) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        federation.check()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    raise LaunchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def write_connection(flwr_home: Path, control_port: int) -> None:
    """Write the private Flower CLI config naming our local SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        "[superlink]\n"
        f'default = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "127.0.0.1:{control_port}"\n'
        "insecure = true\n"
    )


def run_config_toml(values: dict[str, object]) -> str:
    """Render run-config overrides as TOML for ``flwr run --run-config FILE``."""
    lines = []
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def flwr(args: Sequence[str], env: dict[str, str], timeout: float) -> str:
    """Run a ``flwr`` CLI command and return its standard output."""
    completed = subprocess.run(
        [str(BIN / "flwr"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=APP_DIR,
        check=False,
    )
    if completed.returncode != 0:
        raise LaunchError(
            f"flwr {' '.join(args[:2])} failed ({completed.returncode}):\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}"
        )
    return completed.stdout


def submit(run_config_file: Path, env: dict[str, str]) -> int:
    """Submit the app with ``flwr run`` and return the run id."""
    output = flwr(
        [
            "run",
            str(APP_DIR),
            CONNECTION,
            "--run-config",
            str(run_config_file),
            "--format",
            "json",
        ],
        env,
        timeout=120,
    )
    payload = json.loads(output[output.index("{") :])
    if not payload.get("success", True) or "run-id" not in payload:
        raise LaunchError(f"flwr run did not start a run: {payload}")
    return int(payload["run-id"])


def run_status(run_id: int, env: dict[str, str]) -> tuple[str, str]:
    """The run's status (e.g. ``finished:completed``) and its details."""
    output = flwr(
        ["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], env, timeout=60
    )
    payload = json.loads(output[output.index("{") :])
    runs = payload.get("runs", [])
    if not runs:
        return "unknown", json.dumps(payload)
    run = runs[0]
    return str(run.get("status", "unknown")), str(run.get("status-details", ""))


def follow_log(
    run_id: int,
    env: dict[str, str],
    out_dir: Path,
    deadline: float,
    federation: Federation,
) -> Iterator[str]:
    """Stream the ServerApp's log (``flwr log --stream``) until the run ends.

    Lines are read by a thread, so the SuperLink's liveness and the deadline
    are checked every second even when the log is silent. A dead SuperLink
    ends the run at once (LaunchError); a dead SuperNode is reported and the
    run goes on without it.
    """
    with (out_dir / "logs" / "serverapp.log").open("w") as saved:
        process = subprocess.Popen(
            [str(BIN / "flwr"), "log", str(run_id), CONNECTION, "--stream"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=APP_DIR,
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(
            target=_pump, args=(process.stdout, lines), daemon=True
        ).start()
        try:
            while True:
                try:
                    line = lines.get(timeout=1.0)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                for dead in federation.check():
                    yield f"WARNING : {dead} died; the run goes on without it"
                if time.monotonic() > deadline:
                    raise LaunchError("the run took longer than its deadline")
                if not line:
                    continue
                saved.write(line)
                saved.flush()
                yield line.rstrip("\n")
                if run_finished(run_id, env, line):
                    break
        finally:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Copy ``stream`` line by line into ``lines``; None marks its end."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_finished(run_id: int, env: dict[str, str], line: str) -> bool:
    """Whether a log line marks the end of the ServerApp (then ask the status)."""
    if "byzflower: done" not in line and "Exit" not in line and "Traceback" not in line:
        return False
    time.sleep(1.0)
    status, _ = run_status(run_id, env)
    return status.startswith("finished")


def launch(args: argparse.Namespace) -> int:
    """Start the federation, run, report; return the process exit code."""
    out_dir = Path(args.out).resolve()
    try:
        check_flags(args)
        overrides = run_overrides(args, out_dir)
        config = parse_run_config(overrides)
        config.check_federation(args.clients)
        clients = federation_clients(args.clients, args.byzantine, None)
    except (ConfigError, ValueError) as error:
        print(f"byzflower run: {error}", file=sys.stderr)
        return 2

    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh federation: a SuperLink database left by an earlier launch in
    # the same folder would bring back its nodes, now dead.
    (out_dir / "superlink.db").unlink(missing_ok=True)
    flwr_home = out_dir / "flwr-home"
    env = federation_env(flwr_home)
    become_subreaper()
    federation = Federation(out_dir, env, adopt_orphans=True)
    (out_dir / "run-config.toml").write_text(run_config_toml(overrides))
    ports = free_ports(2 + len(clients))
    control_port, fleet_port, node_ports = ports[0], ports[1], ports[2:]

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        print(f"byzflower: SuperLink on 127.0.0.1:{control_port}, Fleet :{fleet_port}")
        federation.start(
            "superlink",
            superlink_argv(
                port=control_port,
                fleet_address=f"127.0.0.1:{fleet_port}",
                database=str(out_dir / "superlink.db"),
                executable=str(BIN / "flower-superlink"),
            ),
        )
        wait_for_port(control_port, 60, federation)
        wait_for_port(fleet_port, 60, federation)
        for spec, port in zip(clients, node_ports, strict=False):
            name = f"supernode-{spec.partition_id}-{spec.role}"
            federation.start(
                name,
                supernode_argv(
                    superlink=f"127.0.0.1:{fleet_port}",
                    port=port,
                    node_config=spec.node_config(),
                    executable=str(BIN / "flower-supernode"),
                ),
            )
        print(
            f"byzflower: {len(clients)} SuperNodes ({args.byzantine} byzantine, "
            f"attack {config.attack}); rule {config.rule}, f={config.num_byzantine}"
        )
        write_connection(flwr_home, control_port)
        run_id = submit(out_dir / "run-config.toml", env)
        print(f"byzflower: run {run_id} submitted; following its log")

        deadline = (
            time.monotonic() + config.num_server_rounds * config.round_timeout * 2 + 300
        )
        for line in follow_log(run_id, env, out_dir, deadline, federation):
            if SHOWN.search(line):
                print("  " + _strip_prefix(line), flush=True)
        status, details = _final_status(run_id, env)
        if status != "finished:completed":
            print(
                f"byzflower run: run {run_id} ended as {status}: {details}",
                file=sys.stderr,
            )
            print(
                f"  ServerApp log: {out_dir / 'logs' / 'serverapp.log'}",
                file=sys.stderr,
            )
            return 1
        print_table(out_dir)
        print(f"byzflower: run {run_id} completed; results in {out_dir}")
        return 0
    except KeyboardInterrupt:
        print("byzflower run: interrupted; stopping the federation", file=sys.stderr)
        return 130
    except LaunchError as error:
        print(f"byzflower run: {error}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as error:
        print(
            f"byzflower run: the SuperLink did not answer `{' '.join(error.cmd[1:3])}`"
            f" within {error.timeout:.0f}s",
            file=sys.stderr,
        )
        return 1
    finally:
        federation.stop()
        signal.signal(signal.SIGTERM, previous)


def _final_status(run_id: int, env: dict[str, str]) -> tuple[str, str]:
    """Poll the run's status until it is finished (bounded to a minute)."""
    status, details = run_status(run_id, env)
    deadline = time.monotonic() + 60
    while not status.startswith("finished") and time.monotonic() < deadline:
        time.sleep(2)
        status, details = run_status(run_id, env)
    return status, details


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _strip_prefix(line: str) -> str:
    """Drop colour codes and Flower's ``INFO :`` level prefix from a log line."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
    return re.sub(r"^\s*(INFO|DEBUG)\s*:\s*", "", plain)


#: Run-config keys that ``byzflower run`` flags set; ``--set`` may not.
FLAG_KEYS = {
    "rule": "--rule",
    "num-byzantine": "--byzantine / --assume-f",
    "num-server-rounds": "--rounds",
    "num-clients": "--clients",
    "attack": "--attack",
    "seed": "--seed",
    "out-dir": "--out",
    "num-selected": "--num-selected",
}


def check_flags(args: argparse.Namespace) -> None:
    """Check the launcher's own flags, naming the flag, its value and the range.

    Raises:
        ConfigError: on the first flag out of range.
    """
    if args.clients < 1:
        raise ConfigError(f"--clients={args.clients}: at least 1 SuperNode")
    if not 0 <= args.byzantine <= args.clients:
        raise ConfigError(
            f"--byzantine={args.byzantine}: allowed 0..{args.clients} (--clients)"
        )
    if args.assume_f is not None and args.assume_f < 0:
        raise ConfigError(f"--assume-f={args.assume_f}: must be >= 0")
    if args.rounds < 1:
        raise ConfigError(f"--rounds={args.rounds}: at least 1")


def run_overrides(args: argparse.Namespace, out_dir: Path) -> dict[str, object]:
    """The run config this launch submits: flags, then ``--set`` pairs.

    Raises:
        ConfigError: a ``--set`` without ``=``, or for a key a flag owns.
    """
    values: dict[str, object] = {
        "rule": args.rule,
        "num-byzantine": args.assume_f if args.assume_f is not None else args.byzantine,
        "num-server-rounds": args.rounds,
        "num-clients": args.clients,
        "attack": args.attack,
        "seed": args.seed,
        "out-dir": str(out_dir),
    }
    if args.num_selected is not None:
        values["num-selected"] = args.num_selected
    for pair in args.set or []:
        key, equals, raw = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        if key in FLAG_KEYS:
            raise ConfigError(f"--set {key}=...: use {FLAG_KEYS[key]} instead")
        values[key] = _parse_value(raw.strip())
    return values


def _parse_value(raw: str) -> object:
    """A ``--set`` value: int, float, or string (quotes optional)."""
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw.strip("'\"")


def print_table(out_dir: Path) -> None:
    """Print round, accuracy, κ̂_hon, κ̂_worst, bound and Byzantine selections."""
    path = out_dir / "rounds.jsonl"
    if not path.exists():
        print("(no rounds.jsonl)")
        return
    rounds = [json.loads(line) for line in path.read_text().splitlines() if line]
    columns = (
        ("round", "round", "d"),
        ("acc", "accuracy", ".3f"),
        ("κ̂_hon", "kappa_hon", ".3g"),
        ("κ̂_worst", "kappa_worst", ".3g"),
        ("bound", "bound_upper", ".3g"),
        ("byz sel.", "byzantine_selected", "d"),
        ("rejected", "rejected", "d"),
    )
    print("  ".join(f"{title:>9}" for title, _, _ in columns))
    for record in rounds:
        cells = (_cell(record.get(key), spec) for _, key, spec in columns)
        print("  ".join(f"{cell:>9}" for cell in cells))


def _cell(value: object, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``byzflower run`` options."""
    parser.add_argument(
        "--clients", type=int, default=10, help="number of SuperNodes (n)"
    )
    parser.add_argument(
        "--byzantine", type=int, default=3, help="how many of them attack"
    )
    parser.add_argument("--attack", choices=ATTACKS, default="alie")
    parser.add_argument("--rule", choices=RULES, default="multikrum")
    parser.add_argument(
        "--assume-f",
        type=int,
        default=None,
        help="f the rule assumes (default: --byzantine)",
    )
    parser.add_argument("--num-selected", type=int, default=None, help="MultiKrum's m")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/latest", help="results directory")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any other run-config key, e.g. --set local-epochs=3 (repeatable)",
    )


__all__ = ["LaunchError", "RunConfig", "add_arguments", "launch"]
