"""Synthetic long-range text: facts stated early and recalled later, with the recall bytes marked.

Description:
    Each document is a story of lowercase filler sentences. A name is given a code of random
    uppercase letters (``"remember: mila's code is [QXW]."``); after a gap of filler, the
    story recalls it (``"so mila's code was <QXW>."``). The code bytes in the recall are
    unpredictable from anything but the earlier statement, so the bits per byte at exactly
    those positions measure memory and nothing else. Uppercase letters appear only in codes,
    and ``<`` only before a recall, so even the memoryless ``none`` core (which sees one byte)
    knows that a recalled letter comes and pays log2(26) = 4.7 bits for it, the best any model
    without memory can do; a model that remembers pays close to 0.

Options:
    ``facts`` per round (more than one: codes must be bound to names), ``rounds`` per document
    (long documents, few resets), ``compact`` phrasing (``[QXW]`` ... ``<QXW>``, no names
    unless ``facts > 1``). Measured here: a 64-wide LSTM finds compact recalls 3-19 bytes back
    in ~500 steps of 16x64 bytes, but not sentence-phrased ones 22-60 bytes back within 1,500
    steps, nor compact ones 18-26 bytes back within 800: short distances in the mix bootstrap
    the long ones.

Two sets share this format, so a model trained on one is evaluated on the other:
    ``recall``: gaps of ``gap_min``..``gap_max`` filler bytes. ``needle``: one fact per
    document with the recall 1k to 16k bytes after it (``distances``), to chart recall
    accuracy against distance.

Marks:
    ``distance[i] > 0`` where byte ``i`` is a recalled code byte; the value is how many bytes
    back the same byte was stated. Filler never contains uppercase letters.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

NAMES = [
    "ada",
    "mila",
    "omar",
    "ines",
    "yuki",
    "ravi",
    "lena",
    "tomas",
    "nora",
    "ivan",
    "sara",
    "kofi",
    "lior",
    "emma",
    "juan",
    "hana",
    "paul",
    "zoe",
    "amir",
    "noah",
]
SUBJECTS = [
    "the cat",
    "a dog",
    "the old man",
    "my aunt",
    "the river",
    "a small bird",
    "the baker",
    "our teacher",
]
VERBS = [
    "sat near",
    "walked past",
    "looked at",
    "found",
    "painted",
    "sang about",
    "carried",
    "waited for",
]
OBJECTS = [
    "the gate",
    "a red box",
    "the hill",
    "some bread",
    "the quiet lake",
    "an open door",
    "the long road",
    "a tree",
]
TAILS = ("", " in the rain", " at noon", " again", " without a word", " for a while")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class MarkedDocument:
    """One document and, per byte, the recall distance (0 where the byte is not a recall)."""

    text: bytes
    distance: list[int]


def filler(rng: random.Random, n_bytes: int) -> str:
    """Exactly ``n_bytes`` bytes of lowercase sentences (the last one cut, ending in a space)."""
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}. "
        parts.append(s)
        size += len(s)
    text = "".join(parts)[:n_bytes]
    return text[:-1] + " " if text else text


def story(
    rng: random.Random,
    gaps: Sequence[int],
    code_len: int = 3,
    facts: int = 1,
    rounds: int = 1,
    lead_max: int = 20,
    compact: bool = False,
) -> MarkedDocument:
    """A document of ``rounds`` episodes, each stating ``facts`` name-code facts and recalling
    every one after a gap of filler drawn from ``gaps``.

    Within a round all facts are stated first, then recalled in a shuffled order, so with
    ``facts > 1`` the model must bind each code to its name. A name stated again in a later
    round has a new code; the recall distance counts from its latest statement.
    """
    out = bytearray()
    dist: list[int] = []
    stated: dict[str, int] = {}

    def emit(s: str, marks: list[int] | None = None) -> None:
        out.extend(s.encode())
        dist.extend(marks if marks is not None else [0] * len(s))

    emit(filler(rng, rng.randint(0, lead_max)))
    for _ in range(rounds):
        names = rng.sample(NAMES, facts)
        codes = ["".join(rng.choice(LETTERS) for _ in range(code_len)) for _ in names]
        for name, code in zip(names, codes, strict=True):
            emit((name if facts > 1 else "") + "[" if compact else f"remember: {name}'s code is [")
            stated[name] = len(out)
            emit(code)
            emit("]" if compact else "]. ")
        order = list(range(facts))
        rng.shuffle(order)
        for i in order:
            emit(filler(rng, rng.choice(gaps)))
            emit(
                (names[i] if facts > 1 else "") + "<" if compact else f"so {names[i]}'s code was <"
            )
            back = len(out) - stated[names[i]]
            emit(codes[i], [back] * code_len)
            emit(">" if compact else ">. ")
    emit(filler(rng, rng.randint(0, 20)).rstrip() + "\n")
    return MarkedDocument(bytes(out), dist)


def recall_set(
    docs: int,
    gap_min: int = 20,
    gap_max: int = 60,
    code_len: int = 3,
    facts: int = 1,
    rounds: int = 1,
    lead_max: int = 20,
    compact: bool = False,
    seed: int = 0,
) -> list[MarkedDocument]:
    """``docs`` stories whose recalls come ``gap_min``..``gap_max`` bytes of filler later."""
    if not 0 <= gap_min <= gap_max:
        raise ValueError(f"need 0 <= gap_min <= gap_max, got {gap_min}, {gap_max}")
    if not 1 <= facts <= len(NAMES):
        raise ValueError(f"facts must be in 1..{len(NAMES)}, got {facts}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if code_len < 1:
        raise ValueError(f"code_len must be >= 1, got {code_len}")
    rng = random.Random(seed)
    gaps = range(gap_min, gap_max + 1)
    return [story(rng, gaps, code_len, facts, rounds, lead_max, compact) for _ in range(docs)]


def needle_set(
    docs_per_distance: int,
    distances: Sequence[int] = (1024, 2048, 4096, 8192, 16384),
    code_len: int = 3,
    compact: bool = False,
    lead_max: int = 20,
    seed: int = 0,
) -> list[MarkedDocument]:
    """One fact per document, recalled after ``distance`` bytes of filler, for every distance.

    Use the same ``code_len``, ``compact`` and ``lead_max`` as in training: only the distance
    changes.
    """
    if any(d < 1 for d in distances):
        raise ValueError(f"distances must be positive, got {list(distances)}")
    rng = random.Random(seed)
    return [
        story(rng, [d], code_len, facts=1, lead_max=lead_max, compact=compact)
        for d in distances
        for _ in range(docs_per_distance)
    ]
