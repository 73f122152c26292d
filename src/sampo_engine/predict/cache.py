"""Image-embedding cache: encode a tile once, re-prompt it for the cost of the decoder.

What is cached: the image-encoder output of every tile of one image, ``(T, C, S/16, S/16)``
float32 on the CPU (e.g. vit_b at 224 px: 256 × 14 × 14 × 4 B = 196 KiB a tile; a 4000 × 4000
image at 32 px overlap has 21 × 21 = 441 tiles = 86 MiB), with the tile layout.

Key (:func:`cache_key`): a BLAKE2b digest of the JSON of
  * the image: BLAKE2b-128 of its *full* bytes after conversion to (H, W, 3) uint8, plus shape
    and dtype (hashing every byte costs ~25 ms per 10 MP — small next to encoding — and, unlike
    a strided sample, never confuses two images that differ in a few pixels);
  * the model: type, input size, adapter bundle path and the SHA-256 of its weights file, the
    base checkpoint's SHA-256 (when given), and a fingerprint of the weights in memory (sums of
    every parameter and buffer, recomputed only when a tensor was modified in place — so a model
    fine-tuned in the same process never reuses stale embeddings);
  * the device type and whether bf16 autocast ran (CUDA embeddings differ slightly);
  * the tiling: tile size, overlap, image height and width;
  * :data:`CACHE_FORMAT`.

Where: in memory, least-recently-used first out, bounded by an entry count and a byte budget;
and, when a folder is given, on disk as ``<folder>/<key>.npz`` (uncompressed ``np.savez``,
written to a temporary file and renamed, so a reader never sees half a file). Disk hits are
promoted to memory. Disk entries are never evicted automatically: delete the folder to free it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sampo_engine.predict.tiling import TileGrid

#: Bumped whenever the cached content or its meaning changes.
CACHE_FORMAT = 1

#: Defaults of the in-memory cache.
DEFAULT_MAX_ITEMS = 4
DEFAULT_MAX_BYTES = 2 << 30


@dataclass
class TileEmbeddings:
    """The cached encoder output of one image.

    Attributes:
        key: the cache key.
        grid: the tile layout the embeddings belong to.
        embeddings: (T, C, g, g) float32 CPU tensor, g = S/16; tile i's features at
            ``embeddings[i]``, feature cell (r, c) centred on tile pixel (16·r + 7.5, 16·c + 7.5).
    """

    key: str
    grid: TileGrid
    embeddings: object  # torch.Tensor
    _feature_mean: object = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return int(self.embeddings.numel() * self.embeddings.element_size())

    def feature_mean(self):
        """(C,) mean feature over every tile cell (for centring similarities), memoised."""
        if self._feature_mean is None:
            self._feature_mean = self.embeddings.mean(dim=(0, 2, 3))
        return self._feature_mean


def image_digest(image: np.ndarray) -> str:
    """BLAKE2b-128 hex digest of an array's bytes, shape and dtype."""
    arr = np.ascontiguousarray(image)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def weights_fingerprint(module) -> str:
    """A digest of every parameter and buffer of ``module``: per tensor its sum and L2 norm
    (float32, one pass per tensor without copies: a fraction of a second for vit_b on a CPU)."""
    import torch

    stats = []
    with torch.no_grad():
        for tensor in module.state_dict().values():
            t = tensor.detach()
            if not (t.is_floating_point() or t.is_complex()):
                t = t.float()
            stats.append(torch.stack([t.sum(), torch.linalg.vector_norm(t)]).float())
        values = torch.stack(stats).cpu().numpy() if stats else np.zeros(0)
    digest = hashlib.blake2b(digest_size=16)
    digest.update("|".join(module.state_dict().keys()).encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


class _FingerprintMemo:
    """Recompute :func:`weights_fingerprint` only when some tensor was modified in place.

    Uses the tensors' in-place version counters (torch's autograd bookkeeping), so asking again
    for an unchanged model costs one pass over the parameter list, not over the weights.
    """

    def __init__(self):
        self._state: tuple | None = None
        self._value = ""

    def __call__(self, module) -> str:
        try:
            state = tuple((id(t), t._version) for t in module.state_dict(keep_vars=True).values())
        except AttributeError:  # pragma: no cover - tensors without version counters
            return weights_fingerprint(module)
        if state != self._state:
            self._value = weights_fingerprint(module)
            self._state = state
        return self._value


def cache_key(image_hash: str, model_identity: dict, grid: TileGrid, runtime: dict) -> str:
    """The hex key of one (image, model, tiling, runtime) combination (see the module docs)."""
    material = {
        "format": CACHE_FORMAT,
        "image": image_hash,
        "model": model_identity,
        "tiling": grid.params(),
        "runtime": runtime,
    }
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


class EmbeddingCache:
    """An LRU of :class:`TileEmbeddings` in memory, optionally backed by a folder on disk.

    Args:
        max_items: most images held in memory.
        max_bytes: most embedding bytes held in memory (the newest entry is always kept).
        cache_dir: folder for ``<key>.npz`` files; None or "" = memory only.
    """

    def __init__(
        self,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.max_items = max(int(max_items), 1)
        self.max_bytes = int(max_bytes)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._items: OrderedDict[str, TileEmbeddings] = OrderedDict()
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def clear(self) -> None:
        """Forget every in-memory entry (disk files stay)."""
        self._items.clear()

    def path_for(self, key: str) -> Path | None:
        return self.cache_dir / f"{key}.npz" if self.cache_dir else None

    def get(self, key: str, grid: TileGrid) -> TileEmbeddings | None:
        """The entry for ``key`` from memory, else from disk, else None."""
        entry = self._items.get(key)
        if entry is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return entry
        entry = self._read(key, grid)
        if entry is not None:
            self.disk_hits += 1
            self._remember(entry)
            return entry
        self.misses += 1
        return None

    def put(self, entry: TileEmbeddings) -> None:
        """Remember ``entry`` in memory and, with a cache folder, on disk."""
        self._remember(entry)
        if self.cache_dir is not None:
            self._write(entry)

    def _remember(self, entry: TileEmbeddings) -> None:
        self._items[entry.key] = entry
        self._items.move_to_end(entry.key)
        while len(self._items) > self.max_items or (
            len(self._items) > 1 and sum(e.nbytes for e in self._items.values()) > self.max_bytes
        ):
            self._items.popitem(last=False)

    def _write(self, entry: TileEmbeddings) -> None:
        from sampo_engine.utils.atomic import atomic_path

        path = self.path_for(entry.key)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                embeddings=entry.embeddings.numpy(),
                y0=entry.grid.y0,
                x0=entry.grid.x0,
                params=np.array(json.dumps(entry.grid.params())),
            )

    def _read(self, key: str, grid: TileGrid) -> TileEmbeddings | None:
        import torch

        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                embeddings = data["embeddings"]
                same = (
                    np.array_equal(data["y0"], grid.y0)
                    and np.array_equal(data["x0"], grid.x0)
                    and json.loads(str(data["params"])) == grid.params()
                )
        except Exception:  # truncated or foreign file: ignore it, it will be rewritten
            return None
        if not same or embeddings.ndim != 4 or embeddings.shape[0] != len(grid):
            return None
        return TileEmbeddings(key, grid, torch.from_numpy(np.ascontiguousarray(embeddings)))
