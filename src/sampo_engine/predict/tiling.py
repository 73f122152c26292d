"""Cut an image of any size into model-input tiles and blend per-tile probabilities back.

Layout. Tiles are ``S × S`` (``S`` = the model input size, e.g. 224), no resizing: a tile pixel
is an image pixel. Along each axis of length ``L`` the tile starts are spread evenly from 0 to
``L − S`` so neighbours overlap by *at least* ``overlap`` px (more where the length does not
divide evenly). An image smaller than one tile along an axis is padded at the bottom/right by
mirroring (``numpy.pad`` mode ``symmetric``) to ``S``; the padding is never part of the output.

Blending. Each tile's probability is weighted by a separable window ``w(y)·w(x)`` that is 1 in
the tile's core and falls off with a raised cosine (Hann half-window) over the outer
``overlap`` px to a floor (:data:`WINDOW_FLOOR`) at the tile edge; the blended probability is
``Σ wᵢ pᵢ / Σ wᵢ`` over the tiles that cover a pixel *and were decoded*. Tiles without prompts
abstain (weight 0) instead of voting "background", so a nucleus in the overlap of a prompted and
an unprompted tile keeps the prompted tile's answer; a pixel that no decoded tile covers gets
probability 0. The floor keeps a pixel on an image border (covered by the edge of one tile only)
well defined.

Memory. :class:`ProbabilityBlender` holds two float32 canvases (numerator and weight sum) of the
padded image: 8 bytes per pixel (128 MB for a 4000 × 4000 tile), plus one decode batch of
``B × S × S`` float32 probabilities. No per-tile full-resolution map is kept.

Coordinates: tile origins are given as separate ``y0`` (row) and ``x0`` (column) arrays, the
top-left pixel of each tile in the (padded) image, indexed [row, col].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sampo_engine.errors import ConfigError, DataError

#: Weight of a tile's outermost pixel relative to its core (keeps image borders defined).
WINDOW_FLOOR = 0.05


def axis_starts(length: int, tile: int, overlap: int) -> np.ndarray:
    """Tile start positions along one axis of ``length`` px (ascending, first 0, last L − S)."""
    if length <= tile:
        return np.zeros(1, np.int64)
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return np.round(np.linspace(0, length - tile, count)).astype(np.int64)


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image lie.

    Attributes:
        height, width: the image's size in px.
        tile: tile side ``S`` (the model input size).
        overlap: the requested minimum overlap in px.
        y0, x0: (T,) int64 row and column of each tile's top-left pixel, row-major order.
    """

    height: int
    width: int
    tile: int
    overlap: int
    y0: np.ndarray
    x0: np.ndarray

    def __len__(self) -> int:
        return int(self.y0.size)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(rows, cols) of the padded image the tiles index: at least one tile each way."""
        return max(self.height, self.tile), max(self.width, self.tile)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def params(self) -> dict:
        """What the layout depends on (part of the embedding cache key)."""
        return {
            "height": self.height,
            "width": self.width,
            "tile": self.tile,
            "overlap": self.overlap,
        }

    def valid_extent(self) -> tuple[np.ndarray, np.ndarray]:
        """(T,) rows and cols of each tile that lie inside the image (not padding)."""
        rows = np.minimum(self.tile, self.height - self.y0)
        cols = np.minimum(self.tile, self.width - self.x0)
        return rows, cols

    def tiles_containing(self, x: float, y: float) -> np.ndarray:
        """Indices of the tiles whose area holds the point (x, y) (pixel centres at integers)."""
        inside = (
            (self.x0 - 0.5 <= x)
            & (x < self.x0 + self.tile - 0.5)
            & (self.y0 - 0.5 <= y)
            & (y < self.y0 + self.tile - 0.5)
        )
        return np.flatnonzero(inside)


def make_grid(height: int, width: int, tile: int, overlap: int) -> TileGrid:
    """The tile layout of an ``height × width`` image for ``tile`` px tiles."""
    if height < 1 or width < 1:
        raise DataError(f"the image is empty ({height} × {width} px); open a non-empty image")
    if tile < 16:
        raise ConfigError(f"tile size {tile} px is too small; use the model input size (e.g. 224)")
    if not 0 <= overlap <= tile // 2:
        raise ConfigError(
            f"overlap {overlap} px must lie between 0 and half the tile ({tile // 2} px); "
            f"32 is a good default for {tile} px tiles"
        )
    ys = axis_starts(height, tile, overlap)
    xs = axis_starts(width, tile, overlap)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    return TileGrid(height, width, tile, overlap, y0.ravel(), x0.ravel())


def pad_image(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(H, W, C) image padded at the bottom/right to ``grid.padded_shape`` (mirrored)."""
    rows, cols = grid.padded_shape
    pad_r, pad_c = rows - image.shape[0], cols - image.shape[1]
    if pad_r == 0 and pad_c == 0:
        return image
    if min(image.shape[:2]) < 2:  # nothing to mirror: repeat the edge
        return np.pad(image, ((0, pad_r), (0, pad_c), (0, 0)), mode="edge")
    return np.pad(image, ((0, pad_r), (0, pad_c), (0, 0)), mode="symmetric")


def extract_tiles(padded: np.ndarray, grid: TileGrid, indices) -> np.ndarray:
    """(B, S, S, C) copies of the tiles ``indices`` of the padded image."""
    s = grid.tile
    return np.stack(
        [padded[y : y + s, x : x + s] for y, x in zip(grid.y0[indices], grid.x0[indices])]
    )


def blend_window(tile: int, overlap: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """(S, S) float32 separable weight: 1 in the core, raised-cosine ramp over the outer
    ``overlap`` px down to ``floor`` at the edge pixel."""
    ramp = max(int(overlap), 1)
    t = np.arange(tile, dtype=np.float64)
    edge = np.minimum(t, tile - 1 - t)  # distance to the nearest edge, 0 at the border pixel
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((edge + 0.5) / ramp, 0.0, 1.0))
    w1 = floor + (1.0 - floor) * rise
    return np.outer(w1, w1).astype(np.float32)


class ProbabilityBlender:
    """Accumulate tile probabilities into one (H, W) map by the window-weighted mean.

    Works on the device of ``window`` (a torch tensor) so no per-tile map leaves the GPU.
    """

    def __init__(self, grid: TileGrid, window):
        import torch

        self.grid = grid
        self.window = window
        rows, cols = grid.padded_shape
        self.numerator = torch.zeros(rows, cols, dtype=torch.float32, device=window.device)
        self.weight = torch.zeros(rows, cols, dtype=torch.float32, device=window.device)

    def add(self, indices, probabilities) -> None:
        """Add (B, S, S) probabilities of tiles ``indices`` (tensor on the window's device)."""
        s = self.grid.tile
        weighted = probabilities * self.window
        for b, i in enumerate(indices):
            y, x = int(self.grid.y0[i]), int(self.grid.x0[i])
            self.numerator[y : y + s, x : x + s] += weighted[b]
            self.weight[y : y + s, x : x + s] += self.window

    def result(self) -> np.ndarray:
        """(H, W) float32 blended probability; 0 where no decoded tile covers a pixel."""
        import torch

        h, w = self.grid.shape
        num, den = self.numerator[:h, :w], self.weight[:h, :w]
        prob = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
        return prob.clamp_(0.0, 1.0).cpu().numpy().astype(np.float32, copy=False)
