"""Prompt propagation: give tiles without clicks prompts found by feature similarity.

The user clicks a few nuclei in one corner of a large tile; the other model-input tiles have no
clicks. Following PerSAM's location prior (Zhang et al. 2023), with a threshold so a tile can get
nothing:

1. Exemplars. The image embedding of a clicked tile is sampled (bilinearly) at each click:
   ``(C,)`` features, one per click, taken from the tile in which the click lies most centrally.
2. Prototypes. Features are centred on the image's mean feature ``μ`` (the mean over every cell of
   every tile: this removes the large component all SAM features share, which otherwise makes
   every cosine ≈ 1) and L2-normalised; the positive prototype ``p`` is the normalised mean of the
   positive exemplars, the negative prototype ``n`` that of the negatives (when there are any).
3. Similarity. In each unclicked tile, for every embedding cell (16 × 16 px):
   ``s⁺ = (f − μ)·p / max(‖f − μ‖, ρ⁺)`` and likewise ``s⁻`` with ``n`` and ``ρ⁻`` — a cosine
   whose denominator is floored at ``ρ = ½ ·`` the mean ``‖fᵢ − μ‖`` of the exemplars, so a cell
   that barely differs from the average (plain background, whose centred feature is mostly
   noise) cannot reach a high score by the direction of its noise alone.
4. Positives: cells with ``s⁺ ≥ τ`` (``min_similarity``) and, with negatives, ``s⁺ > s⁻``, taken
   greedily by decreasing ``s⁺`` with at least ``min_spacing`` cells between any two (non-maximum
   suppression), at most 3. A tile where no cell qualifies gets no prompt (its probability stays
   0: T2 on a tile without that cell type is empty).
5. Negatives (only for tiles that got a positive): the tile's own negative clicks first, then
   cells with ``s⁻ ≥ τ`` and ``s⁻ > s⁺`` by decreasing ``s⁻`` (same spacing); without negative
   clicks, the single least similar cell (``argmin s⁺``, PerSAM's negative) when ``s⁺ < 0`` there.
   At most 3 in all.

A propagated point sits at the centre of its cell: tile pixel ``(x, y) = (16·c + 7.5, 16·r + 7.5)``
for cell (row r, col c). All points here are (x, y) = (column, row) in the tile's pixels, pixel
centres at integers, as SAM's prompt encoder expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Most positive / negative points per tile (= sampo_engine.prompts.MAX_POSITIVE / MAX_NEGATIVE;
#: not imported, so the CLI parser stays free of scipy).
MAX_POSITIVE = 3
MAX_NEGATIVE = 3

#: Embedding cell size in input pixels (SAM's patch size).
CELL = 16

#: Default minimum centred cosine similarity for a propagated positive.
DEFAULT_MIN_SIMILARITY = 0.5

#: Default minimum distance between two propagated points, in embedding cells (32 px).
DEFAULT_MIN_SPACING = 2.0

#: The norm floor ρ is this fraction of the exemplars' mean centred feature norm.
NORM_FLOOR = 0.5

#: Tiles whose similarity maps are computed at once (bounds the temporary copy).
SIMILARITY_CHUNK = 64


@dataclass
class TilePrompt:
    """The prompt set of one tile.

    points: (P, 2) float32 (x, y) in the tile's pixels; labels: (P,) int64 1 / 0;
    propagated: whether it came from similarity (True) or the user's clicks (False).
    """

    points: np.ndarray
    labels: np.ndarray
    propagated: bool = False

    @property
    def num_positive(self) -> int:
        return int((self.labels == 1).sum())


@dataclass
class Prototypes:
    """Centring vector ``mean`` (C,), unit ``positive`` (C,) and optional unit ``negative``,
    with the norm floors ``positive_floor`` / ``negative_floor`` (ρ⁺, ρ⁻)."""

    mean: object  # torch.Tensor
    positive: object
    negative: object | None = None
    positive_floor: float = 0.0
    negative_floor: float = 0.0


def features_at(embedding, points_xy: np.ndarray, tile: int):
    """(N, C) features of one tile's ``embedding`` (C, g, g) at tile pixels ``points_xy`` (N, 2)
    (x, y), bilinearly interpolated between cell centres."""
    import torch
    import torch.nn.functional as F

    xy = torch.as_tensor(np.asarray(points_xy, np.float32), device=embedding.device)
    grid = (xy + 0.5) * (2.0 / tile) - 1.0  # pixel-centre coords -> [-1, 1] (align_corners=False)
    sampled = F.grid_sample(
        embedding[None].float(), grid[None, None], mode="bilinear", align_corners=False
    )  # (1, C, 1, N)
    return sampled[0, :, 0].T


def _unit(v, eps: float = 1e-8):
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def build_prototypes(features_pos, features_neg, mean) -> Prototypes:
    """Prototypes from exemplar features (N⁺, C) and (N⁻, C) (N⁻ may be 0), centred on ``mean``."""
    centred = features_pos.float() - mean
    positive = _unit(_unit(centred).mean(0))
    floor = NORM_FLOOR * float(centred.norm(dim=-1).mean())
    negative, negative_floor = None, 0.0
    if features_neg is not None and len(features_neg):
        centred = features_neg.float() - mean
        negative = _unit(_unit(centred).mean(0))
        negative_floor = NORM_FLOOR * float(centred.norm(dim=-1).mean())
    return Prototypes(mean, positive, negative, floor, negative_floor)


def similarity_maps(
    embeddings, prototypes: Prototypes, indices: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Centred, norm-floored cosine similarity of every cell to the prototypes (module docs).

    embeddings: (T, C, g, g) tensor; indices: the tiles to score (default all), M of them.
    Returns (M, g, g) float32 ``s⁺`` and ``s⁻`` (None without a negative prototype), computed
    :data:`SIMILARITY_CHUNK` tiles at a time (no copy of all M tiles' embeddings is made).
    """
    import torch

    protos = [prototypes.positive] + (
        [prototypes.negative] if prototypes.negative is not None else []
    )
    stacked = torch.stack(protos).float()  # (k, C)
    floors = torch.tensor(
        [prototypes.positive_floor, prototypes.negative_floor][: len(protos)], dtype=torch.float32
    ).clamp_min(1e-8)
    if indices is None:
        indices = np.arange(embeddings.shape[0])
    indices = torch.as_tensor(np.asarray(indices, np.int64))
    out = []
    with torch.no_grad():
        for start in range(0, len(indices), SIMILARITY_CHUNK):
            chunk = embeddings[indices[start : start + SIMILARITY_CHUNK]].float()
            centred = chunk - prototypes.mean.float()[None, :, None, None]
            norm = centred.norm(dim=1)[:, None]  # (t, 1, g, g)
            dots = torch.einsum("tchw,kc->tkhw", centred, stacked)
            denom = torch.maximum(norm, floors.to(norm.device)[None, :, None, None])
            out.append((dots / denom).cpu().numpy())
    sims = np.concatenate(out) if out else np.zeros((0, len(protos), 0, 0), np.float32)
    return sims[:, 0], (sims[:, 1] if len(protos) > 1 else None)


