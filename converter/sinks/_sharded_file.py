"""Size-capped shard files, shared by every sink that writes records into shards.

Shards are written under provisional names (`train-00000.partial`) because the total
count in `train-00000-of-00012.tfrecord` is known only at the end; `close` renames
them. The whole output folder is itself a staging folder until the pipeline commits
it, so a crash never leaves a final-looking name on a partial file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from converter.core.shard import ShardInfo, shard_file_name, starts_new_shard


class ShardedFileWriter:
    """Appends framed records to numbered files, opening a new file when the cap is reached."""

    def __init__(self, folder: Path, prefix: str, suffix: str, max_shard_bytes: int, relative_to: Path) -> None:
        self._folder = folder
        self._prefix = prefix
        self._suffix = suffix
        self._max_shard_bytes = max_shard_bytes
        self._relative_to = relative_to
        self._stream: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._shard_bytes = 0
        self._shard_records = 0
        self._finished: list[tuple[Path, int, int, str]] = []  # provisional path, records, bytes, sha256
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, framed_record: bytes) -> None:
        if self._stream is None or starts_new_shard(self._shard_bytes, len(framed_record), self._max_shard_bytes):
            self._finish_shard()
            path = self._folder / f"{self._prefix}-{len(self._finished):05d}.partial"
            self._stream = path.open("wb")
        self._stream.write(framed_record)
        self._hash.update(framed_record)
        self._shard_bytes += len(framed_record)
        self._shard_records += 1

    def _finish_shard(self) -> None:
        if self._stream is None:
            return
        self._stream.close()
        self._finished.append((Path(self._stream.name), self._shard_records, self._shard_bytes, self._hash.hexdigest()))
        self._stream = None
        self._hash = hashlib.sha256()
        self._shard_bytes = self._shard_records = 0

    def close(self) -> tuple[ShardInfo, ...]:
        """Close the last shard and give every shard its final name."""
        self._finish_shard()
        shards = []
        for shard_index, (path, records, size, sha256) in enumerate(self._finished):
            final = path.with_name(shard_file_name(self._prefix, shard_index, len(self._finished), self._suffix))
            path.rename(final)
            shards.append(
                ShardInfo(
                    file=final.relative_to(self._relative_to).as_posix(), records=records, bytes=size, sha256=sha256
                )
            )
        return tuple(shards)
