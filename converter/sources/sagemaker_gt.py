"""SageMaker Ground Truth output (augmented) manifests: JSON Lines, one image per line.

A line's label attribute is the key `<attr>` whose sibling `<attr>-metadata` carries a
`type`; the type names the job. One attribute is used for the whole manifest: the only
one present, or the one `--label-attribute` names (adjustment jobs add a second one).
A line's own keys (`source`, `source-ref`, the `-metadata` ones) are never label attributes,
and a text job's line (inline `source` text, no image) is skipped without counting its
attribute: a manifest that mixes in text lines needs no `--label-attribute` for them.

Class ids in `class-map` and `internal-color-map` are strings, sparse, and list only
the classes present on their line. The manifest's class order is by Ground Truth id
(the order of the job's label list), then by name; a name seen with several ids takes
the smallest. In semantic segmentation, index 0 is Ground Truth's background.

Whatever a line holds, it costs that line alone: lines are read and decoded one at a time
(`converter.core.input_files.iter_lines`: UTF-8, or UTF-16/32 by their byte-order mark),
and a line that cannot be decoded, is too long, is not a JSON object, or holds a value no
sample can (a non-finite coordinate, a class name that is not Unicode text) is a skipped
entry with its line number.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from converter.core.images import declared_size, image_resolver, reference_parts
from converter.core.input_files import iter_lines, named, parse_json, peek_lines, shown
from converter.core.sample import (
    InvalidValueError,
    ObjectAnnotation,
    Sample,
    SegmentationMask,
    SkipCollector,
    SkipHandler,
    SkippedSample,
    SourceContents,
)
from converter.core.storage import RemotePath
from converter.errors import SampleError, SampleLocation, UsageError, quoted

DETECTION = "groundtruth/object-detection"
CLASSIFICATION = "groundtruth/image-classification"
MULTILABEL = "groundtruth/image-classification-multilabel"
SEMANTIC_SEGMENTATION = "groundtruth/semantic-segmentation"
SUPPORTED_TYPES = (DETECTION, CLASSIFICATION, MULTILABEL, SEMANTIC_SEGMENTATION)
METADATA_SUFFIX = "-metadata"
IMAGE_KEY = "source-ref"
TEXT_KEY = "source"  # inline text: a text job's line
_NOT_LABELS = frozenset({IMAGE_KEY, TEXT_KEY})
MANIFEST_SUFFIXES = (".manifest", ".jsonl", ".json")
_LINES_TO_RECOGNIZE = 20  # a malformed or unlabelled first line does not hide a manifest
# Longer lines are read only this far when recognizing: a minified JSON file (a COCO export)
# is one line of up to gigabytes, which must not be read whole, let alone parsed, to say "no".
_LINE_CHARS_TO_RECOGNIZE = 1 << 20
_HEX_COLOR = re.compile(r"^#?([0-9a-fA-F]{6})$")
_CLASS_ID_TEXT = re.compile(r"-?[0-9]{1,18}")  # a class index fits in 64 bits; longer digit strings are no index
_METADATA_ATTRIBUTES = ("job-name", "human-annotated", "creation-date", "adjustment-status")


def label_attributes(line: Mapping[str, Any]) -> dict[str, str]:
    """The label attributes of one manifest line and their job types.

    The line's own keys are left out even when a `<key>-metadata` beside them has a `type`:
    `source-ref` is the image and `source` a text job's text, not labels.
    """
    found = {}
    for key, value in line.items():
        if key.endswith(METADATA_SUFFIX) and isinstance(value, dict) and isinstance(value.get("type"), str):
            attribute = key[: -len(METADATA_SUFFIX)]
            if attribute in line and attribute not in _NOT_LABELS and not attribute.endswith(METADATA_SUFFIX):
                found[attribute] = value["type"]
    return found


def is_text_line(line: Mapping[str, Any]) -> bool:
    """Whether a line is a text job's: inline `source` text and no image `source-ref`."""
    return IMAGE_KEY not in line and TEXT_KEY in line


