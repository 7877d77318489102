"""Submit a byzflower run to a SuperLink, follow its log, exit with its outcome.

Used by the one-host compose file's ``submit`` service, and usable from a
laptop. Only Flower's own CLI is driven: ``flwr run`` submits, ``flwr log``
follows, ``flwr ls --run-id`` reads the status. ``flwr run --stream`` exits 0
even when the run failed, so the exit code here comes from the status:
0 for ``finished:completed``, 1 otherwise.

    python docker/submit.py --app . --superlink HOST:8000 \
        --root-certificates certs/ca.crt --run-config "rule='krum'"

The CLI connection named ``--connection`` is added to
``$FLWR_HOME/config.toml`` (default ``~/.flwr``); nothing else in the file is
touched. A connection of that name that is already there is used only if its
address and certificate settings are the ones given here; otherwise the
script stops and says so, rather than silently submitting elsewhere.

``flwr`` is ``--flwr`` if given, else the one beside the Python running this
script (the venv's bin, so the venv need not be activated), else the first on
PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def find_flwr(explicit: str | None) -> str:
    """Return the ``flwr`` executable to drive, or exit saying where it looked.

    ``explicit`` (``--flwr``) wins; then the ``flwr`` beside this interpreter
    (a venv's bin, found without activating the venv); then PATH.
    """
    if explicit is not None:
        found = shutil.which(explicit)
        if found is None:
            raise SystemExit(f"submit: --flwr {explicit!r} is not an executable")
        return found
    beside = Path(sys.executable).parent
    found = shutil.which("flwr", path=str(beside)) or shutil.which("flwr")
    if found is None:
        raise SystemExit(
            f"submit: no flwr executable beside {sys.executable} nor on PATH. "
            "Run this script with the Python of byzflower's venv "
            "(.venv/bin/python docker/submit.py ...) or pass --flwr PATH."
        )
    return found


def connection_settings(
    address: str, root_certificates: Path | None
) -> dict[str, object]:
    """Return the keys of one SuperLink connection table (TLS unless no CA)."""
    if root_certificates is None:
        return {"address": address, "insecure": True}
    return {"address": address, "root-certificates": str(root_certificates.resolve())}


def connection_toml(name: str, settings: dict[str, object]) -> str:
    """Return ``settings`` as the TOML table ``[superlink.NAME]``.

    Strings are written as JSON strings, which are TOML basic strings.
    """
    lines = [f"[superlink.{name}]"]
    for key, value in settings.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        else:
            rendered = json.dumps(str(value), ensure_ascii=False)
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def settings_differ(
    existing: dict[str, object], wanted: dict[str, object]
) -> list[str]:
    """Return one line per setting on which ``existing`` and ``wanted`` disagree.

    Compared: the address, the CA path (resolved) and ``insecure`` (absent
    means false, Flower's default).
    """
    found = dict(existing)
    if "root-certificates" in found:
        found["root-certificates"] = str(
            Path(str(found["root-certificates"])).resolve()
        )
    differences = []
    for key in ("address", "root-certificates", "insecure"):
        default = False if key == "insecure" else None
        have, want = found.get(key, default), wanted.get(key, default)
        if have != want:
            differences.append(f"{key}: {have!r} in the file, {want!r} asked for")
    return differences


def ensure_connection(name: str, address: str, root_certificates: Path | None) -> None:
    """Add connection ``name`` to config.toml; accept an identical existing one.

    Raises:
        SystemExit: a connection ``name`` exists with another address or other
            certificate settings; the message lists the differences.
    """
    config = flwr_home() / "config.toml"
    wanted = connection_settings(address, root_certificates)
    table = connection_toml(name, wanted)
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[superlink]\ndefault = "{name}"\n\n{table}')
        return
    existing = tomllib.loads(config.read_text()).get("superlink", {})
    if name not in existing:
        with config.open("a") as sink:
            sink.write(f"\n{table}")
        return
    differences = settings_differ(existing[name], wanted)
    if differences:
        raise SystemExit(
            f"submit: {config} already has a connection '{name}' that differs "
            f"from this command's: {'; '.join(differences)}. Pass another "
            f"--connection NAME, or edit or delete [superlink.{name}] there."
        )
    print(f"submit: using connection '{name}' from {config}", file=sys.stderr)


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
    parser.add_argument(
        "--flwr", help="the flwr executable (default: beside python, else PATH)"
    )
    parser.add_argument("--wait-superlink-s", type=float, default=180.0)
    parser.add_argument("--timeout-s", type=float, default=24 * 3600.0)
    parser.add_argument("--poll-s", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Submit, follow and report one run; return 0 iff it completed."""
    args = parse_args(argv)
    flwr = find_flwr(args.flwr)
    ensure_connection(args.connection, args.superlink, args.root_certificates)
    wait_for_superlink(flwr, args.connection, args.wait_superlink_s)

    run_args = ["run", str(args.app), args.connection]
    if args.run_config:
        run_args += ["--run-config", args.run_config]
    submitted = flwr_json(flwr, *run_args, timeout_s=600.0)
    run_id = submitted.get("run-id")
    if not submitted.get("success") or run_id is None:
        print(f"submit: the run was not started: {submitted}", file=sys.stderr)
        return 1
    print(f"submit: run {run_id} started", file=sys.stderr, flush=True)

    status, details = follow(
        flwr, args.connection, str(run_id), args.timeout_s, args.poll_s
    )
    print(f"submit: run {run_id} {status} {details}".rstrip(), file=sys.stderr)
    return 0 if status == COMPLETED else 1


if __name__ == "__main__":
    raise SystemExit(main())
