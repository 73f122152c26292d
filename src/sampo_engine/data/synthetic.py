"""Seeded synthetic H&E-like tiles with exact instance and class maps.

They stand in for real data in tests, demos and the napari sample, and are learnable for both
intents: T1 (all nuclei) and T2 (nuclei of one class), since the three classes differ the way real
cell types do:

====  ===============  ==================================================================
id    name             appearance
====  ===============  ==================================================================
1     lymphocyte       small (radius 4-6 px), round, very dark and uniform hematoxylin
2     epithelial       large (radius 9-14 px), pale, vesicular (dark rim, grainy interior,
                       a visible nucleolus), mostly in touching clusters
3     spindle          elongated ellipses (semi-axes ~10-18 x 3-5 px, aspect 3-5), random
                       orientation, medium stain
====  ===============  ==================================================================

Colour follows Beer-Lambert optical-density (OD) mixing: ``RGB = 255 * exp(-(h * H + e * E))``
with per-tile hematoxylin and eosin OD vectors H, E drawn around standard (Macenko reference)
values, a textured eosin background with pale lumen-like gaps, then mild blur and noise.
Nuclei touch and slightly overlap; where they overlap the later-drawn one owns the pixels in the
instance map and its stain is drawn there, so colours and labels agree. Every instance keeps at
least :data:`MIN_AREA` pixels in one connected piece.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import ndimage as ndi

from sampo_engine.data.sample import NucleiDataset, NucleiSample

CLASS_NAMES: dict[int, str] = {1: "lymphocyte", 2: "epithelial", 3: "spindle"}

#: Smallest instance area (pixels) kept in the instance map.
MIN_AREA = 10

#: Reference optical-density vectors (R, G, B) of hematoxylin and eosin (Macenko et al. 2009).
H_REF = np.array([0.5626, 0.7201, 0.4062])
E_REF = np.array([0.2159, 0.8012, 0.5581])

#: Default expected nuclei per 10,000 px² (a 100 x 100 px window) before overlap rejection.
DEFAULT_DENSITY = 5.0

#: OD vector of the pigment deposits (``debris``): a dark brown-black, like hemosiderin or
#: anthracotic pigment — as dark as a nucleus but browner than hematoxylin.
PIGMENT_OD = np.array([0.42, 0.58, 0.70]) / np.linalg.norm([0.42, 0.58, 0.70])


@dataclass(frozen=True)
class _ClassLook:
    """How one class is drawn: sizes in pixels, stain as hematoxylin OD."""

    radius: tuple[float, float]  # semi-major axis range
    aspect: tuple[float, float]  # semi-major / semi-minor
    stain: tuple[float, float]  # hematoxylin OD of the nucleus body
    grain: float  # relative amplitude of chromatin texture
    rim: float  # extra OD at the nuclear membrane (vesicular look)
    wobble: float  # boundary irregularity (relative radius)


_LOOKS = {
    1: _ClassLook(radius=(4.0, 6.0), aspect=(1.0, 1.15), stain=(1.7, 2.1), grain=0.04, rim=0.0,
                  wobble=0.03),
    2: _ClassLook(radius=(9.0, 14.0), aspect=(1.0, 1.4), stain=(0.45, 0.65), grain=0.45, rim=0.55,
                  wobble=0.06),
    3: _ClassLook(radius=(10.0, 18.0), aspect=(3.0, 5.0), stain=(1.0, 1.25), grain=0.15, rim=0.1,
                  wobble=0.04),
}  # fmt: skip


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(s) for s in size)
    return h, w


def _class_fractions(class_mix, rng: np.random.Generator) -> np.ndarray:
    """Fractions of (lymphocyte, epithelial, spindle); ``None`` draws a per-tile mix."""
    if class_mix is None:
        return rng.dirichlet((2.0, 2.0, 2.0))
    if isinstance(class_mix, Mapping):
        lookup = {**{v: k for k, v in CLASS_NAMES.items()}, **{k: k for k in CLASS_NAMES}}
        mix = np.zeros(3)
        for key, value in class_mix.items():
            if key not in lookup:
                raise ValueError(f"class_mix key {key!r} is not one of {CLASS_NAMES}")
            mix[lookup[key] - 1] = float(value)
    else:
        mix = np.asarray(class_mix, dtype=float)
        if mix.shape != (3,):
            raise ValueError("class_mix needs 3 weights: (lymphocyte, epithelial, spindle)")
    if (mix < 0).any() or mix.sum() <= 0:
        raise ValueError(f"class_mix weights must be >= 0 and not all 0, got {class_mix!r}")
    return mix / mix.sum()


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth noise of unit std with features ~``cell`` px wide: (H, W) float32.

    White noise on a coarse grid (one node per ``cell`` px) is interpolated with Gaussian
    weights, separably (two small matrix products), so it costs little even at 4k px.
    """

    def weights(n: int) -> np.ndarray:
        nodes = np.arange(-1, int(np.ceil(n / cell)) + 2, dtype=np.float32) * cell
        d = (np.arange(n, dtype=np.float32)[:, None] - nodes[None, :]) / (0.6 * cell)
        wgt = np.exp(-0.5 * d * d)
        return wgt / wgt.sum(axis=1, keepdims=True)

    wy, wx = weights(shape[0]), weights(shape[1])
    coarse = rng.standard_normal((wy.shape[1], wx.shape[1])).astype(np.float32)
    out = (wy @ coarse) @ wx.T
    out /= max(float(out[::7, ::7].std()), 1e-6)
    return out


