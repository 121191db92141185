"""The cached path: a prompt's context from the chunk cache, and only the prompt's last tokens through the model.

A filter prompt is ``[prefix; doc_0; sep; doc_1; ...; doc_k; middle; question; suffix]``. Here the prefix,
every document and every separator is a *block* whose keys and values at layers ``0..r`` come from a
``ChunkCache`` entry (encoded on the fly, one pass over ``[prefix; block]`` per missing block, and stored):

* the prefix's entry is exact (it is the start of every prompt);
* a block's entry was computed after the prefix at positions ``P..P+n-1``; its keys are moved to the
  block's place ``o..o+n-1`` in this prompt (``rope.rerotate`` with the model's own tables), values as
  they are. At layer 0 this is exact for every block; beyond it a block differs from the same block in a
  joint pass because it did not see the blocks before it (the approximation of TurboRAG and
  Block-Attention, with the prefix as shared start). The first document follows the prefix in both, so
  its entry is exact at every layer.

Then ``[middle; question; suffix]`` runs through layers ``0..r`` over those keys and values
(``FilterModel.run_cached``), recording the question's attention to every context token as the joint
pass records it. The hidden-state similarities are not recorded (``PassRecord.similarity`` is None): the
context's hidden states never exist on this path, so a readout for it reads no ``features.LAYER_BLOCKS``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import capture
from .capture import PassRecord
from .chunk_cache import ChunkCache, EntryKey, sha256_ids, sha256_text
from .filter_model import FilterModel
from .kv_pack import ChunkKV
from .memory import CACHE_ROOM
from .profiles import Profile
from .prompt import FilterPrompt, tokenize_document
from .rope import turn_, turn_between


@dataclass(frozen=True)
class Block:
    """One cached run of the prompt: a document or a separator (the prefix is its own entry)."""

    text: str
    ids: list[int]
    start: int  # position of its first token in the prompt


@dataclass(frozen=True)
class Identity:
    """What every entry of one filter model, profile and exit layer shares (``chunk_cache.EntryKey``)."""

    model: str
    profile: str
    version: str
    layer: int

    def key(self, frame: Sequence[int], text: str, ids: Sequence[int]) -> EntryKey:
        """The entry key of a block (``text``, ``ids``) encoded after the prefix ``frame``."""
        return EntryKey(self.model, self.profile, self.version, _frame_hash(tuple(frame)), sha256_text(text),
                        sha256_ids(list(ids)), self.layer)  # fmt: skip

    def prefix_key(self, frame: Sequence[int]) -> EntryKey:
        """The entry key of the prefix itself (encoded alone, at positions ``0..P-1``)."""
        return self.key(frame, "", frame)


@functools.lru_cache(maxsize=64)
def _frame_hash(frame: tuple[int, ...]) -> str:
    """``sha256_ids`` of a prefix (the same few for every prompt of a compressor: hashed once each)."""
    return sha256_ids(frame)


def prompt_blocks(prompt: FilterPrompt, separator: str) -> tuple[list[int], list[Block], int]:
    """(prefix ids, the blocks in prompt order (empty ones left out), position of the first live token)."""
    ids = prompt.input_ids.tolist()
    if not prompt.documents:
        return ids, [], len(ids)
    prefix = ids[: prompt.doc_offsets[0]]
    blocks: list[Block] = []
    end = prompt.doc_offsets[0]
    for i, (doc, start) in enumerate(zip(prompt.documents, prompt.doc_offsets, strict=True)):
        if i and start > end:
            blocks.append(Block(separator, ids[end:start], end))
        if doc.ids:
            blocks.append(Block(doc.text, list(doc.ids), start))
        end = start + len(doc.ids)
    return prefix, blocks, end


_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
_FINGERPRINT_LOCK = threading.Lock()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 naming a model's weights and config: its class, its config without paths and versions, and for
    every state tensor its name, dtype, shape and an even sample of 4,096 of its values (quantised ones by
    their integers). Kept per model object; a model whose weights change in place needs a new object."""
    with _FINGERPRINT_LOCK:
        found = _FINGERPRINTS.get(model)
    if found is not None:
        return found
    h = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        volatile = {"_name_or_path", "transformers_version", "_attn_implementation_autoset", "_commit_hash"}
        data = {k: v for k, v in config.to_dict().items() if k not in volatile and "attn_implementation" not in k}
        h.update(json.dumps(data, sort_keys=True, default=str).encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        for t in value if isinstance(value, (tuple, list)) else (value,):
            h.update(_tensor_sample(t))
    digest = h.hexdigest()
    with _FINGERPRINT_LOCK:
        _FINGERPRINTS[model] = digest
    return digest


def _tensor_sample(t: Any) -> bytes:
    if not isinstance(t, torch.Tensor):
        return repr(type(t)).encode() + repr(t).encode()[:200]
    x = t.detach()
    head = f"{x.dtype}{tuple(x.shape)}".encode()
    if x.is_quantized:
        x = x.int_repr()
    flat = x.reshape(-1)
    step = max(1, flat.numel() // 4096)
    sample = flat[::step][:4096].cpu()
    if sample.dtype not in (torch.int8, torch.uint8, torch.int32, torch.int64, torch.float32, torch.float16):
        sample = sample.float()
    return head + sample.contiguous().numpy().tobytes()


def profile_id(profile: Profile | None) -> str:
    """The profile's part of an entry key: its name and the SHA-256 of its readout ("none": no profile)."""
    if profile is None:
        return "none"
    readout = json.dumps(profile.readout, sort_keys=True, default=str) if profile.readout else ""
    return f"{profile.name}:{hashlib.sha256(readout.encode()).hexdigest()[:16]}"


def identity(model: FilterModel, layer: int) -> Identity:
    """The ``Identity`` of ``model``'s entries for exit layer ``layer``."""
    return Identity(model_fingerprint(model.model), profile_id(model.profile), library_version(), int(layer))


def library_version() -> str:
    """gemfilter-rag's ``__version__`` (read from the loaded package: this module sits below it)."""
    return str(getattr(sys.modules.get(__package__ or "gemfilter_rag"), "__version__", "unknown"))


def _room(cache: ChunkCache) -> dict[str, int]:
    """The chunk cache's room to grow in memory, for the memory guard (counted where the cache lives: the CPU)."""
    return {CACHE_ROOM: max(0, cache.max_bytes - cache.bytes)}


def fill(
    model: FilterModel,
    cache: ChunkCache,
    who: Identity,
    frame: Sequence[int],
    blocks: Sequence[tuple[str, Sequence[int]]],
    batch_size: int = 8,
) -> tuple[dict[str, ChunkKV], int]:
    """The entries of the prefix and of every (text, ids) block, from ``cache`` or encoded now (batches of
    ``batch_size`` passes over ``[prefix; block]``) and stored: ({entry digest: ChunkKV as stored, float32 on
    the CPU}, how many were encoded). A new entry is used as the cache stores it (fp16 or int8 rounded), so
    the first query over a chunk gets what every later one gets."""
    out: dict[str, ChunkKV] = {}
    wanted = [(who.prefix_key(frame), list(frame))] if frame else []
    wanted += [(who.key(frame, text, ids), list(ids)) for text, ids in blocks if len(ids)]
    missing: dict[str, tuple[EntryKey, list[int]]] = {}
    for key, ids in wanted:
        digest = key.digest()
        if digest in out or digest in missing:
            continue
        found = cache.get(key)
        if found is not None:
            out[digest] = found
        else:
            missing[digest] = (key, ids)
    p = len(frame)
    prefix_digest = who.prefix_key(frame).digest() if frame else None
    todo = list(missing.items())
    for s in range(0, len(todo), batch_size):
        group = todo[s : s + batch_size]
        inputs = [
            torch.tensor(list(frame) + ([] if d == prefix_digest else ids), dtype=torch.long)  # (P + n,)
            for d, (_, ids) in group
        ]
        encoded = model.encode(inputs, who.layer, extra=_room(cache))
        for (digest, (key, _)), (keys, values) in zip(group, encoded, strict=True):
            start = 0 if digest == prefix_digest else p
            kv = ChunkKV(keys[:, :, start:].float().cpu(), values[:, :, start:].float().cpu())
            out[digest] = cache.put(key, kv)
    return out, len(todo)


def past_of(
    model: FilterModel,
    entries: dict[str, ChunkKV],
    who: Identity,
    frame: Sequence[int],
    blocks: Sequence[Block],
    total: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The context's past keys/values for ``FilterModel.run_cached``: per layer ``0..r``, (1, KV, C, D) each, the
    prefix's entry then every block's, keys moved from ``P..`` to the block's place in the prompt (values as
    they are; the exit layer's are zeros, never read). ``total``: the prompt's length (the tables cover it).

    The tables a block leaves are those of a pass of ``P + n`` tokens, where it was encoded; the tables it
    goes to are those of the whole prompt. Both are the model's own (``capture.rotary_tables``): exact for
    static RoPE (default, linear, Llama 3, YaRN scaling); for a RoPE that changes with the length (dynamic
    NTK, LongRoPE beyond its original positions) a block encoded short differs more.
    """
    layer = who.layer
    p = len(frame)
    longest = max([p + len(b.ids) for b in blocks] + [p])
    device = model.device
    dtype = next(model.model.parameters()).dtype
    tables_from = capture.rotary_tables(model.model, longest, range(layer + 1))
    tables_to = capture.rotary_tables(model.model, total, range(layer + 1))
    parts: list[tuple[ChunkKV, int]] = [(entries[who.prefix_key(frame).digest()], -1)] if p else []
    parts += [(entries[who.key(frame, b.text, b.ids).digest()], b.start) for b in blocks]
    # every block's tokens at once: their places when encoded (p..p+n-1) and in the prompt (start..start+n-1)
    moving = [(kv.tokens, start) for kv, start in parts if start >= 0]  # (n, start) of every block
    src = torch.tensor([p + i for n, _ in moving for i in range(n)], dtype=torch.long)  # (C - P,)
    dst = torch.tensor([start + i for n, start in moving for i in range(n)], dtype=torch.long)  # (C - P,)
    head = parts[0][0].tokens if p else 0  # the prefix's tokens lead and stay where they are
    keys = torch.cat([kv.keys for kv, _ in parts], dim=2).to(device=device, dtype=torch.float32)  # (r+1, KV, C, D)
    values = torch.cat([kv.values for kv, _ in parts], dim=2).to(device=device, dtype=dtype)  # (r, KV, C, D)
    if len(src):  # the blocks: from P.. to their place, one turn per token for every layer sharing the tables
        groups: dict[tuple[int, int], list[int]] = {}
        for lyr in range(layer + 1):
            groups.setdefault((id(tables_from[lyr][0]), id(tables_to[lyr][0])), []).append(lyr)
        for lyrs in groups.values():
            (cos_a, sin_a), (cos_b, sin_b) = tables_from[lyrs[0]], tables_to[lyrs[0]]  # (longest, R), (total, R)
            a, b = src.to(cos_a.device), dst.to(cos_b.device)
            c, s = turn_between(cos_a[a].float(), sin_a[a].float(), cos_b[b].float(), sin_b[b].float())  # (C-P, R/2)
            c, s = c.to(keys.device), s.to(keys.device)
            if len(lyrs) == layer + 1:  # one set of tables for every layer: turn them all at once
                turn_(keys[:, :, head:], c, s)
            else:
                for lyr in lyrs:
                    turn_(keys[lyr, :, head:], c, s)
    keys = keys.to(dtype)
    past: list[tuple[torch.Tensor, torch.Tensor]] = []
    for lyr in range(layer + 1):
        v = values[lyr] if lyr < layer else torch.zeros_like(keys[lyr])  # (KV, C, D)
        past.append((keys[lyr][None], v[None]))  # (1, KV, C, D) each
    return past


def cached_record(
    model: FilterModel,
    cache: ChunkCache,
    who: Identity,
    prompt: FilterPrompt,
    separator: str,
    rows: torch.Tensor,
    attention: bool,
    key_rows: torch.Tensor | None = None,
) -> PassRecord:
    """The ``PassRecord`` of ``prompt`` on the cached path (see the module): ``rows`` (Q,) and ``key_rows`` (K,)
    are positions in the prompt, after its last document."""
    frame, blocks, live = prompt_blocks(prompt, separator)
    entries, _ = fill(model, cache, who, frame, [(b.text, b.ids) for b in blocks])
    past = past_of(model, entries, who, frame, blocks, prompt.length)
    if int(past[0][0].shape[2]) != live:
        raise RuntimeError(f"cached context: {past[0][0].shape[2]} tokens assembled for a context of {live}.")
    live_ids = prompt.input_ids[live:]  # (N,)
    return model.run_cached(live_ids, past, who.layer, rows, attention, key_rows, extra=_room(cache))


def warm(
    model: FilterModel,
    cache: ChunkCache,
    who: Identity,
    frame: Sequence[int],
    separator: Sequence[int],
    separator_text: str,
    texts: Sequence[str],
    batch_size: int = 8,
) -> int:
    """Encode and store every text of ``texts`` (a document as prompts hold it), the separator and the prefix
    that are not in ``cache`` yet; returns how many entries were encoded."""
    blocks = [(separator_text, list(separator))] + [(t, tokenize_document(model.tokenizer, t).ids) for t in texts]
    return fill(model, cache, who, frame, blocks, batch_size)[1]
