"""Output formats, registered by their `-f/--format` name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from converter.core.protocols import Sink
from converter.sinks.json_files import JsonFilesSink
from converter.sinks.masks import MasksSink
from converter.sinks.masterful import MasterfulSink
from converter.sinks.tfrecord import TFRecordSink

SinkFactory = Callable[[int], Sink[Any]]
"""Builds a sink from the shard size cap in bytes."""

SINKS: dict[str, SinkFactory] = {
    "tfrecord": TFRecordSink,
    "masterful": MasterfulSink,
    "json": JsonFilesSink,
    "masks": MasksSink,
}