def pick_cells(
    score: np.ndarray, candidate: np.ndarray, k: int, min_spacing: float
) -> list[tuple[int, int]]:
    """Up to ``k`` (row, col) cells with ``candidate`` True, by decreasing ``score``, each at
    least ``min_spacing`` cells (Euclidean) from those already taken (greedy NMS)."""
    if k <= 0 or not candidate.any():
        return []
    rows, cols = np.nonzero(candidate)
    order = np.argsort(-score[rows, cols], kind="stable")
    picked: list[tuple[int, int]] = []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if all((r - pr) ** 2 + (c - pc) ** 2 >= min_spacing**2 for pr, pc in picked):
            picked.append((r, c))
            if len(picked) == k:
                break
    return picked


def cell_centres(cells: list[tuple[int, int]]) -> np.ndarray:
    """(N, 2) float32 (x, y) tile pixels of the centres of (row, col) cells."""
    if not cells:
        return np.zeros((0, 2), np.float32)
    rc = np.asarray(cells, np.float32)
    return np.stack([rc[:, 1] * CELL + (CELL - 1) / 2, rc[:, 0] * CELL + (CELL - 1) / 2], 1)


def propagate(
    embeddings,
    tile_indices: np.ndarray,
    prototypes: Prototypes,
    valid_cells: np.ndarray,
    own_negatives: dict[int, np.ndarray] | None = None,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    min_spacing: float = DEFAULT_MIN_SPACING,
    max_positive: int = MAX_POSITIVE,
    max_negative: int = MAX_NEGATIVE,
) -> dict[int, TilePrompt]:
    """Prompts for the tiles ``tile_indices`` by similarity to the prototypes (module docs).

    Args:
        embeddings: (T, C, g, g) tensor of every tile of the image.
        tile_indices: (M,) the tiles to prompt (those without positive clicks).
        valid_cells: (M, g, g) bool, cells whose centre lies inside the image (not padding).
        own_negatives: tile index → (K, 2) (x, y) tile pixels of the user's negative clicks in
            that tile (nearest the tile centre first); used before propagated negatives.

    Returns:
        tile index → :class:`TilePrompt` (``propagated=True``) for the tiles that got at least one
        positive; the others are absent.
    """
    own_negatives = own_negatives or {}
    tile_indices = np.asarray(tile_indices, np.int64)
    if tile_indices.size == 0:
        return {}
    s_pos, s_neg = similarity_maps(embeddings, prototypes, tile_indices)
    prompts: dict[int, TilePrompt] = {}
    for m, tile in enumerate(tile_indices.tolist()):
        valid = valid_cells[m]
        positive = valid & (s_pos[m] >= min_similarity)
        if s_neg is not None:
            positive &= s_pos[m] > s_neg[m]
        pos_cells = pick_cells(s_pos[m], positive, max_positive, min_spacing)
        if not pos_cells:
            continue
        negatives = np.asarray(own_negatives.get(tile, np.zeros((0, 2))), np.float32)
        negatives = negatives[:max_negative]
        room = max_negative - len(negatives)
        if room > 0:
            if s_neg is not None:
                negative = valid & (s_neg[m] >= min_similarity) & (s_neg[m] > s_pos[m])
                neg_cells = pick_cells(s_neg[m], negative, room, min_spacing)
            elif len(negatives) == 0:
                masked = np.where(valid, s_pos[m], np.inf)
                r, c = np.unravel_index(int(np.argmin(masked)), masked.shape)
                neg_cells = [(int(r), int(c))] if masked[r, c] < 0 else []
            else:
                neg_cells = []
            negatives = np.concatenate([negatives, cell_centres(neg_cells)])
        points = np.concatenate([cell_centres(pos_cells), negatives]).astype(np.float32)
        labels = np.array([1] * len(pos_cells) + [0] * len(negatives), np.int64)
        prompts[tile] = TilePrompt(points, labels, propagated=True)
    return prompts


