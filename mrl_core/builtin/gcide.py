"""``builtin:large``: a reverse-dictionary corpus of 105,377 English definitions from GCIDE.

The GNU Collaborative International Dictionary of English (GPL-2+; Webster's 1913 plus later
additions) comes as Debian's ``dict-gcide`` package, a dictd database (``gcide.index`` +
``gcide.dict.dz``). One document per distinct head term (case-insensitive): the definition text of
every entry for that term (part of speech, etymology, senses, quotations) with the headword and its
pronunciation removed, GCIDE's character codes decoded (``[e']`` -> ``é``), whitespace collapsed, cut
at ``MAX_DOCUMENT_CHARS``. Paragraphs GCIDE took from WordNet (tagged ``[WordNet 1.5]``) are dropped,
so WordNet stays free for independent checks. Corpus ids are ``gcide:<term in lower case>``.

Judged queries: the term -> its entry. A hash of the term puts ``TEST_FRACTION`` of the terms in the
held-out test queries and the rest in training pairs (term, definition); entries that only point to
another ("See Mouflon.") stay in the corpus but are neither.

The package file is read where ``apt-get install dict-gcide`` puts it, else from
``cache_dir() / "sources"``, where the build downloads it with ``apt-get download`` (the Debian
archive) when it is missing; its sha256 is checked, so the corpus is the same on every machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from mrl_core.builtin import _write_json_atomically
from mrl_core.builtin.docstrings import MAX_DOCUMENT_CHARS
from mrl_core.dataset import DatasetError, RetrievalDataset
from mrl_core.paths import cache_dir

PACKAGE = "dict-gcide"
PACKAGE_VERSION = "0.48.5+nmu2"
PACKAGE_FILE = f"{PACKAGE}_{PACKAGE_VERSION}_all.deb"
PACKAGE_SHA256 = "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f"
FORMAT_VERSION = 1
"""Bump when the extraction rules change, so stale caches are not reused."""
SYSTEM_FOLDER = Path("/usr/share/dictd")
"""Where ``apt-get install dict-gcide`` puts gcide.index and gcide.dict.dz."""

TEST_FRACTION = 0.05
"""Share of the terms held out as test queries (about 5,000), the rest are training pairs."""
MIN_BODY_WORDS = 3

_B64 = {character: value for value, character in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
# A paragraph's source tag alone on its last line: "[1913 Webster]", "[WordNet 1.5 +PJC]".
_TAG_LINE = re.compile(r"^\s*\[([^\[\]\n]{1,60})\]\s*$")
_SOURCE_WORDS = re.compile(r"webster|wordnet|pjc|century|foldoc|\bas\b|rdh|suppl", re.I)
_INLINE_TAG = re.compile(r"\[(?:1913 Webster|Webster 1913 Suppl\.|PJC|WordNet[^\]]*)[^\]]*\]")
# An entry's header: 'Abdication \Ab`di*ca"tion\, n. [L. ...]'; the pronunciation may wrap lines.
_HEAD = re.compile(r"^(?P<term>[^\\\n]+?)\s*\\[^\\]*\\,?\s*")
_BACKSLASH_PRONUNCIATION = re.compile(r"\\[^\\]*\\")
# Respelled pronunciations in parentheses: "(h[asl]*m[=o]s")".
_PARENTHESES = re.compile(r"\(([^()]*)\)")
_PRONUNCIATION_TOKEN = re.compile(r"^[\w\[\]=^'`\".*~,;:\-/]+$")
# GCIDE character codes: ['e] -> é, [=o] -> ō, [a^] -> ă, [ae] -> æ.
_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
            ".": "\u0307", ",": "\u0327", "-": "\u0304"}
_NAMED_CHARACTERS = {
    "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "yogh": "ȝ", "deg": "°", "sect": "§",
    "root": "√", "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "pi": "π", "phi": "φ",
    "ng": "ŋ", "imac": "ī", "asl": "ă", "aum": "ä", "add": "ȧ", "udd": "u̇", "oo": "oo", "th": "th", "bar": "|",
    "dsdot": "ḍ",
}
_CHARACTER_CODE = re.compile(r"\[([A-Za-z]{2,6}|['`^\"~=.,\-][A-Za-z]{1,2}|[A-Za-z]{1,2}[\^])\]")
# A body that only points to another entry: "n. (Zool.) See Mouflon.", "imp. of Bear."
_REDIRECT = re.compile(
    r"^(?:[\w.&,;' ]{0,30}?)?(?:\([A-Za-z. ]+\)\s*)?(?:See|Same as|Variant of|Alt\. of|Obs\. form of|pl\. of|"
    r"imp\. of|p\. p\. of)\b[^.]*\.?\s*(?:\[[^\]]*\])?\s*$",
    re.I,
)
_WHITESPACE = re.compile(r"\s+")


def build_large(*, use_cache: bool = True) -> RetrievalDataset:
    """Builds (or loads from ``cache_dir() / "builtin"``) the ``builtin:large`` dataset.

    The extraction reads the package (downloading it first when it is neither installed nor cached) and
    takes about 20 s of CPU; the result is cached by format version and package checksum.

    Raises:
        DatasetError: the package cannot be found or downloaded, or does not match its checksum.
    """
    if use_cache:
        cached = _read_cache(large_cache_path())
        if cached is not None:
            return cached
    _, index, data = source_files()
    entries = extract_entries(index, data)
    return write_cache(entries) if use_cache else to_dataset(entries)


def write_cache(entries: list["Entry"]) -> RetrievalDataset:
    """Store entries as the ``builtin:large`` cache every later load reads (tests store a miniature); return the dataset."""
    dataset = to_dataset(entries)
    _write_json_atomically(large_cache_path(), {
        "format": FORMAT_VERSION,
        "package_sha256": PACKAGE_SHA256,
        "fingerprint": dataset.fingerprint,
        "entries": [[entry.key, entry.term, entry.text, entry.redirect] for entry in entries],
    })
    return dataset


def large_cache_path() -> Path:
    """The cache file of ``builtin:large``, named by the format version and the package checksum."""
    return cache_dir() / "builtin" / f"large-{FORMAT_VERSION}-{PACKAGE_SHA256[:16]}.json"


def _read_cache(path: Path) -> RetrievalDataset | None:
    """The cached dataset, or None when absent or damaged (a damaged cache is rebuilt, not trusted)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT_VERSION or payload.get("package_sha256") != PACKAGE_SHA256:
            return None
        dataset = to_dataset([Entry(key, term, text, bool(redirect)) for key, term, text, redirect in payload["entries"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dataset if dataset.fingerprint == payload.get("fingerprint") else None


@dataclass(frozen=True)
class Entry:
    """One document: a head term and its definition text, and whether it only points to another entry."""

    key: str
    term: str
    text: str
    redirect: bool


def source_files() -> tuple[str, bytes, bytes]:
    """(where it was read, gcide.index bytes, gcide.dict.dz bytes), downloading the package when missing.

    Raises:
        DatasetError: the package is not installed, not in the cache and cannot be downloaded, or its
            file does not match ``PACKAGE_SHA256``; the message says how to get it.
    """
    system_index, system_data = SYSTEM_FOLDER / "gcide.index", SYSTEM_FOLDER / "gcide.dict.dz"
    if system_index.is_file() and system_data.is_file():
        return str(SYSTEM_FOLDER), system_index.read_bytes(), system_data.read_bytes()
    package = package_path()
    if not package.is_file():
        download_package(package.parent)
    return str(package), *_read_package(package)


def package_path() -> Path:
    """Where the build keeps (and looks for) the Debian package file."""
    return cache_dir() / "sources" / PACKAGE_FILE


def download_package(folder: Path) -> Path:
    """``apt-get download dict-gcide=VERSION`` into ``folder``; returns the checked file's path."""
    how = (
        f"builtin:large is built from Debian's {PACKAGE} {PACKAGE_VERSION} (GPL-2+): run `apt-get install {PACKAGE}`, "
        f"or put {PACKAGE_FILE} (from `apt-get download {PACKAGE}={PACKAGE_VERSION}` or the Debian archive) in {folder}"
    )
    if shutil.which("apt-get") is None:
        raise DatasetError(f"{folder / PACKAGE_FILE}: not found and apt-get is not available; {how}")
    folder.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        ["apt-get", "download", f"{PACKAGE}={PACKAGE_VERSION}"], cwd=folder, capture_output=True, text=True, check=False,
        stdin=subprocess.DEVNULL,
    )
    path = folder / PACKAGE_FILE
    if completed.returncode != 0 or not path.is_file():
        raise DatasetError(f"{path}: apt-get download failed ({completed.stderr.strip()[-500:]}); {how}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PACKAGE_SHA256:
        path.unlink()
        raise DatasetError(f"{path}: sha256 {digest} is not the expected {PACKAGE_SHA256}; removed it. {how}")
    return path


def _read_package(path: Path) -> tuple[bytes, bytes]:
    """gcide.index and gcide.dict.dz out of a .deb (an ar archive holding data.tar.xz), checked by sha256."""
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != PACKAGE_SHA256:
        raise DatasetError(f"{path}: sha256 {digest} is not {PACKAGE} {PACKAGE_VERSION}'s {PACKAGE_SHA256}")
    if not raw.startswith(b"!<arch>\n"):
        raise DatasetError(f"{path}: not a Debian package (no ar header)")
    position = 8
    while position + 60 <= len(raw):
        header = raw[position : position + 60]
        name, size = header[:16].decode("ascii").strip().rstrip("/"), int(header[48:58])
        position += 60
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(raw[position : position + size])) as archive:
                members = {member.name.lstrip("./"): member for member in archive.getmembers()}
                try:
                    return tuple(
                        archive.extractfile(members[f"usr/share/dictd/{name}"]).read()
                        for name in ("gcide.index", "gcide.dict.dz")
                    )
                except KeyError as error:
                    raise DatasetError(f"{path}: the package holds no {error.args[0]}") from None
        position += size + size % 2
    raise DatasetError(f"{path}: no data.tar member in the package")


def _base64_number(text: str) -> int:
    value = 0
    for character in text:
        value = value * 64 + _B64[character]
    return value


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # three stray cp1252 bytes in gcide 0.48.5
        return raw.decode("cp1252", errors="replace")


def dictd_blocks(index: bytes, data: bytes) -> list[tuple[list[str], str]]:
    """(head words pointing at it, text) per distinct block of a dictd database, in file order."""
    text = gzip.decompress(data)
    blocks: dict[tuple[int, int], list[str]] = {}
    for line in index.decode("utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-") or parts[0].startswith("00database"):
            continue
        blocks.setdefault((_base64_number(parts[1]), _base64_number(parts[2])), []).append(parts[0])
    return [(blocks[key], _decode(text[key[0] : key[0] + key[1]])) for key in sorted(blocks)]


def _character(match: re.Match) -> str:
    code = match.group(1)
    if code in _NAMED_CHARACTERS:
        return _NAMED_CHARACTERS[code]
    if code[0] in _ACCENTS and code[1:].isalpha():
        return unicodedata.normalize("NFC", code[1:] + _ACCENTS[code[0]])
    if code.endswith("^") and code[:-1].isalpha():
        return unicodedata.normalize("NFC", code[:-1] + "\u0306")
    return match.group(0)  # [Obs.], [R.], [Slang] stay


def _drop_pronunciation(match: re.Match) -> str:
    inner = match.group(1)
    tokens = inner.split()
    marked = any(character in inner for character in '"*') or _CHARACTER_CODE.search(inner)
    if tokens and marked and all(token == "or" or _PRONUNCIATION_TOKEN.match(token) for token in tokens):
        return " "
    return match.group(0)


def parse_block(text: str) -> tuple[str, str] | None:
    """(term, definition) of one GCIDE block, or None for a block that is not an entry or keeps too few words."""
    text = text.strip("\n").lstrip()
    head = _HEAD.match(text)
    if head is None:  # an index pointer into the middle of another entry
        return None
    term = _CHARACTER_CODE.sub(_character, head.group("term").strip())
    kept = []
    for paragraph in re.split(r"\n\s*\n", text[head.end() :]):
        lines = [line for line in paragraph.split("\n") if line.strip()]
        tags = []
        while lines and (tag := _TAG_LINE.match(lines[-1])) and _SOURCE_WORDS.search(tag.group(1)):
            tags.append(tag.group(1))
            lines.pop()
        body = _INLINE_TAG.sub(" ", " ".join(line.strip() for line in lines))
        if any("wordnet" in tag.lower() for tag in tags) or "wordnet" in body.lower():
            continue
        if body.strip():
            kept.append(body)
    body = " ".join(kept)
    body = _BACKSLASH_PRONUNCIATION.sub(" ", body)
    body = _PARENTHESES.sub(_drop_pronunciation, body)
    body = _CHARACTER_CODE.sub(_character, body)
    body = _WHITESPACE.sub(" ", body.replace("{", "").replace("}", "")).strip()
    body = re.sub(r"\s+([,.;:])", r"\1", body).lstrip(",; ")
    if not term or len(body.split()) < MIN_BODY_WORDS:
        return None
    return term, body


def extract_entries(index: bytes, data: bytes) -> list[Entry]:
    """One entry per distinct head term (case-insensitive), definitions joined in file order."""
    terms: dict[str, str] = {}
    bodies: dict[str, list[str]] = {}
    for _, block in dictd_blocks(index, data):
        parsed = parse_block(block)
        if parsed is not None:
            term, body = parsed
            key = term.lower()
            terms.setdefault(key, term)
            bodies.setdefault(key, []).append(body)
    entries = []
    for key, term in terms.items():
        text = " ".join(bodies[key])[:MAX_DOCUMENT_CHARS]
        entries.append(Entry(key=key, term=term, text=text, redirect=_REDIRECT.match(text) is not None))
    return entries


def _test_share(key: str) -> float:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def to_dataset(entries: list[Entry]) -> RetrievalDataset:
    """The entries as ``builtin:large``: every entry a document; non-redirect terms split into test queries and pairs."""
    query_ids: list[str] = []
    query_texts: list[str] = []
    qrels: dict[str, dict[str, int]] = {}
    train_pairs: list[tuple[str, str]] = []
    for entry in entries:
        if entry.redirect:
            continue
        document_id = f"gcide:{entry.key}"
        if _test_share(entry.key) < TEST_FRACTION:
            query_ids.append(f"q:{document_id}")
            query_texts.append(entry.term)
            qrels[f"q:{document_id}"] = {document_id: 1}
        else:
            train_pairs.append((entry.term, entry.text))
    return RetrievalDataset(
        name="builtin:large",
        source="builtin:large",
        corpus_ids=[f"gcide:{entry.key}" for entry in entries],
        corpus_texts=[entry.text for entry in entries],
        query_ids=query_ids,
        query_texts=query_texts,
        qrels=qrels,
        train_pairs=train_pairs,
    )


EXAMPLE_QUERIES = {
    "an instrument for measuring temperature": "gcide:thermometer",
    "a small lizard that changes its colour": "gcide:chameleon",
    "a word or sentence that reads the same backward and forward": "gcide:palindrome",
    "the science of the stars, planets and other heavenly bodies": "gcide:astronomy",
    "the art of beautiful handwriting": "gcide:calligraphy",
}
"""Reverse-dictionary queries (a description -> the word), each with the entry it should find: with the base model,
exact search ranks them 2, 3, 1, 1 and 6 among the 105,377 entries (the rest of each top 10 is on topic)."""
