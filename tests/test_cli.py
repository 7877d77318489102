"""The byzflower command line: bounds and argument errors."""

from __future__ import annotations

import math

import pytest

from server.cli import main


def test_bounds_prints_every_rule_with_closed_form_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bounds", "--n", "12", "--f", "2"]) == 0
    out = capsys.readouterr().out
    c = (1 - 2 / 12) / (1 - 4 / 12)  # 1.25
    multikrum_m10 = (
        c * min(math.sqrt(2) + 1, (math.sqrt(8) + 2) / math.sqrt(10) + 0.2) ** 2
    )
    for rule in ("mean", "krum", "multikrum", "geomed"):
        assert f"\n{rule}" in "\n" + out
    assert f"{4 * c * c:.4g}" in out  # GeomMed ≤ 4c² = 6.25
    assert f"{multikrum_m10:.4g}" in out
    assert "read from slides" in out


def test_bounds_with_an_impossible_f_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bounds", "--n", "4", "--f", "4"]) == 2
    assert "f" in capsys.readouterr().err


def test_run_rejects_f_too_large_before_starting_anything(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    code = main(
        [
            "run",
            "--clients",
            "5",
            "--byzantine",
            "1",
            "--rule",
            "multikrum",
            "--num-selected",
            "5",
            "--out",
            str(tmp_path / "never"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "num-selected=5" in err and "allowed 1..4" in err
    assert not (tmp_path / "never").exists()


def test_run_rejects_an_ill_typed_set_value(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    code = main(["run", "--set", "learning-rate=fast", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "learning-rate='fast'" in capsys.readouterr().err
