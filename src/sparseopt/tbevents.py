"""TensorBoard scalar event files, written without importing TensorBoard.

``torch.utils.tensorboard`` imports TensorBoard and protobuf, about 0.3–0.5 s: for the
default job that is as long as its training. The engine logs only scalars, and a scalar
event is a few bytes of a fixed layout, so :class:`ScalarWriter` writes them itself; the
files are what ``SummaryWriter.add_scalar`` writes and TensorBoard reads them as usual
(tested by reading them back with TensorBoard's own ``EventAccumulator``).

The layout (TensorFlow's ``event.proto``, ``summary.proto``; the TFRecord framing of
``tensorflow/core/lib/io/record_writer.cc``):

- a file is a sequence of records; a record is ``len`` (uint64, little-endian),
  ``masked_crc32c(len)`` (uint32), the payload, ``masked_crc32c(payload)`` (uint32), with
  :math:`\\operatorname{mask}(c) = ((c \\gg 15) \\,|\\, (c \\ll 17)) + \\texttt{0xa282ead8}
  \\bmod 2^{32}` and CRC-32C (Castagnoli, reflected polynomial ``0x82f63b78``);
- the payload is a protobuf ``Event``: ``wall_time`` (field 1, double), ``step`` (2,
  int64), and either ``file_version`` (3, the string ``brain.Event:2``, first record) or
  ``summary`` (5): a ``Summary`` of ``Value`` messages (field 1), each ``tag`` (1,
  string) and ``simple_value`` (2, float).
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["ScalarWriter", "crc32c"]


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()
_FILE_IDS = itertools.count()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``; ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as protobuf writes it: two's complement, 10 bytes if < 0
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    head = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        head += _varint(2 << 3) + _varint(step)
    return head + body


class ScalarWriter:
    """``add_scalar``/``flush``/``close`` of ``torch.utils.tensorboard.SummaryWriter``,
    for scalars only, into a new ``events.out.tfevents.*`` file of ``log_dir``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     w = ScalarWriter(d)
        ...     w.add_scalar("loss", 0.5, 1)
        ...     w.close()
        ...     [p.name.startswith("events.out.tfevents.") for p in Path(d).iterdir()]
        [True]
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}"
        self.path = Path(log_dir) / f"{name}.{next(_FILE_IDS)}"
        self._file = open(self.path, "ab")  # kept open until close()
        self._write(_event(now, 0, _field(3, b"brain.Event:2")))

    def _write(self, payload: bytes) -> None:
        length = struct.pack("<Q", len(payload))
        self._file.write(length + _masked(length) + payload + _masked(payload))

    def add_scalar(self, tag: str, value: float, global_step: int = 0) -> None:
        """Record ``value`` under ``tag`` at ``global_step`` (stored as float32, as
        TensorBoard's ``simple_value``)."""
        try:
            packed = struct.pack("<f", value)
        except OverflowError:  # beyond float32: ±inf, as a float32 cast gives
            packed = struct.pack("<f", math.copysign(math.inf, value))
        entry = _field(1, tag.encode("utf-8")) + _varint(2 << 3 | 5) + packed
        self._write(_event(time.time(), int(global_step), _field(5, _field(1, entry))))

    def flush(self) -> None:
        """Hand the written records to the operating system."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()
