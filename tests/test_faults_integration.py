"""Bad clients in a real federation: the server rejects, logs and goes on.

Eight real SuperNodes: four honest, and four whose ClientApp sends a NaN
model, a tensor of the wrong shape, claims 10¹² examples, or raises. After
the first round one honest SuperNode is killed. The run must complete,
every bad reply must be logged with its node id and reason, and the model
must still learn.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from server.launcher import APP_DIR
from server.services import ClientSpec
from tests.federation import LocalFederation, processes_in

pytestmark = pytest.mark.integration

FAULTS = ("nan", "wrong-shape", "raise", "huge-num-examples")


def test_bad_replies_and_a_dead_node_do_not_stop_the_run(tmp_path: Path) -> None:
    n = 4 + len(FAULTS)
    clients = [ClientSpec(i, n, "honest") for i in range(4)] + [
        ClientSpec(4 + k, n, "honest", fault=fault) for k, fault in enumerate(FAULTS)
    ]
    out = tmp_path / "out"
    workdir = tmp_path / "federation"
    workdir.mkdir()
    with LocalFederation(workdir, clients) as federation:
        run_id = federation.submit(
            APP_DIR,
            {
                "rule": "multikrum",
                "num-byzantine": 1,
                "num-clients": n,
                "num-server-rounds": 3,
                "round-timeout": 75.0,
                "out-dir": str(out),
            },
        )
        rounds_file = out / "rounds.jsonl"
        deadline = time.monotonic() + 300
        while not rounds_file.exists() and time.monotonic() < deadline:
            time.sleep(2)
        assert rounds_file.exists(), federation.log(run_id)
        name, victim = federation.processes.processes.pop(1)  # an honest SuperNode
        assert name == "supernode-0"
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)

        status, details = federation.wait(run_id, timeout=900)
        log = federation.log(run_id)
        assert status == "finished:completed", f"{details}\n{log}"

    assert processes_in(workdir) == []
    rounds = [json.loads(line) for line in rounds_file.read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    first = rounds[0]
    assert first["accepted"] == 4 and first["rejected"] == len(FAULTS)
    reasons = sorted(r["reason"] for r in first["rejections"])
    assert any("non-finite" in reason for reason in reasons), reasons
    assert any("shape" in reason for reason in reasons), reasons
    assert any("error reply" in reason for reason in reasons), reasons
    assert any("'num-examples' = 1000000000000" in reason for reason in reasons)
    for rejection in first["rejections"]:
        assert f"rejected reply from node {rejection['node_id']}" in log
    # the killed node is gone from later rounds, the others carried on
    assert rounds[-1]["accepted"] == 3
    assert rounds[-1]["accuracy"] >= 0.8
