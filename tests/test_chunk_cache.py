"""The chunk cache without a model: packing (fp16, int8, fp32), blobs and checksums, LRU accounting, the SQLite
file (identity, corruption, threads, processes) and the byte counts."""

from __future__ import annotations

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gemfilter_rag import ChunkCache
from gemfilter_rag.chunk_cache import EntryKey, cache_arguments, lru_evict, sha256_ids, sha256_text
from gemfilter_rag.chunk_store import checksum
from gemfilter_rag.kv_pack import (
    ChunkKV,
    bytes_per_token,
    dequantise_int8,
    deserialise,
    pack,
    quantise_int8,
    serialise,
    unpack,
)


def entry(layer: int = 2, kv: int = 2, n: int = 5, d: int = 8, seed: int = 0) -> ChunkKV:
    g = torch.Generator().manual_seed(seed)
    return ChunkKV(torch.randn(layer + 1, kv, n, d, generator=g) * 3, torch.randn(layer, kv, n, d, generator=g))


def key(text: str = "a chunk", layer: int = 2, model: str = "m1", version: str = "0.1.0") -> EntryKey:
    return EntryKey(model, "tiny:abc", version, sha256_ids([1, 2, 3]), sha256_text(text), sha256_ids([7, 8]), layer)


# ---------------------------------------------------------------- pure parts


def test_int8_is_per_channel_and_within_half_a_step() -> None:
    x = torch.randn(3, 2, 40, 8)
    x[..., 3] *= 100  # an outlier channel keeps its own scale
    q, scale = quantise_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (3, 2, 1, 8)
    err = (dequantise_int8(q, scale) - x).abs()
    assert bool((err <= scale / 2 + 1e-6).all())
    assert err[..., 0].max() < err[..., 3].max() / 10  # the small channels are not flattened by the outlier
    zeros, s0 = quantise_int8(torch.zeros(1, 1, 4, 2))
    assert torch.equal(dequantise_int8(zeros, s0), torch.zeros(1, 1, 4, 2))


@pytest.mark.parametrize("dtype", ["fp16", "int8", "fp32"])
def test_pack_serialise_round_trip(dtype: str) -> None:
    kv = entry()
    packed = pack(kv, dtype)
    again = deserialise(serialise(packed))
    assert again.dtype == dtype and again.nbytes == packed.nbytes
    back = unpack(again)
    tol = {"fp32": 0.0, "fp16": 5e-3, "int8": 0.05}[dtype]
    torch.testing.assert_close(back.keys, kv.keys, rtol=0, atol=tol * float(kv.keys.abs().max()) + 1e-7)
    torch.testing.assert_close(back.values, kv.values, rtol=0, atol=tol * float(kv.values.abs().max()) + 1e-7)
    assert packed.nbytes < pack(kv, "fp32").nbytes or dtype == "fp32"


def test_exit_layer_zero_has_no_values() -> None:
    kv = ChunkKV(torch.randn(1, 2, 3, 4), torch.empty(0, 2, 3, 4))
    assert kv.exit_layer == 0
    assert unpack(deserialise(serialise(pack(kv, "int8")))).values.shape == (0, 2, 3, 4)
    with pytest.raises(ValueError, match="keys/values"):
        ChunkKV(torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4))  # values of the exit layer: not this layout


def test_bad_blobs_are_refused() -> None:
    blob = serialise(pack(entry(), "fp16"))
    for bad in (blob[:-3], blob + b"x", b"NOPE" + blob[4:], blob[:6]):
        with pytest.raises(ValueError, match="blob"):
            deserialise(bad)
    assert checksum(blob) != checksum(blob[:-1]) and len(checksum(blob)) == 64


def test_lru_evict_drops_the_oldest_until_it_fits() -> None:
    sizes = {"a": 4, "b": 3, "c": 5}  # oldest first
    assert lru_evict(sizes, 12) == []
    assert lru_evict(sizes, 9) == ["a"]
    assert lru_evict(sizes, 5) == ["a", "b"]
    assert lru_evict(sizes, 0) == ["a", "b", "c"]


