"""The one rule that turns what a user wrote for a study storage into a storage URL.

Both places a storage is written use it: ``study.storage`` in a workload file (relative paths against
the file's folder) and ``--storage`` / the ``STORAGE`` argument of the commands (relative paths against
the current directory). The scheme is told apart the same way for both:

- ``journal:PATH``                       -> ``journal:/abs/PATH`` (an Optuna journal file);
- anything holding ``://``               -> passed through unchanged (an SQLAlchemy URL);
- a path ending in ``.log``/``.journal`` -> ``journal:/abs/PATH``;
- any other path                         -> ``sqlite:////abs/PATH``;
- nothing (``None``)                     -> ``default`` in the project folder (``base_dir``, or
  ``root`` when given; its parent when that folder is named ``workloads``) as SQLite.

``~`` is expanded in every path.
"""

from __future__ import annotations

from pathlib import Path

from tuner.errors import StorageError

JOURNAL_PREFIX = "journal:"
JOURNAL_SUFFIXES = (".log", ".journal")


def resolve_storage_url(
    text: str | None, *, base_dir: Path, default: str | None = None, root: Path | None = None
) -> str:
    """A storage as written (path, ``journal:PATH`` or SQLAlchemy URL) -> an absolute storage URL.

    ``base_dir`` anchors relative paths; ``default`` (a path relative to the project folder) is used when
    ``text`` is ``None``. Raises :class:`StorageError` for an empty string, or ``None`` without a default.
    """
    if text is None:
        if default is None:
            raise StorageError("no study storage given")
        anchor = root or base_dir
        if anchor.name == "workloads":  # the default lives in the project's studies/, beside workloads/
            anchor = anchor.parent
        return _file_url(str(anchor / default), anchor)
    text = str(text).strip()
    if not text:
        raise StorageError("empty study storage")
    if text.startswith(JOURNAL_PREFIX):
        path = text.removeprefix(JOURNAL_PREFIX)
        if not path:
            raise StorageError(f"{text!r}: expected journal:PATH")
        return JOURNAL_PREFIX + str(_absolute(path, base_dir))
    if "://" in text:
        return text
    return _file_url(text, base_dir)


def _file_url(path: str, base_dir: Path) -> str:
    absolute = _absolute(path, base_dir)
    if absolute.name.endswith(JOURNAL_SUFFIXES):
        return JOURNAL_PREFIX + str(absolute)
    return "sqlite:///" + str(absolute)


def _absolute(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(base_dir).expanduser() / p
    return p.resolve()
