"""The CDR files FreeSWITCH leaves on disk, into the journal: ``fsapp cdr import DIR``.

mod_json_cdr writes a leg it could not post to its ``err-log-dir`` as
``[a_]<uuid>.cdr.json`` (the JSON, URL-encoded or base64 when ``encode`` is on);
``log-dir`` holds the same files for back-filling history. Each file is stored
through the same path as a post, then moved aside: to ``DIR/imported/`` once its
leg is committed (or was already kept), to ``DIR/refused/`` with a
``<name>.reason`` file beside it when it is not a CDR. Only the files left in
``DIR`` are read, so a second run has nothing to do; a file imported but not yet
moved (a crash in between) is found already kept and moved then. A database
failure stops the run and leaves the file where it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fsapp.cdr import legs
from fsapp.cdr.writer import CDRWriter

IMPORTED = "imported"
REFUSED = "refused"


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # legs the journal already had
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def cdr_files(directory: Path) -> list[Path]:
    """The files waiting in ``directory`` (not in its imported/ and refused/ folders), oldest first."""
    files = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.name.endswith(".json")]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def import_dir(directory: Path, writer: CDRWriter, *, max_bytes: int) -> ImportReport:
    """Import every waiting file of ``directory``; raises StorageError (files left in place) if the database fails."""
    report = ImportReport()
    for path in cdr_files(directory):
        try:
            body = path.read_bytes()
        except FileNotFoundError:  # another import took it
            continue
        reason = _refusal(body, max_bytes)
        if reason is None:
            try:
                leg = legs.parse(body)
            except legs.LegError as exc:
                reason = str(exc)
        if reason is not None:
            _refuse(path, reason)
            report.refused.append((path.name, reason))
            continue
        new = writer.add(leg, body)
        _move(path, directory / IMPORTED)
        (report.imported if new else report.already).append(path.name)
    return report


def _refusal(body: bytes, max_bytes: int) -> str | None:
    if len(body) > max_bytes:
        return f"{len(body)} bytes is over [cdr] max_body_bytes ({max_bytes})"
    if not body.strip():
        return "empty file"
    return None


def _refuse(path: Path, reason: str) -> None:
    target = _move(path, path.parent / REFUSED)
    target.with_name(target.name + ".reason").write_text(reason + "\n", encoding="utf-8")


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    os.replace(path, target)
    return target
