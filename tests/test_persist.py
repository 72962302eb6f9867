"""save/load of drafters' shared state: round trips and rejected files."""

from __future__ import annotations

from pathlib import Path

import fastdec
import numpy as np
import pytest


def trained_recycle() -> fastdec.RecycleDrafter:
    d = fastdec.RecycleDrafter(500, k=4, template=fastdec.TreeTemplate([[0], [1], [0, 0]]))
    rng = np.random.default_rng(0)
    d.start(0, rng.integers(0, 500, size=50).astype(np.int32))
    for _ in range(50):
        tree = d.propose(0, 8)
        d.accept(
            0,
            [int(rng.integers(0, 500))],
            topk_ids=rng.integers(0, 500, (tree.num_nodes, 4)).astype(np.int32),
        )
    return d


def trained_trie() -> fastdec.TrieDrafter:
    d = fastdec.TrieDrafter(depth=6)
    rng = np.random.default_rng(1)
    for i in range(5):
        d.start(i, rng.integers(0, 20, size=30).astype(np.int32))
        d.accept(i, rng.integers(0, 20, size=60).astype(np.int32))
        d.stop(i)
    return d


def test_recycle_round_trip(tmp_path: Path) -> None:
    a = trained_recycle()
    a.save(tmp_path / "tr.bin")
    b = fastdec.RecycleDrafter(500, k=4, template=fastdec.TreeTemplate([[0], [1], [0, 0]]))
    b.load(tmp_path / "tr.bin")
    for tok in range(500):
        assert a.row(tok).tolist() == b.row(tok).tolist()
    assert a.propose_for([3, 7], 8) == b.propose_for([3, 7], 8)


def test_trie_round_trip(tmp_path: Path) -> None:
    a = trained_trie()
    a.save(str(tmp_path / "trie.bin"))
    b = fastdec.TrieDrafter(depth=6)
    b.load(str(tmp_path / "trie.bin"))
    assert b.global_nodes == a.global_nodes
    rng = np.random.default_rng(5)
    for _ in range(50):
        ctx = rng.integers(0, 20, size=12).astype(np.int32)
        assert a.propose_for(ctx, 16) == b.propose_for(ctx, 16)


def test_hybrid_and_ngram_round_trip(tmp_path: Path) -> None:
    a = fastdec.HybridDrafter([trained_trie(), fastdec.NgramDrafter()])
    a.save(tmp_path / "h.bin")
    b = fastdec.HybridDrafter([fastdec.TrieDrafter(depth=6), fastdec.NgramDrafter()])
    b.load(tmp_path / "h.bin")
    ctx = np.array([1, 2, 3, 4, 5], dtype=np.int32)
    assert a.propose_for(ctx, 16) == b.propose_for(ctx, 16)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-3], "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"GARBAGE!" + b[8:], "magic"),
        (lambda b: b[:8] + (99).to_bytes(4, "little") + b[12:], "version"),
        (lambda b: b[:-20] + bytes([b[-20] ^ 1]) + b[-19:], "checksum"),
        (lambda b: b + b"x", "trailing"),
    ],
)
def test_bad_files_are_rejected(tmp_path: Path, mutate: object, message: str) -> None:
    a = trained_trie()
    a.save(tmp_path / "ok.bin")
    raw = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "bad.bin").write_bytes(mutate(raw))  # type: ignore[operator]
    b = fastdec.TrieDrafter(depth=6)
    with pytest.raises(ValueError, match=message):
        b.load(tmp_path / "bad.bin")
    assert b.global_nodes == 1  # nothing changed


def test_foreign_kind_and_config_mismatch(tmp_path: Path) -> None:
    trained_trie().save(tmp_path / "trie.bin")
    with pytest.raises(ValueError, match="trie"):
        fastdec.RecycleDrafter(500).load(tmp_path / "trie.bin")
    with pytest.raises(ValueError, match="depth"):
        fastdec.TrieDrafter(depth=8).load(tmp_path / "trie.bin")
    trained_recycle().save(tmp_path / "tr.bin")
    with pytest.raises(ValueError, match="vocab_size"):
        fastdec.RecycleDrafter(400, k=4, template=fastdec.TreeTemplate([[0]])).load(tmp_path / "tr.bin")


def test_missing_file_is_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="nope"):
        fastdec.NgramDrafter().load(tmp_path / "nope.bin")
    with pytest.raises(OSError, match="no_dir"):
        fastdec.NgramDrafter().save(tmp_path / "no_dir" / "x.bin")
