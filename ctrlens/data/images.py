"""The per-item image table (the AMS idea: pixels stored once per item, never per row).

``<root>/images.parquet`` (the schema's ``image_table``) has columns ``item_id`` (integer raw id of the
table that the image fields' sources use; for a string table, the position in its vocabulary) and
``image`` (binary, exactly ``C*H*W`` uint8 bytes in C, H, W order, ``schema.image_shape``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from ctrlens.data.schema import INDEX_OFFSET, SparseField
from ctrlens.data.validate import as_numpy, fail, first_true, null_mask


class ImageStore:
    """All images of the table in one uint8 tensor, looked up by embedding index.

    Attributes:
        pixels: uint8 ``[M + 1, C, H, W]``; row 0 is the all-zero image (padding / missing / no image).
        lookup: int64 ``[V + 2]``: embedding index of the key table -> row of ``pixels`` (0 = none).
        unused: image rows whose ``item_id`` lies outside the key table's vocabulary (never referenced).
    """

    def __init__(self, path: str | Path, shape: tuple[int, int, int], key: SparseField) -> None:
        self.path = Path(path)
        self._key = key
        self.shape = tuple(int(s) for s in shape)
        c, h, w = self.shape
        size = c * h * w
        if not self.path.exists():
            raise fail(f"image table not found (the schema names image_table {self.path.name!r}); expected a "
                       "Parquet file with columns item_id (int64) and image (binary)", file=self.path)
        try:
            table = pq.read_table(self.path)
        except (pa.ArrowException, OSError) as e:
            raise fail(f"not a readable Parquet file ({e})", file=self.path) from None
        have = {n: table.schema.field(n).type for n in table.schema.names}
        for col, ok, want in (("item_id", pa.types.is_integer, "integer item ids"),
                              ("image", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)
                               or pa.types.is_fixed_size_binary(t), f"binary of {size} uint8 bytes (C*H*W)")):
            if col not in have:
                raise fail(f"missing column {col!r} ({want}); the file has columns {list(have)}", file=self.path,
                           column=col)
            if not ok(have[col]):
                raise fail(f"expected {want}, got {have[col]}", file=self.path, column=col)
        ids_arr = table.column("item_id").combine_chunks()
        img = table.column("image").combine_chunks()
        for col, a in (("item_id", ids_arr), ("image", img)):
            nulls = null_mask(a)
            if nulls.any():
                raise fail("null value; leave items without an image out of the table instead", file=self.path,
                           column=col, row=first_true(nulls))
        ids = as_numpy(ids_arr, "int64")
        m = len(ids)
        data = self._bytes(img, size)
        uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[counts > 1][0])
            raise fail(f"item_id {dup} appears {int(counts[counts > 1][0])} times; one image per item",
                       file=self.path, column="item_id", row=int(np.flatnonzero(ids == dup)[1]))
        self.pixels = torch.zeros((m + 1, c, h, w), dtype=torch.uint8)
        if m:
            self.pixels[1:].numpy()[:] = data.reshape(m, c, h, w)  # one copy, out of Arrow's read-only buffer
        self.lookup = np.zeros(key.num_embeddings, dtype=np.int64)
        inside = (ids >= 0) & (ids < key.vocab_size)
        self.lookup[ids[inside] + INDEX_OFFSET] = np.flatnonzero(inside) + 1
        self.unused = int((~inside).sum())

    def _bytes(self, img: pa.Array, size: int) -> np.ndarray:
        """All images' bytes back to back (``[M * size]`` uint8), checking every length."""
        n = len(img)
        bufs = img.buffers()
        if pa.types.is_fixed_size_binary(img.type):
            if img.type.byte_width != size:
                raise fail(f"expected {size} bytes per image (C*H*W for image_shape {self.shape}), got "
                           f"fixed_size_binary({img.type.byte_width})", file=self.path, column="image")
            start = img.offset * size
            return np.frombuffer(bufs[1], dtype=np.uint8)[start:start + n * size]
        off_type = np.int64 if pa.types.is_large_binary(img.type) else np.int32
        offsets = np.frombuffer(bufs[1], dtype=off_type)[img.offset:img.offset + n + 1].astype(np.int64)
        lengths = np.diff(offsets)
        bad = lengths != size
        if bad.any():
            r = first_true(bad)
            raise fail(f"image has {int(lengths[r])} bytes, expected {size} (C*H*W uint8 for image_shape "
                       f"{self.shape})", file=self.path, column="image", row=r)
        if n == 0:
            return np.zeros(0, dtype=np.uint8)
        return np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0]:offsets[0] + n * size]

    def with_overrides(self, path: str | Path) -> "ImageStore":
        """A copy whose images are replaced by those in the override table ``path`` (same columns);
        items absent from this table are added."""
        over = ImageStore(path, self.shape, self._key)
        out = object.__new__(ImageStore)
        out.path, out.shape, out._key, out.unused = self.path, self.shape, self._key, self.unused
        out.lookup = self.lookup.copy()
        hit = np.flatnonzero(over.lookup)  # embedding indices the override defines
        have = out.lookup[hit] > 0
        extra = int((~have).sum())
        out.pixels = torch.cat([self.pixels, torch.zeros((extra,) + tuple(self.pixels.shape[1:]), dtype=torch.uint8)])
        out.lookup[hit[~have]] = len(self.pixels) + np.arange(extra)
        out.pixels[torch.from_numpy(out.lookup[hit])] = over.pixels[torch.from_numpy(over.lookup[hit])]
        return out

    def __len__(self) -> int:
        return int(self.pixels.shape[0]) - 1

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows of :attr:`pixels` for embedding indices ``idx`` (any shape; 0 where there is no image)."""
        return self.lookup[idx]

    def gather(self, sources: dict[str, np.ndarray]) -> tuple[Tensor, dict[str, Tensor]]:
        """Images of the unique items referenced by ``sources`` (image field -> indices ``[B]``/``[B, L]``).

        Returns:
            images: float32 ``[U, C, H, W]`` in ``[0, 1]``; row 0 is the all-zero image.
            index: image field -> int64 tensor shaped like its source, indexing ``images``.
        """
        rows = {k: self.rows(v) for k, v in sources.items()}
        flat = np.concatenate([np.zeros(1, dtype=np.int64)] + [r.ravel() for r in rows.values()])
        uniq, inverse = np.unique(flat, return_inverse=True)  # uniq[0] == 0: the blank row stays first
        images = self.pixels[torch.from_numpy(uniq)].to(torch.float32).div_(255.0)
        index: dict[str, Tensor] = {}
        pos = 1
        for k, r in rows.items():
            index[k] = torch.from_numpy(inverse[pos:pos + r.size].reshape(r.shape).astype(np.int64))
            pos += r.size
        return images, index
