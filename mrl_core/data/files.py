"""Where a dataset's files come from: a folder, a folder inside a zip archive, or an upload.

Each source reads files by name and displays them as error messages should name them.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from mrl_core.dataset import DatasetError

_CORPUS_MARKERS = ("corpus.jsonl", "corpus.npy", "corpus.parquet")


class _FolderFiles:
    def __init__(self, folder: Path, display_folder: str):
        self.folder = folder
        self.label = display_folder or "."
        self._display_folder = display_folder

    def has(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def size(self, name: str) -> int:
        return (self.folder / name).stat().st_size

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def open(self, name: str) -> BinaryIO:
        return open(self.folder / name, "rb")

    def display(self, name: str) -> str:
        return os.path.join(self._display_folder, name) if self._display_folder else name


class _MemoryFiles:
    def __init__(self, contents: dict[str, bytes]):
        self._contents = contents
        self.label = "upload"

    def has(self, name: str) -> bool:
        return name in self._contents

    def size(self, name: str) -> int:
        return len(self._contents[name])

    def read(self, name: str) -> bytes:
        return self._contents[name]

    def open(self, name: str) -> BinaryIO:
        return io.BytesIO(self._contents[name])

    def display(self, name: str) -> str:
        return name


class _ZipFiles:
    def __init__(self, archive: zipfile.ZipFile, prefix: str, display_archive: str):
        self._archive = archive
        self._prefix = prefix
        self._display_archive = display_archive
        self._sizes = {info.filename: info.file_size for info in archive.infolist() if not info.is_dir()}
        self.label = f"{display_archive}:{prefix}" if prefix else display_archive

    def has(self, name: str) -> bool:
        return self._prefix + name in self._sizes

    def size(self, name: str) -> int:
        return self._sizes[self._prefix + name]

    def read(self, name: str) -> bytes:
        try:
            return self._archive.read(self._prefix + name)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError) as error:
            raise DatasetError(f"{self.display(name)}: cannot be read from the archive ({error})") from None

    def open(self, name: str) -> BinaryIO:
        return io.BytesIO(self.read(name))

    def display(self, name: str) -> str:
        return f"{self._display_archive}:{self._prefix}{name}"


_Files = _FolderFiles | _MemoryFiles | _ZipFiles


def _check_zip_entry(display: str, entry: str) -> None:
    parts = re.split(r"[/\\]", entry)
    if entry.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", entry) or ".." in parts:
        raise DatasetError(
            f"{display}: entry {entry!r} points outside the archive's folder (absolute path or '..'); "
            "refusing to read the archive"
        )


def _zip_root(display: str, names: list[str]) -> str:
    """The folder inside the archive that holds the dataset: '' (top level) or 'name/'."""
    roots = set()
    for entry in names:
        parts = entry.split("/")
        # macOS archivers add resource-fork copies of every file under __MACOSX/.
        if parts[0] == "__MACOSX" or parts[-1] not in _CORPUS_MARKERS or len(parts) > 2:
            continue
        roots.add(parts[0] + "/" if len(parts) == 2 else "")
    if not roots:
        raise DatasetError(
            f"{display}: no corpus.jsonl (BEIR layout) or corpus.npy / corpus.parquet (precomputed embeddings) "
            "at the top level or inside one folder"
        )
    if len(roots) > 1:
        folders = ", ".join(sorted(root or "(top level)" for root in roots))
        raise DatasetError(f"{display}: holds datasets in several folders ({folders}); expected one")
    return roots.pop()
