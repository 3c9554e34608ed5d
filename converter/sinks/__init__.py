"""Output formats, registered by their `-f/--format` name."""

from __future__ import annotations

from collections.abc import Callable

from converter.core.protocols import Sink
from converter.sinks.tfrecord import TFRecordSink

SinkFactory = Callable[[int], Sink]
"""Builds a sink from the shard size cap in bytes."""

SINKS: dict[str, SinkFactory] = {
    "tfrecord": TFRecordSink,
}
