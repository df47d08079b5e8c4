"""Byte corpora and the parallel streams a byte-level LM reads them through.

A corpus is a text file, a folder of ``.txt`` books (one document each), a PG-19 style root
with ``train/``, ``validation/`` and ``test/`` folders of books, or ``synthetic:recall`` /
``synthetic:needle`` (agents/lm/synthetic.py). Everything is read as raw bytes; nothing is
downloaded.

Training reads B contiguous streams through the concatenated documents (Transformer-XL's
ordered iterator); evaluation packs whole documents into streams so that the memory is carried
over each whole document. ``episode_start`` is True at every document's first byte.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mnemo.agents.config_loader import ConfigError
from mnemo.agents.file_kind import special_kind
from mnemo.agents.lm import synthetic

SPLITS = ("train", "validation", "test")
SYNTHETIC = ("recall", "needle")
_SPLIT_SEED = {"train": 0, "validation": 1, "test": 2}


class DataError(ConfigError):
    """Data the user must fix (missing, empty, binary, too short); the message is one line."""


@dataclass
class Corpus:
    """Concatenated documents as bytes, with per-byte document starts and recall marks."""

    data: Tensor
    """(N,) uint8 bytes of all documents back to back."""
    doc_start: Tensor
    """(N,) bool, True at the first byte of every document."""
    distance: Tensor
    """(N,) int32, > 0 at recall bytes (synthetic sets): how far back the fact was given; of
    text, a read-only view of one zero."""
    name: str

    def __len__(self) -> int:
        return int(self.data.numel())

    @property
    def n_docs(self) -> int:
        return int(self.doc_start.sum())

    def fingerprint(self) -> str:
        """What was read, as a resume checks it: size, documents and a hash of the bytes and
        document starts (a path names a file; its content may change)."""
        h = hashlib.sha256(self.data.numpy())  # the tensors' memory itself: no copy of a book
        h.update(self.doc_start.numpy())
        return f"{len(self)} bytes in {self.n_docs} documents, sha256 {h.hexdigest()[:16]}"

    @property
    def has_marks(self) -> bool:
        return bool((self.distance > 0).any())

    def doc_bounds(self) -> list[tuple[int, int]]:
        """(start, end) byte offsets of every document."""
        starts = torch.nonzero(self.doc_start).flatten().tolist()
        return list(zip(starts, [*starts[1:], len(self)]))

    def slice(self, a: int, b: int, name: str | None = None) -> Corpus:
        """Bytes [a, b); a document cut at ``a`` starts there."""
        start = self.doc_start[a:b]
        if b > a and not bool(start[0]):  # a copy only then: the train part of a book is most of it
            start = start.clone()
            start[0] = True
        return Corpus(self.data[a:b], start, self.distance[a:b], name or self.name)


def from_documents(docs: list[bytes], name: str, marks: list[list[int]] | None = None) -> Corpus:
    """Build a corpus from documents; empty documents are skipped.

    Text (no ``marks``) costs 2 bytes per byte (the byte and its document-start flag): its
    distances are one shared zero, not 4 bytes each, and the documents are copied once into
    place, not joined and copied again (a PG-19 train/ of ~11 GB took ~7 bytes per byte).
    """
    keep = [i for i, d in enumerate(docs) if d]
    if not keep:
        raise DataError(f"{name}: no non-empty documents")
    total = sum(len(docs[i]) for i in keep)
    data = np.empty(total, dtype=np.uint8)
    starts = torch.zeros(total, dtype=torch.bool)
    offset = 0
    for i in keep:
        data[offset : offset + len(docs[i])] = np.frombuffer(docs[i], dtype=np.uint8)
        starts[offset] = True
        offset += len(docs[i])
    if marks is None:
        distance = torch.zeros((), dtype=torch.int32).expand(total)  # read-only, stride 0
    else:
        distance = torch.tensor([m for i in keep for m in marks[i]], dtype=torch.int32)
    return Corpus(torch.from_numpy(data), starts, distance, name)


def read_text_bytes(path: Path) -> bytes:
    """The bytes of a text file; raises DataError for an empty or binary file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    if not raw:
        raise DataError(f"{path} is empty")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path} looks like binary data (NUL byte at offset {nul}), not text")
    return raw


