"""builtin:large: GCIDE entries read from a dictd database inside a Debian package, on a hand-made miniature."""

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from mrl_core.builtin import gcide
from mrl_core.data import DatasetError, builtin_is_built, check_source, load_dataset

# GCIDE's own layout: 'Term \pro*nun"ci*a*tion\, part of speech', indented senses, a source tag per paragraph.
BLOCKS = [
    (["Barometer"], 'Barometer \\Ba*rom"e*ter\\, n. [Gr. ba`ros weight + -meter.]\n   An instrument for determining the '
     "weight or pressure of the\n   atmosphere.\n   [1913 Webster]\n\n   2. a device that measures atmospheric pressure.\n"
     "   [WordNet 1.5]\n"),
    (["barometer"], 'barometer \\ba*rom"e*ter\\, v. t.\n   To measure with a {barometer}, as the air.\n   [PJC]\n'),
    (["Muflon"], 'Muflon \\Muf"lon\\, n. (Zool.)\n   See {Mouflon}.\n   [1913 Webster]\n'),
    (["Cafe", "Caf['e]"], "Caf['e] \\Ca*f['e]\"\\ (k[.a]*f[=a]\"), n.\n   A coffee house; a restaurant serving light meals.\n"
     "   [1913 Webster]\n"),
    (["Zzz"], 'Zzz \\Zzz\\, n.\n   sleep, as drawn in comics today.\n   [WordNet 1.5]\n'),
    (["Pointer"], "not an entry header, only text inside another entry\n"),
]


def _base64(number: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[number % 64] + digits
        number //= 64
        if number == 0:
            return digits


def dictd_files(blocks=BLOCKS) -> tuple[bytes, bytes]:
    """(gcide.index, gcide.dict.dz) holding the blocks, as dictd lays them out (plus a header line to skip)."""
    data, lines, offset = b"", ["00databaseinfo\tA\tB"], 0
    for headwords, text in blocks:
        raw = text.encode("utf-8")
        lines += [f"{headword}\t{_base64(offset)}\t{_base64(len(raw))}" for headword in headwords]
        data, offset = data + raw, offset + len(raw)
    return "\n".join(lines).encode("utf-8") + b"\n", gzip.compress(data, mtime=0)


def debian_package(index: bytes, data: bytes) -> bytes:
    """A .deb (ar archive: debian-binary, control.tar.xz, data.tar.xz) holding usr/share/dictd/gcide.*."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as archive:
        for name, content in (("gcide.index", index), ("gcide.dict.dz", data)):
            member = tarfile.TarInfo(f"./usr/share/dictd/{name}")
            member.size = len(content)
            archive.addfile(member, io.BytesIO(content))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", payload.getvalue())]
    out = b"!<arch>\n"
    for name, content in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode("ascii") + content
        out += b"\n" if len(content) % 2 else b""
    return out


@pytest.fixture
def packaged(isolated_store, tmp_path, monkeypatch):
    """The miniature as the cached package file, its checksum taken as the pinned one, no system install."""
    package = debian_package(*dictd_files())
    monkeypatch.setattr(gcide, "PACKAGE_SHA256", hashlib.sha256(package).hexdigest())
    monkeypatch.setattr(gcide, "SYSTEM_FOLDER", tmp_path / "no-system-install")
    gcide.package_path().parent.mkdir(parents=True)
    gcide.package_path().write_bytes(package)
    return package


def test_a_block_loses_its_pronunciation_and_wordnet_paragraphs_and_decodes_characters():
    term, body = gcide.parse_block(BLOCKS[0][1])
    assert term == "Barometer"
    assert body == ("n. [Gr. ba`ros weight + -meter.] An instrument for determining the weight or pressure of the "
                    "atmosphere.")
    assert gcide.parse_block(BLOCKS[3][1]) == ("Café", "n. A coffee house; a restaurant serving light meals.")
    assert gcide.parse_block(BLOCKS[4][1]) is None  # only WordNet text
    assert gcide.parse_block(BLOCKS[5][1]) is None  # no entry header


def test_entries_join_a_terms_blocks_and_only_real_definitions_become_queries():
    entries = gcide.extract_entries(*dictd_files())
    assert [(entry.key, entry.redirect) for entry in entries] == [
        ("barometer", False), ("muflon", True), ("café", False)
    ]
    assert entries[0].text.endswith("atmosphere. v. t. To measure with a barometer, as the air.")
    dataset = gcide.to_dataset(entries)
    assert dataset.corpus_ids == ["gcide:barometer", "gcide:muflon", "gcide:café"]
    # Every non-redirect term is either a held-out query judging its own entry or a training pair.
    queries = {text: dataset.qrels[query_id] for query_id, text in zip(dataset.query_ids, dataset.query_texts)}
    pairs = dict(dataset.train_pairs)
    assert set(queries) | set(pairs) == {"Barometer", "Café"} and not set(queries) & set(pairs)
    for term, judged in queries.items():
        assert judged == {f"gcide:{term.lower()}": 1}
    assert "Muflon" not in queries and "Muflon" not in pairs


def test_large_builds_from_the_cached_package_then_reads_its_cache(packaged, monkeypatch):
    check_source("builtin:large")
    assert not builtin_is_built("builtin:large")
    dataset = load_dataset("builtin:large")
    assert dataset.name == dataset.source == "builtin:large" and dataset.corpus_size == 3
    assert builtin_is_built("builtin:large")
    cached = json.loads(gcide.large_cache_path().read_text(encoding="utf-8"))
    assert cached["fingerprint"] == dataset.fingerprint and len(cached["entries"]) == 3
    gcide.package_path().unlink()  # the second load reads the cache only
    assert load_dataset("builtin:large").fingerprint == dataset.fingerprint
    gcide.large_cache_path().write_text("{damaged", encoding="utf-8")
    monkeypatch.setattr(gcide.shutil, "which", lambda name: None)  # no download from the Debian archive here
    with pytest.raises(DatasetError, match="not found and apt-get is not available"):
        load_dataset("builtin:large")  # a damaged cache is rebuilt, and the package is gone


def test_a_package_that_does_not_match_its_checksum_is_refused(packaged, monkeypatch):
    monkeypatch.setattr(gcide, "PACKAGE_SHA256", "0" * 64)
    with pytest.raises(DatasetError, match=r"dict-gcide_0\.48\.5\+nmu2_all\.deb: sha256 [0-9a-f]{64} is not"):
        load_dataset("builtin:large")


def test_without_the_package_or_apt_get_the_error_says_how_to_get_it(isolated_store, tmp_path, monkeypatch):
    monkeypatch.setattr(gcide, "SYSTEM_FOLDER", tmp_path / "no-system-install")
    monkeypatch.setattr(gcide.shutil, "which", lambda name: None)
    with pytest.raises(DatasetError) as raised:
        load_dataset("builtin:large")
    message = str(raised.value)
    assert str(gcide.package_path()) in message and "apt-get install dict-gcide" in message
    with pytest.raises(DatasetError, match="builtin:large"):
        check_source("builtin:huge")
