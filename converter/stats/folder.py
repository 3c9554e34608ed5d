"""`stats/` in a dataset: stats.json, the plots and index.html, from the records as written.

A conversion fills its `Statistics` as it writes (the parent observes every record's facts),
then calls `write_stats_folder` on its staging folder once the records and dataset_info.yaml
are there, so the previews are read back from the very records training will read; the
commit then moves `stats/` into place with everything else. `dataset-converter stats OUT`
rebuilds the same folder for an existing dataset from its records alone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from converter.core.commit import DATASET_INFO, REPORT, OutputFolder, owned_entries, write_durably, yaml_text
from converter.core.materialize import EncodedSample
from converter.core.split import SplitName
from converter.errors import UsageError
from converter.stats.facts import RecordFacts, facts_of, facts_of_sample
from converter.stats.page import PAGE, write_stats_pages
from converter.stats.statistics import Statistics
from converter.stats.written import dataset_splits, read_written_records

STATS_FOLDER = "stats"
STATS_FILE = "stats.json"
PREVIEWS_PER_SPLIT = 12
SKIPPED_ON_PAGE = 500


def write_stats_folder(
    dataset: Path, document: dict[str, Any], skipped: Sequence[Mapping[str, Any]], skipped_total: int
) -> list[str]:
    """Write `dataset/stats/` from a finished statistics document; returns what it wrote, relative to `dataset`.

    `dataset` holds the records and dataset_info.yaml (a conversion's staging folder, or a
    committed dataset); the previews are its first records of each split. `skipped` are the
    first of the run's `skipped_total` skipped samples, for the page.
    """
    folder = dataset / STATS_FOLDER
    folder.mkdir(exist_ok=True)
    document = _rounded(document)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    (folder / STATS_FILE).write_bytes(text.encode("utf-8", "backslashreplace"))  # class names are checked UTF-8
    previews = {
        split: list(read_written_records(dataset, split, with_images=True, limit=PREVIEWS_PER_SPLIT))
        for split in dataset_splits(dataset)
    }
    names = write_stats_pages(folder, document, previews, skipped, skipped_total=skipped_total)
    return [f"{STATS_FOLDER}/{name}" for name in [STATS_FILE, *names]]


def statistics_of(dataset: Path) -> Statistics:
    """The statistics of an existing dataset, from its records (one at a time: memory stays flat)."""
    info = yaml.safe_load((dataset / DATASET_INFO).read_text(encoding="utf-8"))
    statistics = Statistics(info["classes"])
    for split in dataset_splits(dataset):
        for record in read_written_records(dataset, split, with_images=False):
            statistics.add(split, facts_of(record))
    return statistics


def skipped_in_report(dataset: Path) -> tuple[list[dict[str, Any]], int]:
    """The first skipped entries of an existing dataset's report.json, for the page, and how many there are.

    The report is parsed whole: `stats` is run on demand, and a report large enough to
    matter lists millions of skipped samples, which the page would not show anyway.
    """
    try:
        document = json.loads((dataset / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], 0
    entries = document.get("skipped", [])
    return entries[:SKIPPED_ON_PAGE], len(entries)


def describe_record(encoded: EncodedSample) -> RecordFacts:
    """What statistics take from one written sample, in the worker that encoded it."""
    return facts_of_sample(encoded)


class StatisticsObserver:
    """A conversion's statistics: fed every written record's facts, then written as `stats/`."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.statistics = Statistics(class_names)

    def observe(self, split: SplitName, description: Any) -> None:
        self.statistics.add(split, description)

    def summary(self) -> dict[str, Any]:
        return _summary(self.statistics)

    def write(self, dataset: Path, skipped: Iterable[Mapping[str, Any]], skipped_total: int) -> None:
        write_stats_folder(dataset, self.statistics.document(), list(skipped), skipped_total)


class StatisticsObservers:
    """The `ObserverFactory` of `converter.core.protocols` for statistics (`--stats`, the default)."""

    entry = STATS_FOLDER
    describe = staticmethod(describe_record)

    def __call__(self, class_names: Sequence[str]) -> StatisticsObserver:
        return StatisticsObserver(class_names)


def rebuild_stats(dataset: Path) -> dict[str, Any]:
    """`dataset-converter stats OUT`: (re)build `stats/` of an existing dataset from its records.

    Committed like a conversion: a new generation holds hard links to the live dataset's
    files, the new `stats/` and a dataset_info.yaml that lists it, and becomes live in one
    switch. A kill at any instant leaves the old dataset or the new one, never a mix; a
    `stats/` the dataset does not own is refused, never replaced. Returns the summary.
    """
    folder = OutputFolder(dataset)
    info = folder.previous_info()
    live = folder.live_generation()
    if info is None or live is None or not live.is_dir():
        raise UsageError(
            f"{dataset} holds no dataset this converter committed (no dataset_info.yaml in a generation); "
            "pass the folder a `dataset-converter convert` run wrote"
        )
    with folder.locked():
        folder.check_writable()
        folder.check_ownership([STATS_FOLDER], overwrite=False)
        generation = folder.new_generation()
        try:
            shutil.copytree(
                live,
                generation,
                symlinks=True,
                copy_function=os.link,
                dirs_exist_ok=True,
                ignore=lambda where, names: [STATS_FOLDER] if Path(where) == live else [],
            )
            statistics = statistics_of(generation)
            skipped, skipped_total = skipped_in_report(generation)
            write_stats_folder(generation, statistics.document(), skipped, skipped_total)
            summary = _summary(statistics)
            entries = sorted({*owned_entries(info), STATS_FOLDER})
            updated = {**info, STATS_FOLDER: summary, "entries": entries}
            (generation / DATASET_INFO).unlink()  # a hard link to the live file: never write through it
            write_durably(generation / DATASET_INFO, yaml_text(updated))
            folder.commit(generation, [*entries, REPORT, DATASET_INFO], overwrite=False)
        except BaseException:
            folder.discard(generation)
            raise
    return summary


def _summary(statistics: Statistics) -> dict[str, Any]:
    """dataset_info.yaml's `stats`: where the files are, and the few numbers worth seeing there."""
    return {"file": f"{STATS_FOLDER}/{STATS_FILE}", "page": f"{STATS_FOLDER}/{PAGE}", **statistics.summary()}


SIGNIFICANT_DIGITS = 10


def _rounded(value: Any) -> Any:
    """`value` with every float cut to 10 significant digits.

    Sums of the same numbers in another order differ in the last bits (a conversion and a
    rebuild from the records add polygon centroids apart); no statistic means that much,
    and the rounded file is the same whichever way it was computed.
    """
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value