def test_bytes_per_token() -> None:
    # SmolLM2-135M: 3 KV heads of 64, layers 0..15: keys of 16 layers and values of 15
    assert bytes_per_token(15, 3, 64, "fp16") == 31 * 3 * 64 * 2
    assert bytes_per_token(15, 3, 64, "int8") == 31 * 3 * 64
    assert bytes_per_token(15, 3, 64, "int8", chunk_tokens=128) == pytest.approx(31 * 3 * 64 * (1 + 4 / 128))
    with pytest.raises(ValueError, match="dtype"):
        bytes_per_token(1, 1, 1, "bf16")


def test_key_digest_changes_with_every_field() -> None:
    base = key()
    others = [
        key(model="m2"),
        key(version="0.2.0"),
        key(text="another"),
        key(layer=3),
        EntryKey(base.model, "other:abc", base.version, base.frame, base.text, base.ids, base.layer),
        EntryKey(base.model, base.profile, base.version, sha256_ids([9]), base.text, base.ids, base.layer),
        EntryKey(base.model, base.profile, base.version, base.frame, base.text, sha256_ids([9]), base.layer),
    ]
    assert len({base.digest(), *(k.digest() for k in others)}) == 1 + len(others)


# ---------------------------------------------------------------- the cache in memory


def test_memory_hits_misses_and_the_byte_bound() -> None:
    one = pack(entry(), "fp16").nbytes
    cache = ChunkCache(max_bytes=2 * one, dtype="fp16")
    assert cache.get(key("a")) is None
    for name in ("a", "b"):
        cache.put(key(name), entry())
    assert cache.get(key("a")) is not None  # "a" is now the most recent
    cache.put(key("c"), entry())  # evicts "b", the least recently used
    assert key("b") not in cache and key("a") in cache and key("c") in cache
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["stored"], stats["evicted"]) == (1, 1, 3, 1)
    assert stats["bytes"] == cache.bytes == 2 * one <= stats["max_bytes"]
    tiny = ChunkCache(max_bytes=one - 1)
    tiny.put(key("a"), entry())  # larger than the bound: not kept
    assert len(tiny) == 0 and tiny.bytes == 0


def test_get_returns_the_stored_precision_and_put_checks_the_layer() -> None:
    cache = ChunkCache(dtype="int8")
    kv = entry()
    stored = cache.put(key(), kv)
    got = cache.get(key())
    assert got is not None and torch.equal(got.keys, stored.keys)  # what put returns is what later gets see
    assert not torch.equal(got.keys, kv.keys)  # int8 rounded
    with pytest.raises(ValueError, match="layers"):
        cache.put(key(layer=3), kv)
    with pytest.raises(ValueError, match="dtype"):
        ChunkCache(dtype="bf16")
    with pytest.raises(ValueError, match="max_bytes"):
        ChunkCache(max_bytes=-1)


def test_threads_share_one_cache() -> None:
    cache = ChunkCache(max_bytes=10 * pack(entry(), "fp16").nbytes)

    def work(i: int) -> bool:
        k = key(f"chunk {i % 17}")
        if cache.get(k) is None:
            cache.put(k, entry(seed=i % 17))
        got = cache.get(k)
        return got is None or got.keys.shape == (3, 2, 5, 8)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(400)))
    stats = cache.stats()
    assert stats["entries"] <= 10 and stats["bytes"] == sum(p.nbytes for p in cache._memory.values())


# ---------------------------------------------------------------- the file


def test_file_survives_the_process_and_reports_disk_hits(tmp_path: Path) -> None:
    path = tmp_path / "chunks.sqlite"
    first = ChunkCache(path=path, dtype="fp16")
    stored = first.put(key(), entry())
    first.close()
    second = ChunkCache(path=path)
    got = second.get(key())
    assert got is not None and torch.equal(got.keys, stored.keys)
    assert second.stats()["disk_hits"] == 1 and second.stats()["disk_entries"] == 1
    assert second.get(key(model="another model")) is None  # another model's entry is never this one
    assert second.get(key(version="9.9")) is None