def synthetic_corpus(kind: str, split: str, options: dict) -> Corpus:
    """Generate ``synthetic:<kind>``; each split uses its own seed."""
    seed = int(options.get("seed", 0)) * 10 + _SPLIT_SEED[split]
    code_len = int(options.get("code_len", 3))
    try:
        if kind == "recall":
            docs = synthetic.recall_set(
                int(options.get("docs", 2000))
                if split == "train"
                else int(options.get("val_docs", 200)),
                gap_min=int(options.get("gap_min", 20)),
                gap_max=int(options.get("gap_max", 60)),
                code_len=code_len,
                facts=int(options.get("facts", 1)),
                rounds=int(options.get("rounds", 1)),
                lead_max=int(options.get("lead_max", 20)),
                compact=bool(options.get("compact", False)),
                seed=seed,
            )
        else:
            docs = synthetic.needle_set(
                int(options.get("docs_per_distance", 4)),
                distances=list(options.get("distances", (1024, 2048, 4096, 8192, 16384))),
                code_len=code_len,
                compact=bool(options.get("compact", False)),
                lead_max=int(options.get("lead_max", 20)),
                seed=seed,
            )
    except ValueError as e:
        raise DataError(f"synthetic:{kind}: {e}") from e
    return from_documents(
        [d.text for d in docs], f"synthetic:{kind}/{split}", [d.distance for d in docs]
    )


def is_pg19_root(path: Path) -> bool:
    return path.is_dir() and any((path / s).is_dir() for s in SPLITS)


def check_data_path(path: Path) -> None:
    """Refuse, saying what it is, a path that is not a file or folder: missing, a dangling
    symlink or a symlink loop, a FIFO, socket or device (reading one would block or never end)."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"data path {path} is a symlink loop") from None
        if path.is_symlink():
            raise DataError(
                f"data path {path} is a symlink to {os.readlink(path)}, which does not exist"
            ) from None
        if e.errno == errno.ENOENT:
            raise DataError(f"data path does not exist: {path}") from None
        raise DataError(f"cannot read data path {path}: {e.strerror or e}") from None
    what = special_kind(mode)
    if what:
        raise DataError(f"data path {path} is {what}, not a text file or a folder of them")


def text_files(path: Path, split: str) -> tuple[Path, list[Path]]:
    """The folder a folder of books or a PG-19 root's ``split`` names, and its .txt files."""
    if is_pg19_root(path):
        if not (path / split).is_dir():
            raise DataError(
                f"{path} has no {split}/ folder (PG-19 layout: train/ validation/ test/)"
            )
        path = path / split
    files = sorted(p for p in path.glob("*.txt") if p.is_file())
    if not files:
        raise DataError(
            f"no .txt files in directory {path} (a folder of data holds .txt books, one "
            "document each, or train/ validation/ test/ folders of them)"
        )
    return path, files


def text_size(spec: str | None, split: str) -> int:
    """Bytes ``load_corpus(spec, split)`` would read from disk, found from the files' sizes
    alone: 0 for a synthetic set, no path, or a path it would refuse (it says why itself)."""
    if not spec or spec.startswith("synthetic:"):
        return 0
    path = Path(spec).expanduser()
    try:
        check_data_path(path)
        files = [path] if path.is_file() else text_files(path, split)[1]
        return sum(f.stat().st_size for f in files)
    except (DataError, OSError):
        return 0


