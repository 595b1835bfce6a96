"""sparseopt.tbevents writes the scalar event files that TensorBoard reads."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import pytest

from sparseopt.tbevents import ScalarWriter, crc32c


def test_crc32c_check_values() -> None:
    # the check value of CRC-32C, and RFC 3720's test vectors (iSCSI, B.4)
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") != zlib.crc32(b"123456789")  # not the other CRC-32


SCALARS = [
    ("loss", 2.5, 0),
    ("loss", 0.125, 1),
    ("layer_density/fc1", 0.3, 1),
    ("nonzero", 123456789.0, 7),  # rounded to float32, as TensorBoard stores it
    ("huge", 1e300, 8),  # beyond float32: +inf
    ("nan", math.nan, 9),
    ("negative step", -1.0, -3),
    ("λ/ünïcode", 1e-3, 2**40),
]


def _f32(x: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _read(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="needs tensorboard to read the files",
    )
    acc = accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _same(a: dict[str, list[tuple[int, float]]], b: dict[str, list[tuple[int, float]]]) -> bool:
    if a.keys() != b.keys():
        return False
    for tag in a:
        for (sa, va), (sb, vb) in zip(a[tag], b[tag], strict=True):
            if sa != sb or not (va == vb or (math.isnan(va) and math.isnan(vb))):
                return False
    return True


def test_tensorboard_reads_what_the_writer_wrote(tmp_path: Path) -> None:
    w = ScalarWriter(tmp_path / "ours")
    for tag, value, step in SCALARS:
        w.add_scalar(tag, value, step)
    w.flush()
    w.close()
    w.close()  # idempotent
    got = _read(tmp_path / "ours")
    want: dict[str, list[tuple[int, float]]] = {}
    for tag, value, step in SCALARS:
        want.setdefault(tag, []).append((step, _f32(value)))
    assert _same(got, want), (got, want)


def test_the_same_scalars_as_torchs_summary_writer(tmp_path: Path) -> None:
    """Read back, our file and ``torch.utils.tensorboard.SummaryWriter``'s hold the same
    scalars (tags, steps, values)."""
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    ours, theirs = ScalarWriter(tmp_path / "ours"), SummaryWriter(str(tmp_path / "torch"))
    for tag, value, step in SCALARS:
        ours.add_scalar(tag, value, step)
        theirs.add_scalar(tag, value, step)
    ours.close()
    theirs.close()
    assert _same(_read(tmp_path / "ours"), _read(tmp_path / "torch"))


def test_two_writers_in_one_directory_write_two_files(tmp_path: Path) -> None:
    a, b = ScalarWriter(tmp_path), ScalarWriter(tmp_path)
    a.close()
    b.close()
    assert a.path != b.path and len(list(tmp_path.iterdir())) == 2
