"""Real Flower federations on loopback: SuperLink and SuperNodes as processes.

One federation of 5 SuperNodes (3 honest, 2 Byzantine sign-flip) serves the
MultiKrum run, the Mean run, a run with a bad config, and a tiny Flower app
written here as a user would. The launcher is tested end to end separately.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.launcher import APP_DIR, BIN
from server.services import federation_clients
from tests.federation import LocalFederation, processes_in

pytestmark = pytest.mark.integration

ROUNDS = 4
FAST = {
    "num-server-rounds": ROUNDS,
    "num-clients": 5,
    "num-byzantine": 2,
    "attack": "sign-flip",
    "round-timeout": 90.0,
    "local-epochs": 2,
}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    workdir = tmp_path_factory.mktemp("federation")
    with LocalFederation(workdir, federation_clients(5, 2, "sign-flip")) as running:
        yield running
    assert processes_in(workdir) == [], "a process of the federation outlived it"


def run_ours(
    federation: LocalFederation, out_dir: Path, **overrides: object
) -> list[dict]:
    run_id = federation.submit(APP_DIR, {**FAST, "out-dir": str(out_dir), **overrides})
    status, details = federation.wait(run_id, timeout=ROUNDS * 90 + 120)
    assert status == "finished:completed", (
        f"{status}: {details}\n{federation.log(run_id)}"
    )
    return [
        json.loads(line) for line in (out_dir / "rounds.jsonl").read_text().splitlines()
    ]


def test_multikrum_resists_sign_flip_and_mean_collapses(
    federation: LocalFederation, tmp_path: Path
) -> None:
    robust = run_ours(federation, tmp_path / "multikrum", rule="multikrum")
    plain = run_ours(federation, tmp_path / "mean", rule="mean")

    assert [r["round"] for r in robust] == list(range(1, ROUNDS + 1))
    for record in robust:
        for key in ("kappa_hon", "kappa_worst", "kappa_worst_exact", "bound_upper"):
            assert key in record, key
        assert record["accepted"] == 5 and record["byzantine_accepted"] == 2
        assert record["byzantine_selected"] == 0
        assert record["kappa_hon"] <= record["bound_upper"]
        assert record["kappa_worst"] <= record["bound_upper"]
    assert robust[-1]["accuracy"] >= 0.8
    assert plain[-1]["accuracy"] <= 0.3
    assert robust[-1]["accuracy"] - plain[-1]["accuracy"] >= 0.5
    summary = json.loads((tmp_path / "multikrum" / "summary.json").read_text())
    assert summary["final_accuracy"] == robust[-1]["accuracy"]
    assert (tmp_path / "multikrum" / "report.png").stat().st_size > 10_000
    assert (tmp_path / "multikrum" / "model.pt").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"rule": "kurm"}, "rule='kurm'"),
        ({"rule": "krum", "num-byzantine": 3}, "num-byzantine=3"),
        ({"rule": "multikrum", "num-selected": 4}, "num-selected=4"),
    ],
)
def test_flwr_run_with_a_bad_config_fails_fast_naming_the_key(
    federation: LocalFederation, tmp_path: Path, overrides: dict, expected: str
) -> None:
    run_id = federation.submit(APP_DIR, {**FAST, "out-dir": str(tmp_path), **overrides})
    status, details = federation.wait(run_id, timeout=120)
    assert status == "finished:failed", details
    assert expected in federation.log(run_id)
    assert not (tmp_path / "rounds.jsonl").exists()


USER_PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "someones-app"
version = "1.0.0"
dependencies = ["flwr==1.39.0"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "someone"

[tool.flwr.app.components]
serverapp = "someones_server:app"
clientapp = "someones_client:app"

[tool.flwr.app.config]
num-server-rounds = 2
"""

USER_SERVER = """
import json
import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from strategies import MultiKrum

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = MultiKrum(num_byzantine=2, fraction_evaluate=0.0, min_available_nodes=5)
    start = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    result = strategy.start(grid=grid, initial_arrays=start, num_rounds=2, timeout=60)
    final = result.arrays["w"].numpy()
    print("USER-RESULT", json.dumps({
        "w": final.tolist(),
        "selected": result.train_metrics_clientapp[2]["selected_node_ids"],
    }))
"""