def _stain_vectors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile H and E OD vectors (unit length, positive) around the reference values."""
    h = np.abs(H_REF + rng.normal(0.0, 0.05, 3))
    e = np.abs(E_REF + rng.normal(0.0, 0.06, 3))
    return h / np.linalg.norm(h), e / np.linalg.norm(e)


def _plan_nuclei(rng, shape, density, fractions):
    """Centres, shapes and classes of candidate nuclei, in drawing order.

    Returns a list of tuples (cls, row, col, a, b, angle): semi-axes a >= b in px, angle in
    radians of the major axis from the column (x) axis.
    """
    h, w = shape
    n_total = rng.poisson(density * h * w / 10_000.0)
    counts = rng.multinomial(n_total, fractions)
    plan = []

    def shape_of(c):
        look = _LOOKS[c]
        a = rng.uniform(*look.radius)
        return a, a / rng.uniform(*look.aspect), rng.uniform(0.0, np.pi)

    for _ in range(counts[0]):  # lymphocytes: scattered, some in loose aggregates
        a, b, ang = shape_of(1)
        plan.append((1, rng.uniform(-4, h + 4), rng.uniform(-4, w + 4), a, b, ang))
    remaining = counts[1]
    while remaining > 0:  # epithelial: touching clusters grown by a random walk
        size = min(remaining, int(rng.integers(3, 9)))
        remaining -= size
        a, b, ang = shape_of(2)
        r, c = rng.uniform(0, h), rng.uniform(0, w)
        group = [(r, c, a)]
        plan.append((2, r, c, a, b, ang))
        for _ in range(size - 1):
            pr, pc, pa = group[int(rng.integers(len(group)))]
            a, b, ang = shape_of(2)
            d = (pa + a) * rng.uniform(0.8, 1.0)
            t = rng.uniform(0, 2 * np.pi)
            r, c = pr + d * np.sin(t), pc + d * np.cos(t)
            group.append((r, c, a))
            plan.append((2, r, c, a, b, ang))
    for _ in range(counts[2]):  # spindles: scattered, random orientation
        a, b, ang = shape_of(3)
        plan.append((3, rng.uniform(-4, h + 4), rng.uniform(-4, w + 4), a, b, ang))
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


def _ellipse_frame(shape, r0, c0, a, b, ang, ext):
    """The pixel window of an ellipse centred at (row r0, col c0), semi-axes a ≥ b px, major
    axis at ``ang`` radians from the column axis, ``ext`` px around the centre (clipped to
    ``shape``): ((r_lo, r_hi, c_lo, c_hi), dy (h, 1), dx (1, w), u, v (h, w)) with u, v the
    ellipse coordinates (u² + v² = 1 on the outline), or None when the window is empty."""
    h, w = shape
    r_lo, r_hi = max(int(r0) - ext, 0), min(int(r0) + ext + 2, h)
    c_lo, c_hi = max(int(c0) - ext, 0), min(int(c0) + ext + 2, w)
    if r_lo >= r_hi or c_lo >= c_hi:
        return None
    dy = (np.arange(r_lo, r_hi, dtype=np.float32) - r0)[:, None]
    dx = (np.arange(c_lo, c_hi, dtype=np.float32) - c0)[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    u = (dx * cos + dy * sin) / a
    v = (-dx * sin + dy * cos) / b
    return (r_lo, r_hi, c_lo, c_hi), dy, dx, u, v


def _draw_nuclei(rng, shape, plan, grain):
    """Rasterise the plan into (inst int32, cls-of-id array, hematoxylin OD float32 map)."""
    inst = np.zeros(shape, np.int32)
    hema = np.zeros(shape, np.float32)
    areas = [0]
    classes = [0]
    for c, r0, c0, a, b, ang in plan:
        look = _LOOKS[c]
        frame = _ellipse_frame(
            shape, r0, c0, a, b, ang, int(np.ceil(a * (1 + 2 * look.wobble))) + 1
        )
        if frame is None:
            continue
        (r_lo, r_hi, c_lo, c_hi), dy, dx, u, v = frame
        rho = np.hypot(u, v)
        phi = np.arctan2(v, u)
        k = rng.uniform(0, 2 * np.pi, 2)
        amp = rng.uniform(0, look.wobble, 2)
        edge = 1.0 + amp[0] * np.cos(2 * phi + k[0]) + amp[1] * np.cos(3 * phi + k[1])
        rel = rho / edge
        mask = rel <= 1.0
        n_pix = int(mask.sum())
        if n_pix < MIN_AREA:
            continue
        box = inst[r_lo:r_hi, c_lo:c_hi]
        under = box[mask]
        under = under[under > 0]
        if under.size > 0.3 * n_pix:  # only slight overlaps
            continue
        if under.size:
            ids, lost = np.unique(under, return_counts=True)
            left = np.asarray(areas)[ids] - lost
            if (left < np.maximum(MIN_AREA, 0.7 * np.asarray(areas)[ids])).any():
                continue
            for i, n in zip(ids, lost):
                areas[i] -= int(n)
        new_id = len(areas)
        areas.append(n_pix)
        classes.append(c)
        body = rng.uniform(*look.stain)
        od = body * (1.0 + look.grain * grain[r_lo:r_hi, c_lo:c_hi])
        if look.rim:
            od = od + look.rim * np.clip((rel - 0.72) / 0.28, 0.0, 1.0) ** 2
        if c == 2:  # one or two nucleoli: small dark dots off-centre
            for _ in range(int(rng.integers(1, 3))):
                t, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.4 * b)
                nr, nc = r0 + d * np.sin(t), c0 + d * np.cos(t)
                rad = rng.uniform(1.3, 2.2)
                dot = (dy + r0 - nr) ** 2 + (dx + c0 - nc) ** 2 <= rad**2
                od = np.where(dot, od + rng.uniform(0.9, 1.3), od)
        box[mask] = new_id
        hema_box = hema[r_lo:r_hi, c_lo:c_hi]
        hema_box[mask] = od[mask]
    return inst, np.asarray(classes, np.uint8), hema


def _draw_pigment(rng, shape, density, nuclear) -> np.ndarray:
    """(H, W) float32 OD of pigment deposits: ~``density`` per 10,000 px², each a clump of
    granules (radius 4-9 px, irregular outline, OD 1.1-1.7), never on a nucleus."""
    h, w = shape
    od = np.zeros(shape, np.float32)
    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.8)
    texture /= max(float(texture.std()), 1e-6)
    for _ in range(rng.poisson(density * h * w / 10_000.0)):
        r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
        a = rng.uniform(4.0, 9.0)
        b = a / rng.uniform(1.0, 1.6)
        ang = rng.uniform(0, np.pi)
        frame = _ellipse_frame(shape, r0, c0, a, b, ang, int(np.ceil(a * 1.3)) + 1)
        if frame is None:
            continue
        (r_lo, r_hi, c_lo, c_hi), _, _, u, v = frame
        phi = np.arctan2(v, u)
        k = rng.uniform(0, 2 * np.pi, 2)
        edge = 1.0 + 0.15 * np.cos(3 * phi + k[0]) + 0.1 * np.cos(5 * phi + k[1])
        body = np.hypot(u, v) <= edge
        box = od[r_lo:r_hi, c_lo:c_hi]
        grains = rng.uniform(1.1, 1.7) * (1.0 + 0.35 * texture[r_lo:r_hi, c_lo:c_hi])
        box[body] = np.maximum(box[body], grains[body])
    od[nuclear] = 0.0
    return ndi.gaussian_filter(od, 0.6)


def _clean_instances(inst: np.ndarray, cls_of_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the largest connected piece of each instance, drop pieces under MIN_AREA, and
    renumber the kept instances 1..N (in order of their drawing id).

    Args:
        inst: (H, W) int32 instance map as drawn.
        cls_of_id: (max_id + 1,) uint8 class of each drawn id.
    Returns:
        (inst, cls): (H, W) int32 ids 1..N and (H, W) uint8 class map, both 0 on background.
    """
    from skimage.measure import label

    pieces, n_pieces = label(inst, background=0, connectivity=1, return_num=True)
    id_of_piece = np.zeros(n_pieces + 1, np.int64)
    id_of_piece[pieces.ravel()] = inst.ravel()
    piece_area = np.bincount(pieces.ravel(), minlength=n_pieces + 1)
    keep = np.zeros(n_pieces + 1, bool)
    if n_pieces:
        ids, areas = id_of_piece[1:], piece_area[1:]
        order = np.lexsort((-areas, ids))  # by id, largest piece first
        first = np.ones(order.size, bool)
        first[1:] = ids[order][1:] != ids[order][:-1]
        keep[1:][order[first]] = True
        keep &= piece_area >= MIN_AREA
    keep[0] = False
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(id_of_piece[kept], kind="stable")]
    new_id = np.zeros(n_pieces + 1, np.int32)
    new_id[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    cls_of_piece = np.where(keep, cls_of_id[id_of_piece], 0).astype(np.uint8)
    return new_id[pieces], cls_of_piece[pieces]


def make_synthetic_sample(
    size: int | Sequence[int] = (256, 256),
    seed: int = 0,
    density: float = DEFAULT_DENSITY,
    class_mix: Sequence[float] | Mapping | None = None,
    name: str | None = None,
    debris: float = 0.0,
) -> NucleiSample:
    """Generate one H&E-like tile with its instance and class maps.

    Args:
        size: (H, W) in pixels, or one int for a square tile.
        seed: the only source of randomness: the same arguments give the same tile.
        density: expected nuclei per 10,000 px² before overlap rejection (real 40x tissue:
            ~2-10). Epithelial nuclei are large, so epithelium-rich tiles end up with fewer.
        class_mix: weights of (lymphocyte, epithelial, spindle), as a 3-sequence or a mapping
            keyed by class id or name; ``None`` draws a different mix per tile.
        name: sample name; default ``synthetic_<seed>``.
        debris: expected pigment deposits per 10,000 px² (default 0: none). Deposits are dark
            brown-black granular clumps of nucleus size (radius 4-9 px) lying outside the
            nuclei: background in the instance map, the false nuclei a segmenter trained
            without them tends to find. They come from their own random stream, so the same
            seed gives the same nuclei, stain and texture with or without them.

    Returns:
        NucleiSample with image (H, W, 3) uint8 RGB, inst (H, W) int32 (ids 1..N), cls (H, W)
        uint8 with ids of :data:`CLASS_NAMES`, one class per instance, and ``debris`` (H, W)
        bool where pigment was drawn (None without); arrays indexed [row, col].
    """
    shape = _as_size(size)
    if min(shape) < 8:
        raise ValueError(f"synthetic tiles need at least 8 x 8 px, got {shape}")
    if density < 0:
        raise ValueError(f"density must be >= 0, got {density}")
    if debris < 0:
        raise ValueError(f"debris must be >= 0, got {debris}")
    rng = np.random.default_rng(seed)
    fractions = _class_fractions(class_mix, rng)
    h_vec, e_vec = _stain_vectors(rng)
    grain = rng.standard_normal(shape, dtype=np.float32)  # chromatin/fibre grain (then blurred)

    plan = _plan_nuclei(rng, shape, density, fractions)
    inst, cls_of_id, hema = _draw_nuclei(rng, shape, plan, grain)
    inst, cls = _clean_instances(inst, cls_of_id)
    nuclear = inst > 0
    hema[~nuclear] = 0.0

    # Hematoxylin: nuclei plus a faint wash, blurred (optics). Eosin: textured stroma/cytoplasm
    # with pale lumen-like gaps, weaker where hematoxylin is strong (inside nuclei).
    stroma = _smooth_noise(rng, shape, cell=48.0)
    fibres = _smooth_noise(rng, shape, cell=16.0)
    gaps = _smooth_noise(rng, shape, cell=96.0)
    tissue = 1.0 - np.clip((gaps - rng.uniform(1.3, 2.3)) * 2.0, 0.0, 0.85)
    hema *= rng.uniform(0.85, 1.15)
    hema += rng.uniform(0.02, 0.06) * tissue
    blur = rng.uniform(0.5, 0.9)
    hema = ndi.gaussian_filter(hema, blur, truncate=3.0, mode="nearest")
    stroma *= 0.25
    stroma += 1.0
    stroma += 0.1 * fibres
    stroma += 0.04 * grain
    eosin = stroma
    eosin *= rng.uniform(0.4, 0.65) * tissue
    eosin *= 1.0 - 0.7 * np.clip(hema * (1.0 / 0.6), 0.0, 1.0)
    np.clip(eosin, 0.02, None, out=eosin)
    stains = [hema, eosin]  # (H, W) float32 OD concentrations
    vectors = [h_vec, e_vec]
    pigment = None
    if debris > 0:
        pigment = _draw_pigment(np.random.default_rng([seed, 17]), shape, debris, nuclear)
        stains.append(pigment)
        vectors.append(PIGMENT_OD)
    stains = np.stack(stains)  # (S, H, W)

    # Beer-Lambert: RGB = 255 * exp(-OD), OD = sum of concentration * OD vector; sensor noise.
    vectors = np.stack(vectors).astype(np.float32)  # (S, 3)
    od = stains.reshape(len(stains), -1).T @ vectors  # (H*W, 3)
    rgb = np.exp(-od, out=od).reshape(*shape, 3)
    rgb *= 255.0
    rgb += rng.uniform(1.5, 4.0) * rng.standard_normal(rgb.shape, dtype=np.float32)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    image = (rgb + 0.5).astype(np.uint8)
    return NucleiSample(
        image=image,
        inst=inst,
        cls=cls,
        name=name if name is not None else f"synthetic_{seed}",
        tissue="synthetic",
        debris=None if pigment is None else (pigment > 0.3) & ~nuclear,
    )


def _sample_seed(seed: int, index: int) -> int:
    """An independent, reproducible seed for sample ``index`` of a dataset seeded ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def make_synthetic_dataset(
    n: int,
    size: int | Sequence[int] = (256, 256),
    seed: int = 0,
    density: float = DEFAULT_DENSITY,
    class_mix: Sequence[float] | Mapping | None = None,
    debris: float = 0.0,
) -> NucleiDataset:
    """A lazy dataset of ``n`` synthetic tiles (each generated when indexed; same seed, same
    tiles). Names are ``synthetic_<seed>_<index>``; ``class_names`` is :data:`CLASS_NAMES`;
    ``debris``: pigment deposits per 10,000 px² (see :func:`make_synthetic_sample`)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    samples = [
        partial(
            make_synthetic_sample,
            size=size,
            seed=_sample_seed(seed, i),
            density=density,
            class_mix=class_mix,
            name=f"synthetic_{seed}_{i:04d}",
            debris=debris,
        )
        for i in range(n)
    ]
    return NucleiDataset(samples, dict(CLASS_NAMES), format="synthetic", root="")


def synthetic_tile(size: int | Sequence[int] = 1024, seed: int = 0) -> NucleiSample:
    """A large, dense, all-classes tile for demos (napari's sample data), named
    ``synthetic_tile``. Same conventions as :func:`make_synthetic_sample`."""
    return make_synthetic_sample(
        size, seed=seed, density=4.0, class_mix=(0.4, 0.3, 0.3), name="synthetic_tile"
    )


def make_round_nuclei_tile(radius: float, side: int = 320, seed: int = 0) -> np.ndarray:
    """(side, side, 3) uint8 H&E-like tile: pink stroma and dark-blue round nuclei of about
    ``radius`` px (±15 %), some touching, on a jittered grid (about a quarter of the area) —
    a tile of known nucleus size, for the magnification check (``nuclei.scale``)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:side, :side]
    image = np.empty((side, side, 3), np.float32)
    image[:] = (232, 180, 205)  # eosin pink
    step = 3.4 * radius
    for y in np.arange(radius, side - radius, step):
        for x in np.arange(radius, side - radius, step):
            cy, cx = y + rng.uniform(-0.5, 0.5) * radius, x + rng.uniform(-0.5, 0.5) * radius
            r = radius * rng.uniform(0.85, 1.15)
            image[(rr - cy) ** 2 + (cc - cx) ** 2 <= r * r] = (70, 60, 150)  # hematoxylin
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
