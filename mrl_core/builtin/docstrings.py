"""From a callable's docstring to one item: its summary as the query, and its name, signature and
the rest of the docstring, cleaned, as the document.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

MIN_SUMMARY_WORDS = 4
MAX_SUMMARY_WORDS = 30
MIN_BODY_WORDS = 15
# The encoder truncates at 256 tokens (~1,000-1,300 characters of prose); longer text only costs time.
MAX_DOCUMENT_CHARS = 1500

# A leading "name(args) -> result" paragraph, as C extensions, numpy ufuncs and torch write them.
_SIGNATURE_LINE = re.compile(r"^[A-Za-z_][\w.]*\(.*\)\s*(?:->\s*(?P<result>.*))?$", re.DOTALL)
# Memory addresses in default-value reprs change from run to run.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# "D.pop(k[,d]) -> v, remove ..." starts with a call, not with words a user would type.
_CALL_PREFIX = re.compile(r"^[A-Za-z_][\w.]*\([^)]*\)")
# "e.g. Foo" and "i.e. Bar" end in lower-case abbreviations, so a capital after them starts no sentence.
_SENTENCE_END = re.compile(r"(?<![ .(]e\.g\.)(?<![ .(]i\.e\.)(?<=[.!?])\s+(?=[A-Z])")
_RST_ROLE = re.compile(r":[\w:.-]+:`~?(?:[^`<]*<)?([^`>]+)>?`")
_DOCTEST_HEADING = re.compile(r"^\s*(?:\*\*)?(?:Examples?|Usage)(?:\*\*)?\s*:{0,2}\s*$")
_SECTION_RULE = re.compile(r"^\s*[-=~^]{3,}\s*$")
_VERSION_DIRECTIVE = re.compile(r"^\s*\.\. (?:versionadded|versionchanged|versionremoved)::")
# reST directive markers (".. note::") and their option lines (":noindex:") carry no words.
_DIRECTIVE_MARKER = re.compile(r"^(\s*)\.\. [\w:-]+::\s*")
_DIRECTIVE_OPTION = re.compile(r"^\s*:[\w-]+:\s*$")
_WORDLESS_LINES = (_DOCTEST_HEADING, _SECTION_RULE, _VERSION_DIRECTIVE, _DIRECTIVE_OPTION)


@dataclass(frozen=True)
class _Item:
    """One callable as a query (its summary) and a document (name, signature, rest of the docstring)."""

    qualified_name: str
    summary: str
    document: str


def _make_item(qualified_name: str, obj: object) -> tuple[_Item, str] | None:
    """The item for obj and its document body (no name or signature); None if the docstring fails the filters."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    paragraphs = [paragraph for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if paragraph.strip()]
    doc_signature = None
    # numpy and scipy ufuncs carry two signature paragraphs (generic, then specific); keep the last.
    while paragraphs and (signature := _signature_paragraph(paragraphs[0])) is not None:
        doc_signature = signature
        paragraphs.pop(0)
    if not paragraphs:
        return None
    summary = _clean_text(paragraphs[0])
    opening_rest = ""
    if len(summary.split()) > MAX_SUMMARY_WORDS:
        # A long opening paragraph: its first sentence is the summary, the others open the body.
        summary, opening_rest = _first_sentence(summary)
    if _CALL_PREFIX.match(summary) or not MIN_SUMMARY_WORDS <= len(summary.split()) <= MAX_SUMMARY_WORDS:
        return None
    body_text = opening_rest + "\n\n" + _strip_examples("\n\n".join(paragraphs[1:]))
    body = _truncate(_clean_text(body_text), MAX_DOCUMENT_CHARS)
    if len(body.split()) < MIN_BODY_WORDS or summary.lower() in body.lower():
        return None
    signature = doc_signature if doc_signature is not None else _signature(obj)
    document = _truncate(" ".join(f"{qualified_name}{signature} {body}".split()), MAX_DOCUMENT_CHARS)
    return _Item(qualified_name=qualified_name, summary=summary, document=document), body


def _first_sentence(text: str) -> tuple[str, str]:
    """Splits text after its first sentence: a '.', '!' or '?' followed by a space and a capital letter."""
    parts = _SENTENCE_END.split(text, maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (text, "")


def _signature_paragraph(paragraph: str) -> str | None:
    """The "(args) -> result" part of a leading call-signature paragraph, or None if it is prose."""
    text = " ".join(paragraph.split())
    match = _SIGNATURE_LINE.match(text)
    if match is None:
        return None
    result = match.group("result")
    # "D.pop(k[,d]) -> v, remove specified key and ..." is a summary in disguise, not a signature.
    if result is not None and len(result.split()) > 4:
        return None
    return text[text.index("(") :]


def _signature(obj: object) -> str:
    try:
        return _ADDRESS.sub("", str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return ""


def _strip_examples(text: str) -> str:
    """Drops doctest sessions and their output, Examples headings and section underlines."""
    kept: list[str] = []
    in_session = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_session = True
            continue
        if in_session:
            # Output lines and "..." continuations run until the next blank line.
            if stripped:
                continue
            in_session = False
        if any(pattern.match(line) for pattern in _WORDLESS_LINES):
            continue
        kept.append(_DIRECTIVE_MARKER.sub(r"\1", line))
    return "\n".join(kept)


def _clean_text(text: str) -> str:
    """Turns reST roles and literals into plain words and collapses whitespace."""
    text = _RST_ROLE.sub(r"\1", text)
    text = text.replace("``", "").replace("`", "")
    return _ADDRESS.sub("", " ".join(text.split()))


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut
