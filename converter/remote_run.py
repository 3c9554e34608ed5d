"""One `convert` run's remote ends: annotation exports fetched before it, the output published after it.

The pipeline and the sources work on local files; this module gives them local copies of
remote annotation files and a local output folder, and afterwards publishes that folder
(`converter.core.storage`). Reports and dataset_info.yaml must name what the user named,
so every mention of the temporary copy in what the source returns is rewritten to the URL.
Temporary folders are made with `tempfile` (set TMPDIR to put them on a larger volume:
a remote output is written there in full before it is uploaded).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path, PurePosixPath

from converter.core.protocols import Source
from converter.core.sample import SkipHandler, SkippedSample, SourceContents
from converter.core.scaleout import PARTS_FOLDER
from converter.core.storage import (
    RemotePath,
    as_location,
    check_bucket,
    describe,
    download,
    list_files,
    publish_part,
    publish_tree,
)
from converter.errors import SampleLocation, UsageError
from converter.sources import SEARCH_DEPTH, LocatedExport, locate_export
from converter.sources.coco import COCO_SUFFIXES
from converter.sources.geojson import GEOJSON_SUFFIXES
from converter.sources.labelstudio import EXPORT_SUFFIXES as LABELSTUDIO_SUFFIXES
from converter.sources.mask_folder import LABEL_MAP_SUFFIXES
from converter.sources.sagemaker_gt import MANIFEST_SUFFIXES
from converter.sources.scale import EXPORT_SUFFIXES as SCALE_SUFFIXES

ANNOTATION_SUFFIXES = frozenset(
    (*MANIFEST_SUFFIXES, *COCO_SUFFIXES, *GEOJSON_SUFFIXES, *LABELSTUDIO_SUFFIXES, *SCALE_SUFFIXES, *LABEL_MAP_SUFFIXES)
)
"""Every suffix some format recognizes: in a remote -a folder, only such files are fetched (never the images)."""


class _RenamedSource:
    """A source whose report locations and description name the URL, not the local copy."""

    def __init__(self, source: Source, local_prefix: str, url_prefix: str) -> None:
        self._source = source
        self._local_prefix = local_prefix
        self._url_prefix = url_prefix

    def _rename(self, text: str) -> str:
        return text.replace(self._local_prefix, self._url_prefix)

    def _located(self, location: SampleLocation) -> SampleLocation:
        return replace(location, file=self._rename(location.file))

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        def renamed_skip(skipped: SkippedSample) -> None:
            if on_skip is not None:
                on_skip(replace(skipped, location=self._located(skipped.location)))

        try:
            contents = self._source.read(renamed_skip if on_skip is not None else None)
        except UsageError as error:
            raise UsageError(self._rename(str(error))) from None
        return replace(
            contents,
            samples=tuple(replace(sample, location=self._located(sample.location)) for sample in contents.samples),
            skipped=tuple(replace(skipped, location=self._located(skipped.location)) for skipped in contents.skipped),
            annotation_notes=tuple(
                replace(note, location=self._located(note.location)) for note in contents.annotation_notes
            ),
            description={key: self._rename(value) for key, value in contents.description.items()},
        )


class RemoteRun:
    """The temporary local side of a run's remote inputs and output; `close` removes it.

    Local locations pass through untouched, so a run without URLs behaves exactly as before.
    """

    def __init__(self) -> None:
        self._cleanup = ExitStack()
        self._renaming: tuple[str, str] | None = None  # (local copy prefix, URL prefix)
        self._output: tuple[Path, RemotePath] | None = None

    def close(self) -> None:
        self._cleanup.close()

    def _temporary_folder(self, purpose: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=f"dataset-converter-{purpose}-"))
        self._cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        return folder

    def locate_export(self, annotations: str, source_name: str | None) -> LocatedExport:
        """`locate_export` for `-a`; a remote file, or the annotation files of a remote folder, are fetched first.

        The default images folder stays remote: the -a folder, or the annotation file's prefix.
        """
        location = as_location(annotations)
        if isinstance(location, Path):
            return locate_export(location, source_name)
        copy = self._temporary_folder("input")
        try:
            is_file = location.is_file()
            if not is_file and not location.is_dir():
                raise UsageError(f"annotations path {location} does not exist (or these credentials cannot see it)")
            if is_file:
                download(location, copy / location.name)
            else:
                for relative in list_files(location, SEARCH_DEPTH):
                    parts = PurePosixPath(relative).parts
                    hidden = any(part.startswith(".") for part in parts)
                    if not hidden and PurePosixPath(relative).suffix.lower() in ANNOTATION_SUFFIXES:
                        download(location / relative, copy.joinpath(*parts))
        except OSError as error:
            raise UsageError(f"cannot read the annotations at {describe(error)}") from None
        folder = location.parent if is_file else location
        try:
            located = locate_export(copy / location.name if is_file else copy, source_name)
        except UsageError as error:
            raise UsageError(str(error).replace(str(copy), folder.url)) from None
        if located.source_name == "mask_folder":
            raise UsageError(
                f"mask folders cannot be read from {location}: their images and masks are walked as local "
                "folders; copy the export to a local folder (sagemaker_gt, coco and geojson exports can stay remote)"
            )
        self._renaming = (str(copy), folder.url)
        return replace(located, default_images=folder)

    def source(self, source: Source) -> Source:
        """The source, reporting remote annotation files by their URL."""
        return source if self._renaming is None else _RenamedSource(source, *self._renaming)

    def output_dir(self, output: str, absolute_paths: bool) -> Path:
        """Where the pipeline writes: `-o` itself, or a temporary folder that `publish` uploads."""
        location = as_location(output)
        if isinstance(location, Path):
            return location
        if absolute_paths:
            raise UsageError(f"--absolute-paths writes local paths; it cannot be used with a remote output ({output})")
        check_bucket(location)
        local = self._temporary_folder("output")
        self._output = (local, location)
        return local

    @property
    def output(self) -> RemotePath | None:
        """The remote `-o`, once `output_dir` has seen one."""
        return self._output[1] if self._output is not None else None

    def publish(self) -> None:
        """Upload the local output to the remote `-o`, if there is one.

        A scaled-out worker's output is its part folder(s) under `parts/`, each of which
        replaces its remote counterpart; any other output is a dataset (or a failed run's
        report) published as a tree.
        """
        if self._output is None:
            return
        local, url = self._output
        parts = local / PARTS_FOLDER
        if parts.is_dir():
            for part in sorted(path for path in parts.iterdir() if path.is_dir() and not path.name.startswith(".")):
                publish_part(part, url / PARTS_FOLDER / part.name)
        else:
            publish_tree(local, url)
