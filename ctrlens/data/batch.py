"""The one batch type that flows from the loader into models, hooks, probes and saliency."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import Tensor


@dataclass
class Batch:
    """A batch of ``B`` impressions, already mapped to embedding indices (see :mod:`ctrlens.data.schema`).

    Attributes:
        features: field name -> tensor.
            sparse: int64 ``[B]`` embedding indices (0 = missing, 1 = OOV, raw id + 2);
            sequence: int64 ``[B, L]`` indices, right-padded with 0 (``L`` = the field's ``max_len``);
            bag: int64 ``[B, L]`` indices of the row's ids in file order, right-padded with 0
            (``L`` = the field's ``max_len``); the order carries no meaning;
            dense: float32 ``[B]``;
            position: int64 ``[B]`` in ``1..max_position``.
        masks: sequence and bag field name -> bool ``[B, L]``, True at real (non-padding) positions.
        labels: label name (``"click"``, ``"conversion"``, ``"income"``...) -> float32 ``[B]`` of 0/1.
        images: float32 ``[U, C, H, W]`` in ``[0, 1]``: the images of the ``U`` unique items the batch
            references (candidate and history), each once -- models run their image encoder on these
            only (the AMS idea). ``None`` when the schema has no image fields.
        image_index: image field name -> int64 ``[B]`` or ``[B, L]`` index into ``images``; padding
            positions and items without an image point at row 0, which is an all-zero image.
        user: int64 ``[B]`` raw ids of the schema's ``role="user"`` field (for GAUC), or ``None``.
        row: int64 ``[B]`` row numbers within the day (for per-sample explanations).
        weights: bag field name -> float32 ``[B, L]`` per-id weights aligned with its ids, 0 at padding;
            only bags whose schema names a ``weights`` column (others weigh every id 1).

    A bag as torchrec's jagged ``values``/``lengths``: ``lengths = masks[f].sum(1)``,
    ``values = features[f][masks[f]]`` (row-major, so each row's ids stay together and in order).
    """

    features: dict[str, Tensor]
    masks: dict[str, Tensor] = field(default_factory=dict)
    labels: dict[str, Tensor] = field(default_factory=dict)
    images: Tensor | None = None
    image_index: dict[str, Tensor] = field(default_factory=dict)
    user: Tensor | None = None
    row: Tensor | None = None
    weights: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        for t in self.features.values():
            return int(t.shape[0])
        for t in self.labels.values():
            return int(t.shape[0])
        return 0

    @property
    def size(self) -> int:
        return len(self)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def mv(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.to(device, non_blocking=non_blocking) for k, v in d.items()}

        return Batch(
            features=mv(self.features),
            masks=mv(self.masks),
            labels=mv(self.labels),
            images=None if self.images is None else self.images.to(device, non_blocking=non_blocking),
            image_index=mv(self.image_index),
            user=None if self.user is None else self.user.to(device, non_blocking=non_blocking),
            row=None if self.row is None else self.row.to(device, non_blocking=non_blocking),
            weights=mv(self.weights),
        )

    def pin_memory(self) -> "Batch":
        """Pinned-memory copy (``DataLoader(pin_memory=True)`` calls this) for faster host-to-GPU copies."""

        def pin(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.pin_memory() for k, v in d.items()}

        return Batch(
            features=pin(self.features),
            masks=pin(self.masks),
            labels=pin(self.labels),
            images=None if self.images is None else self.images.pin_memory(),
            image_index=pin(self.image_index),
            user=None if self.user is None else self.user.pin_memory(),
            row=None if self.row is None else self.row.pin_memory(),
            weights=pin(self.weights),
        )

    def select(self, idx: Tensor | slice) -> "Batch":
        """Rows ``idx`` of the batch (images are kept whole: indices into them stay valid)."""

        def sel(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v[idx] for k, v in d.items()}

        return Batch(
            features=sel(self.features),
            masks=sel(self.masks),
            labels=sel(self.labels),
            images=self.images,
            image_index=sel(self.image_index),
            user=None if self.user is None else self.user[idx],
            row=None if self.row is None else self.row[idx],
            weights=sel(self.weights),
        )

    def split(self, size: int) -> Iterator["Batch"]:
        """Consecutive chunks of at most ``size`` rows."""
        n = len(self)
        for s in range(0, n, size):
            yield self.select(slice(s, min(s + size, n)))

    def with_features(self, **features: Tensor) -> "Batch":
        """A copy with some feature tensors replaced (used to plant incidents in tests)."""
        return replace(self, features={**self.features, **features})

    @staticmethod
    def concat(batches: list["Batch"]) -> "Batch":
        """Concatenate batches row-wise. Images are concatenated and indices re-based."""
        if not batches:
            raise ValueError("Batch.concat: no batches")
        first = batches[0]

        def cat(key: str) -> dict[str, Tensor]:
            return {k: torch.cat([getattr(b, key)[k] for b in batches]) for k in getattr(first, key)}

        images = None
        image_index: dict[str, Tensor] = {}
        if first.images is not None:
            offs, acc = [], 0
            for b in batches:
                offs.append(acc)
                acc += int(b.images.shape[0])  # type: ignore[union-attr]
            images = torch.cat([b.images for b in batches])  # type: ignore[misc]
            image_index = {
                k: torch.cat([b.image_index[k] + o for b, o in zip(batches, offs)]) for k in first.image_index
            }
        return Batch(
            features=cat("features"),
            masks=cat("masks"),
            labels=cat("labels"),
            images=images,
            image_index=image_index,
            user=None if first.user is None else torch.cat([b.user for b in batches]),  # type: ignore[misc]
            row=None if first.row is None else torch.cat([b.row for b in batches]),  # type: ignore[misc]
            weights=cat("weights"),
        )