def looks_like_manifest(path: Path) -> bool:
    """Whether a file is a Ground Truth output manifest: JSON Lines with a labelled line among its first lines."""
    if path.suffix.lower() not in MANIFEST_SUFFIXES or not path.is_file():
        return False
    for line in peek_lines(path, _LINES_TO_RECOGNIZE, _LINE_CHARS_TO_RECOGNIZE):
        try:
            parsed = parse_json(line)
        except SampleError:
            continue
        if isinstance(parsed, dict) and IMAGE_KEY in parsed and label_attributes(parsed):
            return True
    return False


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SampleError("malformed_annotation", f"{what} must be a finite number, got {shown(value)}")
    return float(value)


def _class_id(value: Any, what: str) -> int:
    """Ground Truth writes class ids as ints or as strings of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _CLASS_ID_TEXT.fullmatch(value.strip()):
        return int(value)
    raise SampleError("malformed_annotation", f"{what} must be a class index, got {shown(value)}")


def _text_value(value: Any) -> str | None:
    """A metadata value as attribute text: scalars only; a nested value is no attribute."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def _mapping(container: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise SampleError("malformed_annotation", f"{where} has no `{key}` object")
    return value


def _class_map(metadata: Mapping[str, Any]) -> dict[int, str]:
    raw = metadata.get("class-map", {})
    if not isinstance(raw, dict):
        raise SampleError("malformed_annotation", f"`class-map` must be an object, got {shown(raw)}")
    class_map = {}
    for key, name in raw.items():
        if not isinstance(name, str) or not name:
            raise SampleError(
                "malformed_annotation", f"`class-map` entry {quoted(key)} has no class name: {shown(name)}"
            )
        class_map[_class_id(key, "a `class-map` key")] = name
    return class_map


def _hex_to_rgb(hex_color: Any, where: str) -> tuple[int, int, int]:
    match = _HEX_COLOR.match(hex_color) if isinstance(hex_color, str) else None
    if match is None:
        raise SampleError("malformed_annotation", f"{where} `hex-color` must look like #1f77b4, got {shown(hex_color)}")
    value = int(match.group(1), 16)
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


@dataclass
class _ParsedLine:
    line_number: int
    content: dict[str, Any]


