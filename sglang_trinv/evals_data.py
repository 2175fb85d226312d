"""Offline eval data: CPython's own standard-library sources, split into train and held-out files.

Every machine with Python has ``Lib/*.py``, so the shipped tiny model can be trained and its perplexity
measured with no download. The held-out files are fixed by name (present in CPython 3.10–3.13); their
contents differ between Python versions, so a perplexity is comparable only for the same version
(the model card and every report record it).
"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

# Held out from tokenizer and model training; the default perplexity corpus of ``sglang-trinv eval``.
HELDOUT_FILES = (
    "heapq.py", "textwrap.py", "fractions.py", "shlex.py", "fnmatch.py",
    "glob.py", "colorsys.py", "queue.py", "sched.py", "graphlib.py",
)


def python_version() -> str:
    return "%d.%d.%d" % sys.version_info[:3]


def stdlib_dir() -> Path:
    """``Lib/`` of the running Python."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_split(lib: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(train files, held-out files): top-level ``Lib/*.py``, sorted; held-out = :data:`HELDOUT_FILES`."""
    lib = lib or stdlib_dir()
    files = sorted(lib.glob("*.py"))
    if not files:
        raise FileNotFoundError(f"no *.py files in {lib}: is this a CPython with its standard library?")
    held = [f for f in files if f.name in HELDOUT_FILES]
    missing = sorted(set(HELDOUT_FILES) - {f.name for f in held})
    if missing:
        raise FileNotFoundError(f"held-out files missing from {lib}: {', '.join(missing)}")
    return [f for f in files if f.name not in HELDOUT_FILES], held


def read_texts(paths) -> list[str]:
    """Text of each file (UTF-8, undecodable bytes replaced); clear error for a missing file."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"corpus file not found: {p}")
        out.append(p.read_text(encoding="utf-8", errors="replace"))
    return out


def load_corpus(spec: str | None) -> tuple[list[str], str]:
    """Documents of a perplexity corpus and a label for reports.

    ``spec``: ``None``/``"stdlib-heldout"`` (the held-out stdlib files), a ``.txt``/``.py`` file, a directory
    (its ``*.py`` and ``*.txt`` files), or a ``.jsonl`` file with a ``"text"`` field per line."""
    if spec in (None, "", "stdlib-heldout"):
        _, held = stdlib_split()
        return read_texts(held), f"stdlib-heldout (Python {python_version()}: {', '.join(HELDOUT_FILES)})"
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"corpus not found: {p}")
    if p.is_dir():
        files = sorted([*p.glob("*.py"), *p.glob("*.txt")])
        docs = read_texts(files)
    elif p.suffix == ".jsonl":
        docs = [json.loads(line)["text"] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        docs = read_texts([p])
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"corpus {p} is empty (no non-blank text)")
    return docs, str(p)


def token_stream(tokenizer, docs: list[str]) -> list[int]:
    """All documents tokenized and joined, each followed by the EOS token (the training layout)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer(d, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return ids


def token_windows(ids: list[int], ctx: int, max_tokens: int | None = None) -> list[list[int]]:
    """Non-overlapping windows of ``ctx`` tokens (the last one may be shorter, dropped if < 2 tokens).
    Perplexity scores tokens 1…len−1 of each window, so every score has in-window context only."""
    if ctx < 2:
        raise ValueError("context length must be at least 2 tokens")
    if max_tokens is not None:
        ids = ids[:max_tokens]
    wins = [ids[i:i + ctx] for i in range(0, len(ids), ctx)]
    return [w for w in wins if len(w) >= 2]
