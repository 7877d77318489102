"""Submit a byzflower run to a SuperLink, follow its log, exit with its outcome.

Used by the one-host compose file's ``submit`` service, and usable from a
laptop. Only Flower's own CLI is driven: ``flwr run`` submits, ``flwr log``
follows, ``flwr ls --run-id`` reads the status. ``flwr run --stream`` exits 0
even when the run failed, so the exit code here comes from the status:
0 for ``finished:completed``, 1 otherwise.

    python docker/submit.py --app . --superlink HOST:8000 \
        --root-certificates certs/ca.crt --run-config "rule='krum'"

The CLI connection named ``--connection`` is written to
``$FLWR_HOME/config.toml`` (default ``~/.flwr``) unless a connection of that
name exists already; nothing else in the file is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

COMPLETED = "finished:completed"


def flwr_home() -> Path:
    """Return the Flower CLI's home directory ($FLWR_HOME, else ~/.flwr)."""
    return Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))


def connection_toml(name: str, address: str, root_certificates: Path | None) -> str:
    """Return the TOML table of one SuperLink connection (TLS unless no CA)."""
    lines = [f"[superlink.{name}]", f'address = "{address}"']
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{root_certificates.resolve()}"')
    return "\n".join(lines) + "\n"


def ensure_connection(name: str, address: str, root_certificates: Path | None) -> None:
    """Add connection ``name`` to config.toml unless it is already there."""
    config = flwr_home() / "config.toml"
    table = connection_toml(name, address, root_certificates)
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[superlink]\ndefault = "{name}"\n\n{table}')
        return
    existing = tomllib.loads(config.read_text())
    if name in existing.get("superlink", {}):
        print(f"submit: using connection '{name}' from {config}", file=sys.stderr)
        return
    with config.open("a") as sink:
        sink.write(f"\n{table}")


def flwr_json(flwr: str, *args: str, timeout_s: float = 120.0) -> dict:
    """Run ``flwr ARGS --format json``; return its JSON ({} if none came)."""
    done = subprocess.run(
        [flwr, *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}


def wait_for_superlink(flwr: str, connection: str, timeout_s: float) -> None:
    """Poll ``flwr ls`` until the SuperLink answers, for at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = flwr_json(flwr, "ls", connection)
        if reply.get("success") is True:
            return
        if time.monotonic() > deadline:
            message = reply.get("error-message", "no answer")
            raise SystemExit(f"submit: SuperLink not reachable: {message}")
        time.sleep(3)


def run_status(flwr: str, connection: str, run_id: str) -> tuple[str, str]:
    """Return (status, status-details) of one run; ("", "") if unknown."""
    reply = flwr_json(flwr, "ls", connection, "--run-id", run_id)
    for run in reply.get("runs", []):
        if str(run.get("run-id")) == run_id:
            return str(run.get("status", "")), str(run.get("status-details", ""))
    return "", ""


def follow(
    flwr: str, connection: str, run_id: str, timeout_s: float, poll_s: float
) -> tuple[str, str]:
    """Stream the run's log while polling its status until it finishes.

    Returns the final (status, details); ("timeout", ...) after ``timeout_s``.
    """
    streamer = subprocess.Popen([flwr, "log", run_id, connection, "--stream"])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            status, details = run_status(flwr, connection, run_id)
            if status.startswith("finished"):
                time.sleep(min(poll_s, 5.0))  # let the log stream catch up
                return status, details
            time.sleep(poll_s)
        return "timeout", f"not finished after {timeout_s:.0f} s"
    finally:
        streamer.terminate()
        try:
            streamer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            streamer.kill()
            streamer.wait(timeout=10)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=Path("."), help="app directory")
    parser.add_argument("--superlink", required=True, help="SuperLink host:8000")
    security = parser.add_mutually_exclusive_group(required=True)
    security.add_argument("--root-certificates", type=Path, help="CA certificate")
    security.add_argument("--insecure", action="store_true", help="no TLS")
    parser.add_argument("--run-config", help="TOML key=value pairs for the run")
    parser.add_argument("--connection", default="byzflower")
    parser.add_argument("--flwr", default="flwr", help="the flwr executable")
    parser.add_argument("--wait-superlink-s", type=float, default=180.0)
    parser.add_argument("--timeout-s", type=float, default=24 * 3600.0)
    parser.add_argument("--poll-s", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Submit, follow and report one run; return 0 iff it completed."""
    args = parse_args(argv)
    ensure_connection(args.connection, args.superlink, args.root_certificates)
    wait_for_superlink(args.flwr, args.connection, args.wait_superlink_s)

    run_args = ["run", str(args.app), args.connection]
    if args.run_config:
        run_args += ["--run-config", args.run_config]
    submitted = flwr_json(args.flwr, *run_args, timeout_s=600.0)
    run_id = submitted.get("run-id")
    if not submitted.get("success") or run_id is None:
        print(f"submit: the run was not started: {submitted}", file=sys.stderr)
        return 1
    print(f"submit: run {run_id} started", file=sys.stderr, flush=True)

    status, details = follow(
        args.flwr, args.connection, str(run_id), args.timeout_s, args.poll_s
    )
    print(f"submit: run {run_id} {status} {details}".rstrip(), file=sys.stderr)
    return 0 if status == COMPLETED else 1


if __name__ == "__main__":
    raise SystemExit(main())
