"""Byte corpora, streams and the synthetic recall sets of the language model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnemo.agents.lm import synthetic
from mnemo.agents.lm.config import LMConfig, load_lm_config
from mnemo.agents.lm.data import (
    DataError,
    document_streams,
    from_documents,
    load_corpus,
    split_holdout,
    training_streams,
)
from mnemo.agents.lm.train import load_corpora, make_training_streams


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_text_file_is_one_document(tmp_path: Path) -> None:
    f = write(tmp_path / "book.txt", "héllo world\n".encode())
    c = load_corpus(str(f))
    assert c.n_docs == 1 and len(c) == len("héllo world\n".encode())
    assert bytes(c.data.tolist()) == "héllo world\n".encode()


def test_folder_of_books_one_document_each(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", b"second book")
    write(tmp_path / "a.txt", b"first book")
    write(tmp_path / "notes.md", b"not a book")
    c = load_corpus(str(tmp_path))
    assert c.n_docs == 2
    assert bytes(c.data.tolist()) == b"first booksecond book"
    assert torch.nonzero(c.doc_start).flatten().tolist() == [0, 10]


def test_pg19_layout_picks_the_split(tmp_path: Path) -> None:
    write(tmp_path / "train" / "1.txt", b"train text " * 20)
    write(tmp_path / "validation" / "2.txt", b"validation text " * 20)
    cfg = LMConfig()
    cfg.data.path = str(tmp_path)
    train, val = load_corpora(cfg.data)
    assert bytes(train.data[:5].tolist()) == b"train"
    assert bytes(val.data[:10].tolist()) == b"validation"
    with pytest.raises(DataError, match="no test/ folder"):
        load_corpus(str(tmp_path), "test")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write(p / "empty.txt", b""), "is empty"),
        (lambda p: write(p / "blob.bin", b"\x7fELF\x00\x01\x02"), "binary"),
        (lambda p: (p / "nothing").mkdir() or p / "nothing", "no .txt files"),
        (lambda p: p / "missing.txt", "does not exist"),
        (lambda p: write(p / "books" / "a.txt", b"").parent, "no non-empty documents"),
    ],
    ids=["empty-file", "binary", "dir-without-txt", "missing", "only-empty-books"],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        load_corpus(str(path))
    assert "\n" not in str(info.value)


def test_documents_shorter_than_a_segment_are_fine(tmp_path: Path) -> None:
    # Many tiny books: streams run through their concatenation, resets at each book.
    for i in range(40):
        write(tmp_path / f"{i:02d}.txt", f"book {i}.".encode())
    c = load_corpus(str(tmp_path))
    s = training_streams(c, batch_size=2, seg_len=16)
    seg = next(s.segments(16))
    assert seg.episode_start[:, 0].all() and seg.episode_start.sum() > 2
    ev = document_streams(c, 4)
    assert int(ev.valid.sum()) == len(c)


def test_corpus_shorter_than_a_segment_is_a_clear_error(tmp_path: Path) -> None:
    c = load_corpus(str(write(tmp_path / "tiny.txt", b"too short")))
    with pytest.raises(DataError, match="too few"):
        training_streams(c, batch_size=4, seg_len=128)


def test_training_segments_shift_targets_by_one() -> None:
    c = from_documents([b"a" * 50, b"#" + b"b" * 29], "t")
    s = training_streams(c, batch_size=2, seg_len=8)
    for seg in s.segments(8):
        assert torch.equal(seg.x[:, 1:], seg.y[:, :-1])
        # a document's first byte is never a counted target (no context inside its document)
        assert not (seg.mask & (seg.y == ord("#"))).any()


def test_document_streams_keep_documents_whole() -> None:
    docs = [bytes([65 + i]) * (10 + 7 * i) for i in range(9)]
    c = from_documents(docs, "t")
    s = document_streams(c, 3)
    assert int(s.valid.sum()) == len(c)
    for row in range(3):
        # inside a stream, each document is contiguous and starts with episode_start
        starts = torch.nonzero(s.starts[row] & s.valid[row]).flatten().tolist()
        for a in starts:
            byte = int(s.data[row, a])
            n = docs[byte - 65].__len__()
            assert bytes(s.data[row, a : a + n].tolist()) == docs[byte - 65]
    capped = document_streams(c, 3, max_bytes=25)
    assert int(capped.valid.sum()) == 25


def test_holdout_split() -> None:
    c = from_documents([b"x" * 100], "t")
    a, b = split_holdout(c, 0.1)
    assert len(a) == 90 and len(b) == 10 and bool(b.doc_start[0])


def test_a_val_fraction_that_leaves_too_little_names_itself(tmp_path: Path) -> None:
    book = write(tmp_path / "book.txt", b"hello world " * 1000)
    keys = [f"data.path={book}", "train.batch_size=2", "train.segment_len=16"]
    cfg = load_lm_config(None, [*keys, "data.val_fraction=0.999"])
    with pytest.raises(DataError) as e:
        make_training_streams(cfg, *load_corpora(cfg.data))
    assert "data.val_fraction=0.999 holds out 11988 of its 12000 bytes" in str(e.value)
    assert str(e.value).endswith("lower data.val_fraction")
    cfg = load_lm_config(None, [*keys, "data.val_fraction=0.99999"])
    with pytest.raises(DataError, match=r"data.val_fraction=0.99999 .*lower data.val_fraction"):
        load_corpora(cfg.data)
    # too short even whole: the batch and segment are what to lower
    cfg = load_lm_config(None, [*keys, "train.batch_size=1000"])
    with pytest.raises(DataError, match=r"lower train\.batch_size or train\.segment_len"):
        make_training_streams(cfg, *load_corpora(cfg.data))


def test_synthetic_marks_point_at_the_stated_code() -> None:
    for doc in synthetic.recall_set(50, gap_min=5, gap_max=80, code_len=3, facts=2, seed=1):
        marked = [i for i, d in enumerate(doc.distance) if d]
        assert len(marked) == 6
        for i in marked:
            assert doc.text[i] == doc.text[i - doc.distance[i]]
            assert chr(doc.text[i]).isupper()
        assert doc.text.decode().count("[") == 2 and doc.text.decode().count("<") == 2


def test_needle_distances() -> None:
    c = load_corpus("synthetic:needle", "test", {"distances": [1024, 4096], "docs_per_distance": 2})
    d = c.distance[c.distance > 0]
    assert c.n_docs == 4
    assert ((d >= 1024) & (d < 2048)).sum() == 6 and ((d >= 4096) & (d < 8192)).sum() == 6


def test_synthetic_splits_differ() -> None:
    a = load_corpus("synthetic:recall", "train", {"docs": 5})
    b = load_corpus("synthetic:recall", "validation", {"val_docs": 5})
    assert not torch.equal(a.data[:100], b.data[:100])
    with pytest.raises(DataError, match="unknown synthetic set"):
        load_corpus("synthetic:nope")


def test_needle_follows_the_training_phrasing() -> None:
    opts = {"distances": [16], "docs_per_distance": 3, "compact": True, "code_len": 1}
    c = load_corpus("synthetic:needle", "validation", {**opts, "lead_max": 0})
    assert b"remember" not in bytes(c.data.tolist())
    assert c.distance[c.distance > 0].tolist() == [19, 19, 19]  # ] + 16 filler + < + code


def test_text_costs_two_bytes_per_byte_and_keeps_its_fingerprint() -> None:
    """A text corpus holds its bytes and their document-start flags, nothing more per byte
    (distances were 4 bytes each: a PG-19 train/ of ~11 GB took ~7 bytes per byte to load),
    and hashes as it did, so runs fingerprinted before still resume."""
    import hashlib

    docs = [b"a" * 5000, b"b" * 3000]
    c = from_documents(docs, "t")
    assert c.distance.untyped_storage().nbytes() <= 4 and c.distance.shape == (8000,)
    assert not c.has_marks and c.distance[4990:5010].tolist() == [0] * 20
    per_byte = c.data.untyped_storage().nbytes() + c.doc_start.untyped_storage().nbytes()
    assert per_byte == 2 * 8000
    h = hashlib.sha256(b"".join(docs) + bytes([1] + [0] * 4999 + [1] + [0] * 2999))
    assert c.fingerprint() == f"8000 bytes in 2 documents, sha256 {h.hexdigest()[:16]}"
    train, held = split_holdout(c, 0.1)
    assert train.doc_start.untyped_storage().data_ptr() == c.doc_start.untyped_storage().data_ptr()
    assert bool(held.doc_start[0]) and not bool(c.doc_start[7200])  # the cut starts a document
