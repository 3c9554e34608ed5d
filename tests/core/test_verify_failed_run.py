"""Output paths that hold no dataset: verify on such a folder, and -o naming a file.

A failed run commits only its report.json (the previous dataset, if any, stays live), so a
first run that failed leaves a folder with a report and no dataset_info.yaml: verify says
so in one problem, naming the failure. An -o that is a file (or lies under one) is a usage
error before the export is read, not a permission problem.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from converter.cli import app
from converter.core.commit import REPORT, OutputFolder
from converter.core.verify import verify_dataset
from converter.errors import UsageError

from .gt_export import write_detection_export


def _failed_run(tmp_path: Path) -> tuple[Path, str]:
    """(output folder, its report's failure) of a real conversion that failed: no image is found."""
    manifest = write_detection_export(tmp_path / "export", count=3)
    shutil.rmtree(tmp_path / "export" / "images")
    (tmp_path / "no-images").mkdir()
    output = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["convert", "-a", str(manifest), "-i", str(tmp_path / "no-images"), "-o", str(output)]
    )
    assert result.exit_code == 1, result.output
    assert not (output / "dataset_info.yaml").exists()
    failure = json.loads((output / REPORT).read_text(encoding="utf-8"))["summary"]["failure"]
    assert isinstance(failure, str)
    return output, failure


def test_a_failed_runs_folder_names_the_failure_and_the_report(tmp_path: Path) -> None:
    output, failure = _failed_run(tmp_path)

    result = verify_dataset(output / "dataset_info.yaml")

    assert result.problems == [
        f"no dataset here: {output} has no dataset_info.yaml; the last run failed: {failure}; see {output / REPORT}"
    ]
    assert result.records == 0


def test_a_folder_without_dataset_or_report_says_convert_into_it_first(tmp_path: Path) -> None:
    result = verify_dataset(tmp_path / "dataset_info.yaml")

    assert result.problems == [f"no dataset here: {tmp_path} has no dataset_info.yaml; convert into it first"]


def test_a_report_without_a_failure_is_no_dataset_either(tmp_path: Path) -> None:
    (tmp_path / REPORT).write_text('{"summary": {"status": "ok", "failure": null}}', encoding="utf-8")

    result = verify_dataset(tmp_path / "dataset_info.yaml")

    assert result.problems == [f"no dataset here: {tmp_path} has no dataset_info.yaml; convert into it first"]


def test_a_huge_report_is_read_from_its_summary_only(tmp_path: Path) -> None:
    """The entries after the summary may take gigabytes; a damaged tail does not matter either."""
    summary = {"status": "failed", "failure": "too many skips:\n 9 of 10"}
    (tmp_path / REPORT).write_text(
        '{\n  "summary": ' + json.dumps(summary, indent=2) + ',\n  "skipped": [' + "x" * (1 << 20), encoding="utf-8"
    )

    (problem,) = verify_dataset(tmp_path / "dataset_info.yaml").problems

    assert "the last run failed: too many skips: 9 of 10; see" in problem  # one line, whatever the failure held


def test_the_verify_command_prints_one_error_line_and_exits_1(tmp_path: Path) -> None:
    output, failure = _failed_run(tmp_path)

    result = CliRunner().invoke(app, ["verify", str(output)])

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"ERROR: no dataset here: {output} has no dataset_info.yaml; the last run failed: {failure}; "
        f"see {output / REPORT}"
    ]


# --- -o that is a file ----------------------------------------------------------------------------


def test_an_output_path_that_is_a_file_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine", encoding="utf-8")

    with pytest.raises(UsageError) as raised, OutputFolder(afile).locked():
        pytest.fail("the lock was taken on a file")

    assert str(raised.value) == f"-o {afile} is a file; the output must be a folder (it is created if absent)"
    assert afile.read_text(encoding="utf-8") == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]


def test_an_output_path_under_a_file_names_that_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine", encoding="utf-8")
    output = afile / "sub" / "out"

    with pytest.raises(UsageError) as raised, OutputFolder(output).locked():
        pytest.fail("the lock was taken under a file")

    assert str(raised.value) == (
        f"-o {output} lies under {afile}, which is a file; the output must be a folder (it is created if absent)"
    )


def test_convert_into_a_file_is_a_usage_error_with_one_error_line(tmp_path: Path) -> None:
    manifest = write_detection_export(tmp_path / "export", count=2)
    afile = tmp_path / "afile"
    afile.write_text("mine", encoding="utf-8")

    result = CliRunner().invoke(app, ["convert", "-a", str(manifest), "-o", str(afile)])

    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: -o {afile} is a file; the output must be a folder (it is created if absent)"]
    assert afile.read_text(encoding="utf-8") == "mine"
