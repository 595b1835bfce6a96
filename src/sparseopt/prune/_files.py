"""Files of the structure tools: atomic writes, safe loading, non-finite checks.

- :func:`atomic_write` writes a file through a temporary name in the same directory
  and :func:`os.replace`, so a reader (or a crash) never sees half a file and an
  earlier file of that name stays intact until the new one is complete;
- :func:`load_tensor_file` reads a ``torch.save`` file with ``weights_only=True`` and
  turns every failure into one :class:`ValueError` line that says what the file is and
  why it was refused (it never suggests an unsafe load);
- :func:`state_dict_of` checks that a loaded object is a state dict and
  :func:`load_state` loads one into a freshly built model (a grown run's layers widened
  first), each failure one :class:`ValueError` line;
- :func:`non_finite` names the tensors of a model or state dict that hold NaN or Inf.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["atomic_write", "load_state", "load_tensor_file", "non_finite", "state_dict_of"]


def atomic_write(target: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``target``, then rename it.

    Args:
        target: the final file; its directory must exist.
        write: writes the whole file to the path it is given (e.g.
            ``lambda p: torch.save(obj, p)``).

    Returns:
        ``target`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> atomic_write(d / "a.txt", lambda p: p.write_text("hi")).read_text()
        'hi'
    """
    target = Path(target)
    # keep the suffix: some writers look at it (torch.export.save wants ".pt2")
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_ZIP_MAGIC = b"PK\x03\x04"


def _reason(err: BaseException, head: bytes) -> str:
    """One clause saying why ``torch.load(weights_only=True)`` failed (no unsafe hints).

    ``head`` is the start of the file: PyTorch files are zip archives since 1.6.
    """
    text = str(err)
    if isinstance(err, pickle.UnpicklingError):
        found = _GLOBAL.search(text)
        if found or "global" in text.lower():
            what = f" ({found.group(1)})" if found else ""
            return (
                f"refused: it contains a pickled Python object{what} besides tensors and "
                "plain data, and unpickling that could run arbitrary code"
            )
    if head.startswith(_ZIP_MAGIC):
        return "a PyTorch (zip) file that is truncated or corrupt"
    if isinstance(err, EOFError):
        return "not a PyTorch file (it ends before its first record)"
    return "not a PyTorch file (neither a zip archive nor a tensor pickle)"


def load_tensor_file(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with one-line errors.

    Args:
        path: the file.
        what: what the file is, for messages (``"checkpoint"``, ``"sparse model"``).

    Raises:
        ValueError: ``cannot load <what> <path>: <reason>`` — missing, empty, truncated,
            not a PyTorch file, or refused because it holds pickled code.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"cannot load {what} {p}: it is a directory")
    try:
        size = p.stat().st_size
    except OSError as err:
        raise ValueError(f"cannot load {what} {p}: {err.strerror or err}") from None
    if size == 0:
        raise ValueError(f"cannot load {what} {p}: the file is empty (0 bytes)")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        with open(p, "rb") as f:
            head = f.read(4)
        raise ValueError(f"cannot load {what} {p}: {_reason(err, head)}") from None


def state_dict_of(obj: Any, path: str | os.PathLike[str], what: str) -> Mapping[str, torch.Tensor]:
    """``obj`` (loaded from ``path``) as a state dict: parameter names mapped to tensors.

    Raises:
        ValueError: ``<what> <path> is not a state dict …`` or holds an empty one.
    """
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"{what} {path} is not a state dict (expected parameter names mapped to tensors, "
            f"got {type(obj).__name__})"
        )
    if not obj:
        raise ValueError(f"{what} {path} holds an empty state dict")
    return obj


def load_state(
    model: nn.Module, state: Mapping[str, Any], path: str | os.PathLike[str], what: str
) -> None:
    """``model.load_state_dict(state)`` after widening the layers of a grown run
    (:func:`sparseopt.prune.match_widths`); ``state`` came from ``path``.

    Raises:
        ValueError: ``<what> <path> does not fit the model built from config.yaml: …``.
    """
    from sparseopt.logging_utils import one_line
    from sparseopt.prune.grow import match_widths

    try:
        match_widths(model, state)  # a run that grew (--grow-every) has wider layers
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        detail = one_line(str(err)) or type(err).__name__
        raise ValueError(
            f"{what} {path} does not fit the model built from config.yaml: {detail}"
        ) from None


def non_finite(tensors: nn.Module | Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors (parameters and buffers) with a NaN or Inf.

    Example:
        >>> non_finite({"w": torch.tensor([1.0, float("nan")]), "n": torch.tensor(3)})
        ['w']
    """
    items = (
        list(tensors.state_dict().items())
        if isinstance(tensors, nn.Module)
        else list(tensors.items())
    )
    return [
        name
        for name, t in items
        if isinstance(t, torch.Tensor)
        and t.is_floating_point()
        and not bool(torch.isfinite(t).all())
    ]
