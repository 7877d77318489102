"""A real local Flower federation for integration tests.

A SuperLink and SuperNodes as child processes on loopback, started with the
launcher's own command lines (server.services), and the ``flwr`` CLI pointed
at them through a private FLWR_HOME. Everything started is stopped by pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from server.launcher import (
    BIN,
    CONNECTION,
    federation_env,
    free_ports,
    run_config_toml,
    wait_for_port,
    write_connection,
)
from server.processes import Federation
from server.services import ClientSpec, superlink_argv, supernode_argv


class LocalFederation:
    """SuperLink + SuperNodes on 127.0.0.1, and helpers to run apps on them."""

    def __init__(self, workdir: Path, clients: Sequence[ClientSpec]) -> None:
        self.workdir = workdir
        self.clients = list(clients)
        self.flwr_home = workdir / "flwr-home"
        self.env = federation_env(self.flwr_home)
        self.processes = Federation(workdir, self.env)

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.processes.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.processes.stop()

    def start(self) -> None:
        ports = free_ports(2 + len(self.clients))
        control, fleet = ports[0], ports[1]
        self.processes.start(
            "superlink",
            superlink_argv(
                port=control,
                fleet_address=f"127.0.0.1:{fleet}",
                database=str(self.workdir / "superlink.db"),
                executable=str(BIN / "flower-superlink"),
            ),
        )
        wait_for_port(control, 60, self.processes)
        wait_for_port(fleet, 60, self.processes)
        for spec, port in zip(self.clients, ports[2:], strict=False):
            self.processes.start(
                f"supernode-{spec.partition_id}",
                supernode_argv(
                    superlink=f"127.0.0.1:{fleet}",
                    port=port,
                    node_config=spec.node_config(),
                    executable=str(BIN / "flower-supernode"),
                ),
            )
        write_connection(self.flwr_home, control)

    @property
    def pids(self) -> list[int]:
        return [process.pid for _, process in self.processes.processes]

    def flwr(self, *args: str, timeout: float = 120, cwd: Path | None = None) -> str:
        completed = subprocess.run(
            [str(BIN / "flwr"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or self.workdir,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return completed.stdout

    def submit(self, app_dir: Path, run_config: dict[str, object]) -> int:
        """``flwr run APP CONNECTION --run-config FILE --format json`` → run id."""
        config_file = self.workdir / f"run-config-{time.monotonic_ns()}.toml"
        config_file.write_text(run_config_toml(run_config))
        output = self.flwr(
            "run",
            str(app_dir),
            CONNECTION,
            "--run-config",
            str(config_file),
            "--format",
            "json",
        )
        return int(json.loads(output[output.index("{") :])["run-id"])

    def status(self, run_id: int) -> tuple[str, str]:
        output = self.flwr(
            "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"
        )
        run = json.loads(output[output.index("{") :])["runs"][0]
        return str(run["status"]), str(run.get("status-details", ""))

    def wait(self, run_id: int, timeout: float) -> tuple[str, str]:
        """Poll the run's status until it is finished (bounded)."""
        deadline = time.monotonic() + timeout
        status, details = self.status(run_id)
        while not status.startswith("finished") and time.monotonic() < deadline:
            self.processes.check()
            time.sleep(3)
            status, details = self.status(run_id)
        if not status.startswith("finished"):
            subprocess.run(
                [str(BIN / "flwr"), "stop", str(run_id), CONNECTION],
                env=self.env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        return status, details

    def log(self, run_id: int) -> str:
        return self.flwr("log", str(run_id), CONNECTION, "--show")


def processes_in(directory: Path) -> list[int]:
    """Pids of live processes whose working directory is inside ``directory``."""
    found = []
    root = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            found.append(int(entry.name))
    return found
