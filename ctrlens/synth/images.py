"""Item images that carry the item's latent attributes (so an image model can learn what an id cannot).

Each item ``i`` has a latent ``z_i`` in R^4. Its ``3 x S x S`` uint8 image is

    colour   c = (sigmoid(1.5 z0), sigmoid(1.5 z1), sigmoid(1.5 (z0 - z1) / sqrt 2))     (per channel)
    stripes  a * sin(2 pi f (x cos t + y sin t) + p),  a = 0.3 sigmoid(1.5 z2),  f = 1.5 + 4 sigmoid(1.5 z3)
    pixel    clip(c + stripes + N(0, 0.04^2), 0, 1) * 255

with ``x, y`` in [0, 1) and a nuisance orientation ``t`` and phase ``p`` per item (they carry no signal).
"""

from __future__ import annotations

import numpy as np

_CHUNK = 2048  # items rendered at once: bounds the float32 scratch to ~25 MB at 32x32


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def render_images(z: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images of items with latents ``z`` ``[n, 4]`` -> uint8 ``[n, 3, size, size]``."""
    n = z.shape[0]
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    theta = rng.uniform(0.0, np.pi, n).astype(np.float32)
    phase = rng.uniform(0.0, 2 * np.pi, n).astype(np.float32)
    g = (np.arange(size, dtype=np.float32) / size)
    yy, xx = np.meshgrid(g, g, indexing="ij")  # [S, S]
    zf = z.astype(np.float32)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        zc = zf[s:e]
        colour = np.stack(
            [_sig(1.5 * zc[:, 0]), _sig(1.5 * zc[:, 1]), _sig(1.5 * (zc[:, 0] - zc[:, 1]) / np.sqrt(2))], axis=1
        )  # [m, 3]
        amp = 0.3 * _sig(1.5 * zc[:, 2])
        freq = 1.5 + 4.0 * _sig(1.5 * zc[:, 3])
        proj = xx[None] * np.cos(theta[s:e])[:, None, None] + yy[None] * np.sin(theta[s:e])[:, None, None]
        stripes = amp[:, None, None] * np.sin(2 * np.pi * freq[:, None, None] * proj + phase[s:e, None, None])
        img = colour[:, :, None, None] + stripes[:, None] + rng.normal(0.0, 0.04, (e - s, 3, size, size)).astype(np.float32)
        out[s:e] = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out