def _rows(path: Path, sql: str, args: tuple[object, ...] = ()) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("UPDATE entries SET model = 'another model'", "another model"),
        ("UPDATE entries SET profile = 'other:123'", "another profile"),
        ("UPDATE entries SET version = '0.0.1'", "another version"),
        ("UPDATE entries SET blob = substr(blob, 1, length(blob) - 7)", "checksum"),
        ("UPDATE entries SET blob = CAST(zeroblob(length(blob)) AS BLOB)", "checksum"),
    ],
)
def test_a_row_of_another_identity_or_a_bad_blob_is_rejected_and_dropped(tmp_path: Path, sql: str, why: str) -> None:
    path = tmp_path / "chunks.sqlite"
    ChunkCache(path=path).put(key(), entry())
    _rows(path, sql)
    cache = ChunkCache(path=path)
    assert cache.get(key()) is None
    stats = cache.stats()
    assert stats["rejected"] == 1 and why in stats["rejections"][0]
    assert stats["disk_entries"] == 0  # dropped: the caller recomputes it and puts it back
    cache.put(key(), entry())
    assert ChunkCache(path=path).get(key()) is not None


def test_an_undecodable_blob_with_a_matching_checksum_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "chunks.sqlite"
    ChunkCache(path=path).put(key(), entry())
    bad = b"GFKV" + b"\x00" * 20
    _rows(path, "UPDATE entries SET blob = ?, checksum = ?", (bad, checksum(bad)))
    cache = ChunkCache(path=path)
    assert cache.get(key()) is None and "undecodable" in cache.stats()["rejections"][0]


def _writer(path: str, worker: int, count: int) -> int:
    cache = ChunkCache(path=path, max_bytes=0)  # nothing in memory: every read goes to the file
    seen = 0
    for i in range(count):
        k = key(f"chunk {i}")
        got = cache.get(k)
        if got is None:
            cache.put(k, entry(seed=i))
        else:
            assert torch.equal(got.keys, unpack(pack(entry(seed=i), "fp16")).keys)
            seen += 1
    cache.close()
    return seen


def test_processes_share_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        pool.starmap(_writer, [(path, w, 30) for w in range(3)])
    cache = ChunkCache(path=path)
    assert cache.stats()["disk_entries"] == 30
    assert all(cache.get(key(f"chunk {i}")) is not None for i in range(30))
    assert cache.stats()["rejected"] == 0


def test_cache_arguments_read_an_apps_strings_and_name_each_bad_value(tmp_path: Path) -> None:
    assert cache_arguments(None, None) is None  # neither a size nor a file: no cache
    store = tmp_path / "chunks.sqlite"
    assert cache_arguments("64", None, "int8") == {"path": None, "max_bytes": 64 << 20, "dtype": "int8"}
    assert cache_arguments(None, store) == {"path": str(store)}
    ChunkCache(**(cache_arguments("1", store) or {}))  # what it gives, ChunkCache takes
    with pytest.raises(ValueError, match="cache_dtype: given without cache_mib or cache_file"):
        cache_arguments(None, None, "int8")
    with pytest.raises(ValueError, match="cache_mib: 'lots' is not a whole number"):
        cache_arguments("lots", None)
    with pytest.raises(ValueError, match="--cache-mib: -1 is negative"):
        cache_arguments(-1, None, name="--cache-{}")
    with pytest.raises(ValueError, match="cache_file: .* is a directory"):
        cache_arguments(None, tmp_path)
    with pytest.raises(ValueError, match="cache_dtype: 'bf16' is not valid"):
        cache_arguments(8, None, "bf16")


def test_a_directory_is_refused_as_the_store_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path: .* is a directory; give a file path"):
        ChunkCache(path=tmp_path)
