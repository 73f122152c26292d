"""Per-nucleus descriptors: what a few-shot classifier reads to tell nucleus types apart.

For every nucleus of an instance map (H, W) of an RGB H&E image (H, W, 3):

- **morphology** (regionprops' definitions, computed for all nuclei at once): log area,
  perimeter² / area (irregularity), eccentricity, log major and minor axis length, extent;
- **stain** (colour deconvolution, :func:`skimage.color.rgb2hed`): mean, standard deviation and
  90th percentile of the hematoxylin optical density inside the nucleus, mean eosin inside, and
  the mean hematoxylin and eosin of a ring of ``ring`` px around it (the nucleus' surroundings:
  stroma is pink, lymphoid areas are crowded and blue); mean R, G, B inside;
- **embedding** (optional): the image encoder's features (the cached tile embeddings of
  :class:`~sampo_engine.predict.predictor.TilePredictor`: no second encoder pass) averaged over
  the 16 px cells the nucleus covers, in the tile where its centroid lies most centrally, reduced
  to ``embedding_dims`` principal components over the image's nuclei;
- **type** (optional): what a nucleus type head trained on expert-classed nuclei says of each
  nucleus (:mod:`sampo_engine.models.type_head`: log-probabilities of the classes it was trained
  on), given as a function of the image and the centroids (``nucleus_types``).

Coordinates: maps are indexed [row, col]; :attr:`NucleusDescriptors.centroids` are (row, col).
Nothing here depends on the clicks, so one set of descriptors serves every re-scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: names of the morphology and stain columns, in order
MORPHOLOGY = (
    "log_area",
    "irregularity",
    "eccentricity",
    "log_major_axis",
    "log_minor_axis",
    "extent",
)
STAIN = (
    "h_mean",
    "h_std",
    "h_p90",
    "e_mean",
    "ring_h_mean",
    "ring_e_mean",
    "r_mean",
    "g_mean",
    "b_mean",
)
#: principal components kept of the pooled image-encoder features
DEFAULT_EMBEDDING_DIMS = 8
#: width of the ring around each nucleus whose stain describes its surroundings, in px
DEFAULT_RING = 6
#: nuclei whose descriptors are averaged into each nucleus' neighbourhood columns
DEFAULT_NEIGHBOURS = 8
#: embedding cell size in model-input pixels (SAM's patch size)
CELL = 16


@dataclass
class NucleusDescriptors:
    """Descriptors of the nuclei of one instance map.

    Attributes:
        ids: (N,) int label ids, ascending.
        centroids: (N, 2) float (row, col) of each nucleus' centroid.
        features: (N, F) float32, columns named by ``names`` (raw units, not standardised).
        names: the F column names (morphology, stain, the neighbourhood's ``nb_...``, then
            ``emb0`` ... when embeddings were given).
        groups: the group of each column: 'morphology' | 'stain' | 'neighbourhood' |
            'embedding' | 'type' | 'general'.
    """

    ids: np.ndarray
    centroids: np.ndarray
    features: np.ndarray
    names: tuple[str, ...]
    groups: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.ids.size)

    def index_of(self, label_ids) -> np.ndarray:
        """Row index of each label id in ``label_ids`` (-1 for ids that are not nuclei here)."""
        label_ids = np.asarray(label_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, label_ids)
        pos = np.clip(pos, 0, max(len(self.ids) - 1, 0))
        ok = (len(self.ids) > 0) & (self.ids[pos] == label_ids) if len(self.ids) else False
        return np.where(ok, pos, -1)

    def select(self, groups: tuple[str, ...]) -> np.ndarray:
        """(N, F') the columns of the named groups."""
        keep = [i for i, g in enumerate(self.groups) if g in groups]
        return self.features[:, keep]


def hed_optical_density(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 hematoxylin, eosin and DAB of an RGB uint8 image: exactly
    :func:`skimage.color.rgb2hed` (Ruifrok & Johnston's matrix, ``skimage.color.hed_from_rgb``),
    computed in float32 through a 256-entry log table instead of float64 logs of every pixel
    (10× faster on a large tile)."""
    from skimage.color import hed_from_rgb

    levels = np.maximum(np.arange(256, dtype=np.float64) / 255.0, 1e-6)
    table = (np.log(levels) / np.log(1e-6)).astype(np.float32)  # skimage's log_adjust
    od = table[rgb]  # (H, W, 3)
    return np.maximum(od @ hed_from_rgb.astype(np.float32), 0)


def _stain_columns(rgb: np.ndarray, labels: np.ndarray, ids: np.ndarray, ring: int) -> np.ndarray:
    """(N, 9) stain columns of the nuclei ``ids`` (see :data:`STAIN`), from per-label sums over
    the foreground pixels (``np.bincount``)."""
    from scipy import ndimage as ndi

    hed = hed_optical_density(rgb)
    h, e = hed[..., 0], hed[..., 1]
    flat = labels.ravel()
    top = int(flat.max()) + 1
    inside = np.flatnonzero(flat)
    lab = flat[inside]
    count = np.maximum(np.bincount(lab, minlength=top)[ids], 1).astype(np.float64)

    def mean(values, where=inside, of=lab, n=count):
        return np.bincount(of, weights=values.ravel()[where], minlength=top)[ids] / n

    h_mean = mean(h)
    h_sq = mean(h.astype(np.float64) ** 2)
    cols = [
        h_mean,
        np.sqrt(np.maximum(h_sq - h_mean**2, 0)),
        _percentile_per_label(h, labels, ids, 90.0),
        mean(e),
    ]
    if ring > 0:
        # the ring: background pixels within ``ring`` px (chessboard) of a nucleus, given to
        # the highest id among the nuclei there (a maximum filter: cheap on any tile size)
        grown = ndi.maximum_filter(labels, size=2 * ring + 1)
        ring_flat = np.where(flat == 0, grown.ravel(), 0)
        where = np.flatnonzero(ring_flat)
        of = ring_flat[where]
        n_ring = np.bincount(of, minlength=top)[ids].astype(np.float64)
        background = flat == 0
        fill_h = float(h.ravel()[background].mean()) if background.any() else 0.0
        fill_e = float(e.ravel()[background].mean()) if background.any() else 0.0
        # a nucleus enclosed by others has no ring: it gets the image's mean background
        ring_h = np.where(n_ring > 0, mean(h, where, of, np.maximum(n_ring, 1)), fill_h)
        ring_e = np.where(n_ring > 0, mean(e, where, of, np.maximum(n_ring, 1)), fill_e)
    else:
        ring_h = ring_e = np.zeros(len(ids))
    cols += [ring_h, ring_e]
    cols += [mean(rgb[..., c].astype(np.float32)) for c in range(3)]
    return np.stack([np.asarray(c, np.float64) for c in cols], axis=1)


def _percentile_per_label(values, labels, ids, q: float) -> np.ndarray:
    """The ``q``-th percentile of ``values`` within each label of ``ids`` (sort once)."""
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    lab = flat[inside]
    val = values.ravel()[inside]
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    starts = np.searchsorted(lab, ids, side="left")
    ends = np.searchsorted(lab, ids, side="right")
    counts = np.maximum(ends - starts, 1)
    pick = starts + np.minimum((q / 100.0 * (counts - 1)).round().astype(np.int64), counts - 1)
    pick = np.clip(pick, 0, max(len(val) - 1, 0))
    return val[pick] if len(val) else np.zeros(len(ids))


def _edge_perimeter(labels: np.ndarray, top: int) -> np.ndarray:
    """(top + 1,) perimeter of every label: its pixel edges that face another label or the
    background (4-neighbours, the image border counting as background), × π/4 — the edge count
    of a digital disk overestimates its circumference by 4/π."""
    padded = np.pad(labels, 1)
    edges = np.zeros(top + 1)
    centre = padded[1:-1, 1:-1]
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        differs = (centre != shifted) & (centre > 0)
        edges += np.bincount(centre[differs], minlength=top + 1)
    return edges * (np.pi / 4)


def label_moments(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-label area, centroid (row, col), eccentricity and major/minor axis length of an
    (H, W) int label map, each an array indexed by label id (0 .. max), from ``np.bincount``
    over the foreground pixels at once (memory ∝ nuclei, not image).

    Eccentricity is regionprops' (sqrt(1 − λ2/λ1) of the inertia tensor's eigenvalues, 0 for a
    single pixel); the axes are 4·sqrt(λ) without regionprops' 1/12 pixel term (the same up to
    that constant). Returns (area, row, col, eccentricity, major, minor).
    """
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    lab = flat[inside]
    top = int(labels.max()) if labels.size else 0
    area = np.bincount(lab, minlength=top + 1).astype(np.float64)
    r, c = np.divmod(inside, labels.shape[1])
    r = r.astype(np.float64)
    c = c.astype(np.float64)

    def mean(values):
        return np.bincount(lab, weights=values, minlength=top + 1) / np.maximum(area, 1)

    mr, mc = mean(r), mean(c)
    dr, dc = r - mr[lab], c - mc[lab]  # centred per label (two passes: no cancellation)
    var_r, var_c, cov = mean(dr * dr), mean(dc * dc), mean(dr * dc)
    half_sum = (var_r + var_c) / 2
    half_diff = np.sqrt(((var_r - var_c) / 2) ** 2 + cov**2)
    l1 = half_sum + half_diff
    l2 = np.maximum(half_sum - half_diff, 0.0)
    ecc = np.sqrt(np.clip(1 - np.divide(l2, l1, out=np.ones_like(l1), where=l1 > 1e-12), 0, 1))
    return area, mr, mc, ecc, 4 * np.sqrt(l1), 4 * np.sqrt(l2)


def _morphology_columns(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, (N, 2) (row, col) centroids, (N, 6) morphology columns) of every nucleus.

    Area, centroid and the second moments (hence eccentricity and the axis lengths, with
    regionprops' definitions) come from ``np.bincount`` over the foreground pixels at once;
    the perimeter from :func:`_edge_perimeter`; the extent from the bounding boxes of
    :func:`scipy.ndimage.find_objects`. (regionprops costs ~1 ms a nucleus for these, seconds
    on a large tile.)
    """
    from scipy import ndimage as ndi

    top = int(labels.max())
    area_all, mr, mc, ecc, major, minor = label_moments(labels)
    ids = np.flatnonzero(area_all[1:]) + 1
    boxes = ndi.find_objects(labels)
    box_area = np.ones(top + 1)
    for i, box in enumerate(boxes, start=1):
        if box is not None:
            box_area[i] = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
    perimeter = _edge_perimeter(labels, top)
    area = area_all[ids]
    cols = np.stack(
        [
            np.log1p(area),
            perimeter[ids] ** 2 / np.maximum(area, 1.0),
            ecc[ids],
            np.log1p(major[ids]),
            np.log1p(minor[ids]),
            area / box_area[ids],
        ],
        axis=1,
    )
    centroids = np.stack([mr[ids], mc[ids]], axis=1)
    return ids.astype(np.int64), centroids, cols


def pooled_embeddings(labels: np.ndarray, ids: np.ndarray, centroids: np.ndarray, embeddings, grid):
    """(N, C) image-encoder features averaged over the cells each nucleus covers.

    Args:
        labels: (H, W) instance map of the image the embeddings belong to.
        ids, centroids: the nuclei (N,) and their (row, col) centroids.
        embeddings: (T, C, g, g) tile embeddings (torch tensor or array), g = tile / 16.
        grid: the :class:`~sampo_engine.predict.tiling.TileGrid` of those tiles.

    Each nucleus is read in the tile whose centre is nearest its centroid (the tile that sees it
    with the most context); its pixels are counted per 16 px cell of that tile and the cells'
    features averaged with those counts as weights (a sparse (N × T·g·g) matrix product).
    """
    from scipy import sparse

    emb = embeddings.numpy() if hasattr(embeddings, "numpy") else np.asarray(embeddings)
    t_count, channels, g, _ = emb.shape
    s = grid.tile
    centres_r = grid.y0 + (s - 1) / 2.0
    centres_c = grid.x0 + (s - 1) / 2.0
    n = len(ids)
    owner = np.empty(n, np.int64)
    for start in range(0, n, 4096):  # (chunk × T) distances
        cr = centroids[start : start + 4096, :1] - centres_r[None]
        cc = centroids[start : start + 4096, 1:] - centres_c[None]
        owner[start : start + 4096] = np.argmin(np.maximum(np.abs(cr), np.abs(cc)), axis=1)
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    row_of = np.full(int(labels.max()) + 1, -1, np.int64)
    row_of[ids] = np.arange(n)
    nucleus = row_of[flat[inside]]
    keep = nucleus >= 0
    inside, nucleus = inside[keep], nucleus[keep]
    r, c = np.divmod(inside, labels.shape[1])
    t = owner[nucleus]
    cr = np.clip((r - grid.y0[t]) // CELL, 0, g - 1)
    cc = np.clip((c - grid.x0[t]) // CELL, 0, g - 1)
    cell = (t * g + cr) * g + cc
    weights = sparse.csr_matrix(
        (np.ones(len(cell), np.float32), (nucleus, cell)), shape=(n, t_count * g * g)
    )
    counts = np.asarray(weights.sum(axis=1)).ravel()
    table = emb.transpose(0, 2, 3, 1).reshape(-1, channels).astype(np.float32, copy=False)
    pooled = weights @ table
    return pooled / np.maximum(counts, 1.0)[:, None]


def neighbourhood_columns(centroids: np.ndarray, features: np.ndarray, k: int) -> np.ndarray:
    """(N, F + 1) context of each nucleus: the mean of its ``k`` nearest nuclei's ``features``
    (by centroid) and the log distance to the ``k``-th of them (crowding). Cell types cluster —
    lymphocytes in aggregates, tumour cells in nests, fibroblasts in stroma — so the company a
    nucleus keeps says much about its type."""
    from scipy.spatial import cKDTree

    n = len(centroids)
    if n < 2 or k < 1:
        return np.zeros((n, features.shape[1] + 1))
    k = min(k, n - 1)
    dist, idx = cKDTree(centroids).query(centroids, k=k + 1)
    neighbours = idx[:, 1:]
    mean = features[neighbours].mean(axis=1)
    return np.concatenate([mean, np.log1p(dist[:, -1:])], axis=1)


def _principal_components(x: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` principal component scores of the rows of ``x`` (N, C)."""
    x = x - x.mean(axis=0, keepdims=True)
    k = int(min(k, x.shape[0] - 1, x.shape[1]))
    if k < 1:
        return np.zeros((x.shape[0], 0))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :k] * s[:k]


def describe_nuclei(
    image: np.ndarray,
    labels: np.ndarray,
    embeddings=None,
    grid=None,
    ring: int = DEFAULT_RING,
    embedding_dims: int = DEFAULT_EMBEDDING_DIMS,
    neighbours: int = DEFAULT_NEIGHBOURS,
    nucleus_types=None,
) -> NucleusDescriptors:
    """Descriptors of every nucleus of ``labels`` (see the module docstring).

    Args:
        image: (H, W, 3) RGB uint8 (other inputs are converted with
            :func:`~sampo_engine.utils.imageio.to_rgb_uint8`).
        labels: (H, W) int instance map, 0 = background.
        embeddings, grid: the tile embeddings (T, C, g, g) and their tile grid, or None for
            morphology and stain alone.
        ring: width of the surrounding ring in px (0 = no ring columns' content).
        embedding_dims: principal components kept of the pooled embeddings.
        neighbours: nuclei averaged into the neighbourhood columns (0 = none).
        nucleus_types: None, or a function ``(rgb (H, W, 3) uint8, centroids (N, 2) (row, col))
            → (names (K,), (N, K) columns, groups (K,))`` whose columns join the descriptors
            (groups 'type' — a training set's classes — and 'general' — the general types).
    """
    from sampo_engine.errors import DataError
    from sampo_engine.utils.imageio import to_rgb_uint8

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"the instance map must be (H, W), got shape {labels.shape}")
    rgb = to_rgb_uint8(image)
    if rgb.shape[:2] != labels.shape:
        raise DataError(
            f"image {rgb.shape[:2]} and instance map {labels.shape} differ in size; pass the "
            f"image the nuclei were segmented on"
        )
    labels = labels.astype(np.int64, copy=False)
    names = MORPHOLOGY + STAIN
    groups = ("morphology",) * len(MORPHOLOGY) + ("stain",) * len(STAIN)
    if not labels.any():
        if neighbours > 0:
            names = names + tuple(f"nb_{n}" for n in MORPHOLOGY + STAIN) + ("nb_log_distance",)
            groups = groups + ("neighbourhood",) * (len(MORPHOLOGY) + len(STAIN) + 1)
        width = len(names)
        return NucleusDescriptors(
            np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros((0, width), np.float32), names, groups
        )
    ids, centroids, morph = _morphology_columns(labels)
    stain = _stain_columns(rgb, labels, ids, ring)
    blocks = [morph, stain]
    if neighbours > 0:
        own = np.concatenate([morph, stain], axis=1)
        z = (own - own.mean(axis=0)) / (own.std(axis=0) + 1e-9)
        blocks.append(neighbourhood_columns(centroids, z, neighbours))
        names = names + tuple(f"nb_{n}" for n in MORPHOLOGY + STAIN) + ("nb_log_distance",)
        groups = groups + ("neighbourhood",) * (len(MORPHOLOGY) + len(STAIN) + 1)
    if embeddings is not None:
        if grid is None:
            raise DataError("embeddings need their tile grid (grid=...) to be pooled per nucleus")
        pooled = pooled_embeddings(labels, ids, centroids, embeddings, grid)
        comps = _principal_components(pooled.astype(np.float64), embedding_dims)
        blocks.append(comps)
        names = names + tuple(f"emb{i}" for i in range(comps.shape[1]))
        groups = groups + ("embedding",) * comps.shape[1]
    if nucleus_types is not None:
        type_names, columns, type_groups = nucleus_types(rgb, centroids)
        columns = np.asarray(columns, np.float64).reshape(len(ids), len(type_names))
        blocks.append(columns)
        names = names + tuple(type_names)
        groups = groups + tuple(type_groups)
    features = np.concatenate(blocks, axis=1)
    features = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    return NucleusDescriptors(ids, centroids, features, names, groups)
