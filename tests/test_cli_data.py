"""The data commands' exit codes and messages: validate passes, fails with 1, quarantines, bad flags."""

from __future__ import annotations

import pandas as pd
import typer
from typer.testing import CliRunner

from safetyml.cli import app
from tests.test_contract import valid_frames

runner = CliRunner()


def _write(frames: dict[str, pd.DataFrame], folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        df.to_csv(folder / f"{name}.csv", index=False)


def test_validate_ok_exits_zero_and_counts_rows(tmp_path):
    _write(valid_frames(), tmp_path / "d")
    result = runner.invoke(app, ["validate", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "contract OK" in result.output
    assert "trips" in result.output


def test_validate_invalid_exits_one_and_names_table_column_rule(tmp_path):
    frames = valid_frames()
    frames["trips"].loc[1, "payment_method"] = "barter"
    _write(frames, tmp_path / "d")
    result = runner.invoke(app, ["validate", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert (
        "table 'trips', column 'payment_method': rule allowed_values failed for 1 row(s); e.g. T2"
        in result.output
    )


def test_validate_quarantine_exits_zero_and_writes_rows(tmp_path):
    frames = valid_frames()
    frames["trips"].loc[1, "payment_method"] = "barter"
    _write(frames, tmp_path / "d")
    result = runner.invoke(app, ["validate", str(tmp_path / "d"), "--on-invalid", "quarantine"])
    assert result.exit_code == 0, result.output
    quarantined = pd.read_parquet(tmp_path / "d" / "quarantine" / "trips.parquet")
    assert quarantined["trip_id"].tolist() == ["T2"]


def test_validate_missing_folder_and_bad_option_exit_two(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    _write(valid_frames(), tmp_path / "d")
    result = runner.invoke(app, ["validate", str(tmp_path / "d"), "--on-invalid", "ignore"])
    assert result.exit_code == 2
    assert "--on-invalid must be raise or quarantine" in result.output


def _command_paths(command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if getattr(command, "commands", None):
        for name, sub in command.commands.items():
            paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


def test_every_command_and_sub_command_has_help():
    paths = _command_paths(typer.main.get_command(app))
    assert ("validate",) in paths and ("simulate",) in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