# ------------------------------------------------------------------ the whole image's prompts
def _nearest(points: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows of ``points`` (N, 2) nearest ``centre``, nearest first."""
    order = np.argsort(((points - centre) ** 2).sum(1), kind="stable")[:k]
    return points[order]


def _clicks_in_tile(grid, points: np.ndarray, tile: int) -> np.ndarray:
    """The (N, 2) (x, y) image-pixel ``points`` that lie on ``tile``, in the tile's pixels."""
    if len(points) == 0:
        return points
    s = grid.tile
    x0, y0 = grid.x0[tile], grid.y0[tile]
    ok = (
        (points[:, 0] >= x0 - 0.5)
        & (points[:, 0] < x0 + s - 0.5)
        & (points[:, 1] >= y0 - 0.5)
        & (points[:, 1] < y0 + s - 0.5)
    )
    return points[ok] - np.array([x0, y0], np.float32)


def clicked_tile_prompts(
    grid, points_xy: np.ndarray, labels: np.ndarray
) -> tuple[dict[int, TilePrompt], dict[int, np.ndarray]]:
    """The user's clicks given to every tile they lie on.

    ``points_xy`` (N, 2) (x, y) image pixels and ``labels`` (N,) 1 / 0, validated. A tile with a
    positive click gets them as its :class:`TilePrompt` (the ``MAX_POSITIVE`` positives and
    ``MAX_NEGATIVE`` negatives nearest its centre, in tile pixels); a tile with negative clicks
    only gets none, but its negatives are returned (tile → (K, 2)) for :func:`propagate`.
    """
    s = grid.tile
    centre = np.array([(s - 1) / 2, (s - 1) / 2], np.float32)
    pos, neg = points_xy[labels == 1], points_xy[labels == 0]
    prompts: dict[int, TilePrompt] = {}
    own_negatives: dict[int, np.ndarray] = {}
    for t in range(len(grid)):
        tp = _nearest(_clicks_in_tile(grid, pos, t), centre, MAX_POSITIVE)
        tn = _nearest(_clicks_in_tile(grid, neg, t), centre, MAX_NEGATIVE)
        if len(tp):
            points = np.concatenate([tp, tn]).astype(np.float32)
            tile_labels = np.array([1] * len(tp) + [0] * len(tn), np.int64)
            prompts[t] = TilePrompt(points, tile_labels, propagated=False)
        elif len(tn):
            own_negatives[t] = tn
    return prompts, own_negatives


def click_features(embeddings, grid, points_xy: np.ndarray):
    """(N, C) features of the image at each (x, y) image-pixel click, each taken from the tile
    in which it lies most centrally (``embeddings`` (T, C, g, g)); None without clicks."""
    import torch

    s = grid.tile
    feats = []
    for p in points_xy:
        tiles = grid.tiles_containing(float(p[0]), float(p[1]))
        local = p[None] - np.stack([grid.x0[tiles], grid.y0[tiles]], 1)
        margin = np.minimum(local, s - 1 - local).min(1)
        t = int(tiles[int(np.argmax(margin))])
        loc = p - np.array([grid.x0[t], grid.y0[t]], np.float32)
        feats.append(features_at(embeddings[t], loc[None], s)[0])
    return torch.stack(feats) if feats else None


def valid_cells(grid, tile_indices: np.ndarray, cells: int) -> np.ndarray:
    """(M, g, g) bool: the embedding cells of ``tile_indices`` whose centre lies inside the
    image (not in the padding of an edge tile); ``cells`` = g."""
    centres = np.arange(cells) * CELL + (CELL - 1) / 2
    rows_valid, cols_valid = grid.valid_extent()
    return (centres[None, :, None] < rows_valid[tile_indices, None, None]) & (
        centres[None, None, :] < cols_valid[tile_indices, None, None]
    )


def image_prompts(
    grid,
    embeddings,
    feature_mean,
    points_xy: np.ndarray,
    labels: np.ndarray,
    propagate_to_rest: bool = True,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    min_spacing: float = DEFAULT_MIN_SPACING,
) -> tuple[dict[int, TilePrompt], set[int]]:
    """The prompt set of every tile of an image for validated clicks: the clicked tiles get the
    clicks (:func:`clicked_tile_prompts`), the others (with ``propagate_to_rest``) prompts by
    similarity (:func:`propagate`). ``embeddings`` (T, C, g, g); ``feature_mean()`` returns the
    (C,) mean feature μ (called only when propagating: the cache computes it once). Returns ``({tile: TilePrompt}, clicked tiles)``; tile prompts in tile pixels."""
    prompts, own_negatives = clicked_tile_prompts(grid, points_xy, labels)
    clicked = set(prompts)
    if propagate_to_rest and len(clicked) < len(grid):
        pos, neg = points_xy[labels == 1], points_xy[labels == 0]
        protos = build_prototypes(
            click_features(embeddings, grid, pos),
            click_features(embeddings, grid, neg),
            feature_mean(),
        )
        rest = np.array([t for t in range(len(grid)) if t not in clicked], np.int64)
        prompts.update(
            propagate(
                embeddings,
                rest,
                protos,
                valid_cells(grid, rest, embeddings.shape[-1]),
                own_negatives=own_negatives,
                min_similarity=min_similarity,
                min_spacing=min_spacing,
            )
        )
    return prompts, clicked