class SageMakerGroundTruthSource:
    """`--source sagemaker_gt`: a Ground Truth output manifest and its images."""

    def __init__(self, manifest: Path, images_root: Path | RemotePath, label_attribute: str | None = None) -> None:
        self.manifest = manifest
        self.images_root = images_root
        self.label_attribute = label_attribute
        self._resolver = image_resolver(images_root)

    def _lines(self, skipped: SkipCollector) -> Iterator[_ParsedLine]:
        """Every line that is a JSON object; each other non-blank line is one skipped entry, whatever its bytes."""
        for line in iter_lines(self.manifest, "manifest"):
            if line.text is not None and not line.text.strip():
                continue
            location = SampleLocation(str(self.manifest), line.number)
            if line.text is None:
                skipped.append(SkippedSample(location, line.code or "undecodable_line", line.problem or ""))
                continue
            try:
                content = parse_json(line.text)
            except SampleError as error:
                skipped.append(SkippedSample(location, error.code, error.message))
                continue
            if not isinstance(content, dict):
                skipped.append(
                    SkippedSample(location, "malformed_json", f"line is a JSON {type(content).__name__}, not an object")
                )
                continue
            yield _ParsedLine(line.number, content)

    def _choose_attribute(self) -> str | None:
        """The label attribute for the whole manifest, from a first, streaming pass.

        Two passes instead of holding every parsed line: a million parsed JSON lines take
        gigabytes, the samples built from them a fraction of that.
        """
        ignored = SkipCollector(lambda _: None)  # the second pass reports them
        counts = Counter(
            attribute
            for line in self._lines(ignored)
            if not is_text_line(line.content)  # skipped in the second pass; its attribute is no image job's
            for attribute in label_attributes(line.content)
        )
        listed = ", ".join(f"{named(name)} ({count} lines)" for name, count in sorted(counts.items())) or "none"
        if self.label_attribute is not None:
            if self.label_attribute not in counts:
                raise UsageError(
                    f"no line of {self.manifest} has the label attribute {quoted(self.label_attribute)}; "
                    f"found: {listed}"
                )
            return self.label_attribute
        if len(counts) <= 1:
            return next(iter(counts), None)
        raise UsageError(
            f"{self.manifest} has several label attributes: {listed}; choose one with --label-attribute "
            "(for an adjustment job, the adjusted one)"
        )

    def read(self, on_skip: SkipHandler | None = None) -> SourceContents:
        skipped = SkipCollector(on_skip)
        attribute = self._choose_attribute()
        samples: list[Sample] = []
        class_ids: dict[str, int] = {}
        for line in self._lines(skipped):
            reference = line.content.get(IMAGE_KEY)
            location = SampleLocation(
                str(self.manifest), line.line_number, reference if isinstance(reference, str) else None
            )
            try:
                sample, line_classes = self._parse_line(line.content, location, attribute)
            except InvalidValueError as error:
                skipped.append(SkippedSample(location, "invalid_value", str(error)))
                continue
            except SampleError as error:
                skipped.append(SkippedSample(location, error.code, error.message))
                continue
            samples.append(sample)
            for gt_id, name in line_classes.items():
                class_ids[name] = min(gt_id, class_ids.get(name, gt_id))
        native_order = tuple(sorted(class_ids, key=lambda name: (class_ids[name], name)))
        description = {"source": "sagemaker_gt", "annotations": str(self.manifest), "images": str(self.images_root)}
        if attribute is not None:
            description["label_attribute"] = attribute
        return SourceContents(tuple(samples), skipped.kept(), native_order, description)

    def _parse_line(
        self, content: dict[str, Any], location: SampleLocation, attribute: str | None
    ) -> tuple[Sample, dict[int, str]]:
        """One line's sample and the (Ground Truth id -> class name) pairs it uses."""
        if is_text_line(content):
            raise SampleError(
                "not_an_image",
                "line is a text job (inline `source` text, no image `source-ref`); text jobs are not images, "
                "so the line is skipped",
            )
        reference = content.get(IMAGE_KEY)
        if reference is None:
            raise SampleError("missing_source_ref", "line has no `source-ref`")
        if not isinstance(reference, str) or not reference:
            raise SampleError("missing_source_ref", f"`source-ref` must be a non-empty string, got {shown(reference)}")
        if attribute is None or attribute not in content:
            found = sorted(label_attributes(content))
            shown_attribute = "" if attribute is None else f" {quoted(attribute)}"
            raise SampleError(
                "no_label",
                f"line has no label attribute{shown_attribute}"
                + (f" (it has {', '.join(map(named, found))})" if found else ""),
            )
        metadata = _mapping(content, attribute + METADATA_SUFFIX, "line")
        job_type = metadata.get("type")
        if job_type not in SUPPORTED_TYPES:
            raise SampleError(
                "unsupported_type",
                f"job type {shown(job_type)} of {quoted(attribute)} is not supported "
                f"(supported: {', '.join(SUPPORTED_TYPES)})",
            )
        image = self._resolver.locate(reference)
        base = Sample(
            key=reference,
            location=location,
            image_path=image.path,
            image_name=image.name,
            attributes=tuple(
                (name, text)
                for name in _METADATA_ATTRIBUTES
                if name in metadata and (text := _text_value(metadata[name])) is not None
            ),
        )
        value = content[attribute]
        if job_type == DETECTION:
            return self._detection(value, metadata, base)
        if job_type == SEMANTIC_SEGMENTATION:
            return self._segmentation(value, metadata, base)
        if job_type == CLASSIFICATION:
            gt_id = _class_id(value, quoted(attribute))
            name = metadata.get("class-name")
            if not isinstance(name, str) or not name:
                raise SampleError("malformed_annotation", f"{quoted(attribute + METADATA_SUFFIX)} has no `class-name`")
            return replace(base, image_labels=(name,)), {gt_id: name}
        # MULTILABEL
        if not isinstance(value, list):
            raise SampleError("malformed_annotation", f"multi-label value must be a list, got {shown(value)}")
        class_map = _class_map(metadata)
        ids = [_class_id(item, "a multi-label class") for item in value]
        missing = [gt_id for gt_id in ids if gt_id not in class_map]
        if missing:
            raise SampleError("unknown_class_id", f"class ids {missing[:8]} are not in `class-map` {quoted(class_map)}")
        names = tuple(dict.fromkeys(class_map[gt_id] for gt_id in ids))
        return replace(base, image_labels=names), {gt_id: class_map[gt_id] for gt_id in ids}

    @staticmethod
    def _detection(value: Any, metadata: Mapping[str, Any], base: Sample) -> tuple[Sample, dict[int, str]]:
        if not isinstance(value, dict):
            raise SampleError("malformed_annotation", f"detection label must be an object, got {shown(value)}")
        class_map = _class_map(metadata)
        annotations = value.get("annotations", [])
        if not isinstance(annotations, list):
            raise SampleError("malformed_annotation", f"`annotations` must be a list, got {shown(annotations)}")
        confidences = metadata.get("objects")
        objects, used = [], {}
        for index, annotation in enumerate(annotations):
            where = f"annotation {index}"
            if not isinstance(annotation, dict):
                raise SampleError("malformed_annotation", f"{where} must be an object, got {shown(annotation)}")
            gt_id = _class_id(annotation.get("class_id"), f"{where} `class_id`")
            if gt_id not in class_map:
                raise SampleError(
                    "unknown_class_id",
                    f"{where} has class_id {gt_id}, which `class-map` {quoted(class_map)} does not name",
                )
            left = _number(annotation.get("left"), f"{where} `left`")
            top = _number(annotation.get("top"), f"{where} `top`")
            width = _number(annotation.get("width"), f"{where} `width`")
            height = _number(annotation.get("height"), f"{where} `height`")
            attributes: tuple[tuple[str, str], ...] = ()
            confidence = confidences[index] if isinstance(confidences, list) and index < len(confidences) else None
            text = _text_value(confidence.get("confidence")) if isinstance(confidence, dict) else None
            if text is not None:
                attributes = (("confidence", text),)
            objects.append(
                ObjectAnnotation(class_map[gt_id], (left, top, left + width, top + height), attributes=attributes)
            )
            used[gt_id] = class_map[gt_id]
        declared = None
        sizes = value.get("image_size")
        if isinstance(sizes, list) and sizes and isinstance(sizes[0], dict):
            declared = declared_size(sizes[0].get("width"), sizes[0].get("height"), "`image_size`")
        return replace(base, declared_size=declared, objects=tuple(objects)), used

    def _segmentation(self, value: Any, metadata: Mapping[str, Any], base: Sample) -> tuple[Sample, dict[int, str]]:
        if not isinstance(value, str) or not value:
            raise SampleError("malformed_annotation", f"segmentation label must be a mask URI, got {shown(value)}")
        color_map = _mapping(metadata, "internal-color-map", "metadata")
        index_to_class: list[tuple[int, str | None]] = []
        color_to_class: list[tuple[tuple[int, int, int], str | None]] = []
        used = {}
        for key, entry in sorted(color_map.items(), key=lambda item: _class_id(item[0], "a color-map key")):
            gt_index = _class_id(key, "an `internal-color-map` key")
            if not isinstance(entry, dict) or not isinstance(entry.get("class-name"), str):
                raise SampleError(
                    "malformed_annotation", f"`internal-color-map` entry {quoted(key)} has no `class-name`"
                )
            name: str | None = None if gt_index == 0 else entry["class-name"]
            index_to_class.append((gt_index, name))
            if "hex-color" in entry:
                color_to_class.append((_hex_to_rgb(entry["hex-color"], f"class {quoted(key)}"), name))
            if name is not None:
                used[gt_index] = name
        mask = SegmentationMask(self._mask_path(value), tuple(index_to_class), tuple(color_to_class))
        return replace(base, segmentation=mask), used

    def _mask_path(self, reference: str) -> Path | RemotePath:
        """The mask file a segmentation label names, found as images are.

        The resolver speaks of images; a mask it cannot find or tell apart gets a mask code,
        so a report never blames a present image for an absent mask.
        """
        try:
            return self._resolver.locate(reference).path
        except SampleError as error:
            if error.code == "missing_image":
                raise SampleError("missing_mask", self._missing_mask_reason(reference)) from None
            code = "ambiguous_mask" if error.code == "ambiguous_image" else error.code
            raise SampleError(code, f"segmentation mask: {error.message}") from None

    def _missing_mask_reason(self, reference: str) -> str:
        """Where the mask was looked for, first by its key under the images folder, then by its file name."""
        _, parts = reference_parts(reference)  # `locate` has split it already: this cannot raise
        if not parts:
            return f"segmentation mask reference {quoted(reference)} names no file"
        return (
            f"segmentation mask {quoted(reference)} not found: looked for {self.images_root / '/'.join(parts)} "
            f"and for a file named {quoted(parts[-1])} anywhere under {self.images_root}; put the masks under "
            "the images folder (-i) by their keys"
        )