def load_corpus(spec: str, split: str = "train", synthetic_options: dict | None = None) -> Corpus:
    """Load a corpus from a file, a folder of .txt books, a PG-19 root or ``synthetic:<kind>``.

    ``split`` picks the folder of a PG-19 root and the seed of a synthetic set; a plain file or
    flat folder is returned whole.

    Raises:
        DataError: the path does not exist, is empty, binary, or has no .txt files.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if spec.startswith("synthetic:"):
        kind = spec.split(":", 1)[1]
        if kind not in SYNTHETIC:
            raise DataError(
                f"unknown synthetic set {spec!r}; valid: synthetic:recall, synthetic:needle"
            )
        return synthetic_corpus(kind, split, synthetic_options or {})
    path = Path(spec).expanduser()
    check_data_path(path)
    if path.is_file():
        return from_documents([read_text_bytes(path)], str(path))
    path, files = text_files(path, split)
    docs = []
    for f in files:
        try:
            docs.append(read_text_bytes(f))
        except DataError as e:
            if f.stat().st_size == 0:
                continue  # one empty book in a folder is skipped, not fatal
            raise e
    return from_documents(docs, str(path))


class Segment(NamedTuple):
    """One training or evaluation segment of B streams and T bytes."""

    x: Tensor
    """(B, T) long input bytes."""
    y: Tensor
    """(B, T) long target bytes: the byte after each input."""
    episode_start: Tensor
    """(B, T) bool, True where x[:, t] is the first byte of a document."""
    mask: Tensor
    """(B, T) bool: targets that count in the loss (not padding, not a document's first byte,
    which has no context inside its document)."""
    distance: Tensor
    """(B, T) int32 recall distance of each target (0 = not a recall byte)."""


@dataclass
class Streams:
    """B byte streams of equal length L, read in segments of T."""

    data: Tensor  # (B, L) uint8
    starts: Tensor  # (B, L) bool
    distance: Tensor  # (B, L) int32
    valid: Tensor  # (B, L) bool, False on padding

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    def n_segments(self, seg_len: int) -> int:
        return -(-(self.data.shape[1] - 1) // seg_len)

    def segment(self, i: int, seg_len: int) -> Segment:
        """Segment ``i`` of a pass (``0 <= i < n_segments``); the last may be shorter."""
        a = i * seg_len
        b = min(a + seg_len, self.data.shape[1] - 1)
        return Segment(
            x=self.data[:, a:b].long(),
            y=self.data[:, a + 1 : b + 1].long(),
            episode_start=self.starts[:, a:b],
            mask=self.valid[:, a + 1 : b + 1] & ~self.starts[:, a + 1 : b + 1],
            distance=self.distance[:, a + 1 : b + 1],
        )

    def segments(self, seg_len: int) -> Iterator[Segment]:
        """One pass over the streams."""
        for i in range(self.n_segments(seg_len)):
            yield self.segment(i, seg_len)

    def rows(self, lo: int, hi: int) -> Streams:
        """Streams ``lo..hi-1`` (a data-parallel rank's share)."""
        return Streams(
            self.data[lo:hi], self.starts[lo:hi], self.distance[lo:hi], self.valid[lo:hi]
        )


def training_streams(corpus: Corpus, batch_size: int, seg_len: int) -> Streams:
    """Cut the corpus into ``batch_size`` contiguous streams; the tail that does not fit is dropped.

    Raises:
        DataError: the corpus is too short for one segment per stream.
    """
    length = len(corpus) // batch_size
    if length < seg_len + 1:
        raise DataError(
            f"{corpus.name} has {len(corpus)} bytes, too few for {batch_size} streams of at least "
            f"one segment ({seg_len + 1} bytes each); lower train.batch_size or train.segment_len"
        )
    n = batch_size * length

    def view(t: Tensor) -> Tensor:
        return t[:n].view(batch_size, length)

    starts = view(corpus.doc_start).clone()
    starts[:, 0] = True  # every stream begins fresh, mid-document or not
    valid = torch.ones(batch_size, length, dtype=torch.bool)
    return Streams(view(corpus.data), starts, view(corpus.distance), valid)


def document_streams(corpus: Corpus, n_streams: int, max_bytes: int | None = None) -> Streams:
    """Pack whole documents into at most ``n_streams`` streams, padded to equal length.

    Every document lies inside one stream, so its memory is carried from its first byte to its
    last. Longest documents go first, each to the currently shortest stream. ``max_bytes`` keeps
    only the first documents (the last one cut) up to that many bytes.
    """
    bounds = corpus.doc_bounds()
    if max_bytes is not None:
        kept, total = [], 0
        for a, b in bounds:
            if total >= max_bytes:
                break
            b = min(b, a + max_bytes - total)
            kept.append((a, b))
            total += b - a
        bounds = kept
    n_streams = max(1, min(n_streams, len(bounds)))
    lanes: list[list[tuple[int, int]]] = [[] for _ in range(n_streams)]
    sizes = [0] * n_streams
    for a, b in sorted(bounds, key=lambda ab: ab[0] - ab[1]):
        i = sizes.index(min(sizes))
        lanes[i].append((a, b))
        sizes[i] += b - a
    length = max(sizes)
    data = torch.zeros(n_streams, length, dtype=torch.uint8)
    starts = torch.ones(n_streams, length, dtype=torch.bool)  # padding: its own "documents"
    distance = torch.zeros(n_streams, length, dtype=torch.int32)
    valid = torch.zeros(n_streams, length, dtype=torch.bool)
    for i, lane in enumerate(lanes):
        pos = 0
        for a, b in sorted(lane):
            n = b - a
            data[i, pos : pos + n] = corpus.data[a:b]
            starts[i, pos : pos + n] = corpus.doc_start[a:b]
            starts[i, pos] = True
            distance[i, pos : pos + n] = corpus.distance[a:b]
            valid[i, pos : pos + n] = True
            pos += n
    return Streams(data, starts, distance, valid)


def split_holdout(corpus: Corpus, fraction: float) -> tuple[Corpus, Corpus]:
    """Hold out the last ``fraction`` of the bytes (at least one byte each side) for validation."""
    n_val = max(1, int(len(corpus) * fraction))
    if len(corpus) < 3:
        raise DataError(f"{corpus.name} has {len(corpus)} bytes: too few to hold out validation")
    if len(corpus) - n_val < 2:
        raise DataError(
            f"{corpus.name}: data.val_fraction={fraction} holds out {n_val} of its {len(corpus)} "
            "bytes, leaving fewer than 2 for training; lower data.val_fraction"
        )
    cut = len(corpus) - n_val
    return corpus.slice(0, cut), corpus.slice(cut, len(corpus), corpus.name + " (held out)")
