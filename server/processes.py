"""The processes of a local federation, and every process they start.

A SuperLink starts a SuperExec in a process group of its own, and the
SuperExec starts the ServerApp; a SuperNode starts one ClientApp process per
message. Signalling our children's process groups does not reach all of
those, and when a SuperLink dies its descendants are re-parented away from
us. So :class:`Federation` records every descendant it sees (pid and start
time, so a reused pid is never signalled), can make the launcher a child
subreaper (orphans are re-parented to it instead of to init), and stops the
whole tree by pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: prctl option that makes orphaned descendants re-parent to this process.
PR_SET_CHILD_SUBREAPER = 36


class LaunchError(RuntimeError):
    """The federation could not be started or the run did not complete."""


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process: pid → (parent pid, start time in clock ticks).

    Zombies (exited, not yet reaped) are left out: they run nothing.
    """
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the command name, which may itself hold spaces and ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(roots: Iterable[int], table: dict[int, tuple[int, int]]) -> set[int]:
    """Pids below ``roots`` in ``table`` (the roots excluded)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    frontier = list(roots)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


@dataclass
class Federation:
    """The child processes of one local federation and all they start.

    ``adopt_orphans``: also track this process's direct children that it did
    not start (orphans re-parented to a subreaper launcher).
    """

    out_dir: Path
    env: dict[str, str]
    adopt_orphans: bool = False
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)
    reported_dead: set[str] = field(default_factory=set)

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own process group, its output in logs/<name>.log."""
        logs = self.out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{name}.log").open("wb") as log_file:
            process = subprocess.Popen(
                list(argv),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.out_dir,
                start_new_session=True,
            )
        self.processes.append((name, process))
        return process

    def track(self) -> dict[int, tuple[int, int]]:
        """Record every live descendant of the processes we started."""
        table = process_table()
        roots = [process.pid for _, process in self.processes]
        if self.adopt_orphans:
            ours = {process.pid for _, process in self.processes}
            roots += [
                pid
                for pid, (parent, _) in table.items()
                if parent == os.getpid() and pid not in ours
            ]
        for pid in descendants(roots, table) | set(roots):
            self.seen.setdefault(pid, table[pid][1] if pid in table else -1)
        return table

    def check(self, essential: str = "superlink") -> list[str]:
        """Raise if ``essential`` died; return the names of newly dead others."""
        self.track()
        newly_dead = []
        for name, process in self.processes:
            if process.poll() is None:
                continue
            if name == essential:
                tail = _tail(self.out_dir / "logs" / f"{name}.log")
                raise LaunchError(
                    f"{name} exited with code {process.returncode}:\n{tail}"
                )
            if name not in self.reported_dead:
                self.reported_dead.add(name)
                newly_dead.append(f"{name} (exit code {process.returncode})")
        return newly_dead

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the whole tree (SuperNodes first), SIGKILL what is left."""
        self.track()
        for _, process in reversed(self.processes):
            _signal_group(process.pid, signal.SIGTERM)
        self._signal_seen(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in reversed(self.processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        while self._alive_seen() and time.monotonic() < deadline:
            self._reap_adopted()
            time.sleep(0.2)
        self.track()
        for _, process in self.processes:
            _signal_group(process.pid, signal.SIGKILL)
        self._signal_seen(signal.SIGKILL)
        for _, process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._reap_adopted()
        self.processes.clear()

    def _alive_seen(self) -> list[int]:
        table = process_table()
        return [
            pid
            for pid, start in self.seen.items()
            if table.get(pid, (0, -2))[1] == start
        ]

    def _signal_seen(self, sig: int) -> None:
        for pid in self._alive_seen():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _reap_adopted(self) -> None:
        """Collect the exit status of orphans a subreaper adopted (no zombies)."""
        if not self.adopt_orphans:
            return
        ours = {process.pid for _, process in self.processes}
        for pid in list(self.seen):
            if pid in ours:
                continue
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