USER_CLIENT = """
import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    w = msg.content["arrays"]["w"].numpy()
    # byzantine partitions push far away; honest ones step by +1
    step = 100.0 if context.node_config["role"] == "byzantine" else 1.0
    reply = RecordDict({
        "arrays": ArrayRecord({"w": Array((w + step).astype(np.float32))}),
        "metrics": MetricRecord({"num-examples": 10}),
    })
    return Message(content=reply, reply_to=msg)
"""


def test_a_users_own_flower_app_imports_our_multikrum(
    federation: LocalFederation, tmp_path: Path
) -> None:
    app_dir = tmp_path / "someones-app"
    app_dir.mkdir()
    (app_dir / "pyproject.toml").write_text(USER_PYPROJECT)
    (app_dir / "someones_server.py").write_text(textwrap.dedent(USER_SERVER))
    (app_dir / "someones_client.py").write_text(textwrap.dedent(USER_CLIENT))

    run_id = federation.submit(app_dir, {})
    status, details = federation.wait(run_id, timeout=240)
    log = federation.log(run_id)
    assert status == "finished:completed", f"{details}\n{log}"
    line = next(line for line in log.splitlines() if "USER-RESULT" in line)
    result = json.loads(line.split("USER-RESULT", 1)[1])
    # 3 honest nodes step +1 per round, 2 Byzantine +100. With f = 2, N(v) holds
    # 3 points: an honest reply scores 0 (its two honest twins), a Byzantine one
    # 3·99² (its twin and one honest). m = n − f = 3 keeps exactly the honest trio.
    assert result["w"] == [2.0, 2.0, 2.0]
    assert len(result["selected"]) == 3


def test_launcher_runs_end_to_end_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    completed = subprocess.run(
        [
            str(BIN / "byzflower"),
            "run",
            "--clients",
            "4",
            "--byzantine",
            "1",
            "--attack",
            "ipm",
            "--rule",
            "geomed",
            "--rounds",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "round 2 |" in completed.stdout
    assert "κ̂_worst" in completed.stdout
    assert processes_in(out) == []
    rounds = (out / "rounds.jsonl").read_text().splitlines()
    assert len(rounds) == 2


def test_launcher_rejects_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    out = tmp_path / "bad"
    completed = subprocess.run(
        [
            str(BIN / "byzflower"),
            "run",
            "--clients",
            "10",
            "--byzantine",
            "5",
            "--rule",
            "krum",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert (
        "num-byzantine=5" in completed.stderr
        and "num-byzantine <= 4" in completed.stderr
    )
    assert not (out / "logs").exists()


def start_launcher(out: Path, *flags: str, until: str) -> subprocess.Popen[str]:
    """Start ``byzflower run FLAGS --out OUT`` and read its output up to ``until``."""
    launcher = subprocess.Popen(
        [str(BIN / "byzflower"), "run", *flags, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert launcher.stdout is not None
    deadline = time.monotonic() + 180
    for line in launcher.stdout:
        if until in line or time.monotonic() > deadline:
            break
    return launcher


def test_launcher_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    flags = ("--clients", "3", "--byzantine", "0", "--rule", "mean", "--rounds", "50")
    launcher = start_launcher(out, *flags, until="submitted")
    try:
        assert len(processes_in(out)) >= 4  # superlink + 3 supernodes
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 130
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert processes_in(out) == []
    time.sleep(5)  # an orphan would still be there
    assert processes_in(out) == []


def test_launcher_names_a_dead_superlink_and_stops_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "superlink-killed"
    flags = ("--clients", "3", "--byzantine", "1", "--rule", "krum", "--rounds", "50")
    launcher = start_launcher(out, *flags, "--assume-f", "1", until="round 1 |")
    try:
        superlink = next(
            pid
            for pid in processes_in(out)
            if b"flower-superlink" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        os.kill(superlink, signal.SIGKILL)
        # the old launcher took over 60 s to notice (a status poll); now a second
        output, _ = launcher.communicate(timeout=60)
        assert launcher.returncode == 1
        assert "superlink exited with code -9" in output
    finally:
        if launcher.poll() is None:
            launcher.kill()
    time.sleep(5)
    assert processes_in(out) == []
