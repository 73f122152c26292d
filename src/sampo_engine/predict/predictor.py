"""Whole-tile T1/T2 prediction from a few clicks: :class:`TilePredictor`.

Pipeline (docs/inference.md)::

    set_image(image)       tile at the model input size with overlap -> encode tiles in batches
                           (or fetch the embeddings from the cache)
    predict(points, ...)   per tile: the user's clicks in it, else prompts propagated by feature
                           similarity -> prompt encoder + mask decoder for all prompted tiles in
                           batches -> IoU-head slot -> sigmoid -> window-blended (H, W)
                           probability -> threshold -> instances (watershed) once for the image

A new set of clicks on the same image re-runs only the prompt encoder and the mask decoder.

Coordinates. ``image`` is indexed [row, col]. Points are (x, y) = (column, row) in full-image
pixels, pixel centres at integers (numpy / napari / scikit-image convention): the click on pixel
``image[r, c]`` is (x=c, y=r). napari's Points layer stores (row, col): convert with
:meth:`TilePredictor.points_from_napari`. A point may lie anywhere on the image's pixels,
``-0.5 ≤ x < W − 0.5`` and ``-0.5 ≤ y < H − 0.5``.

Progress and cancel: ``progress(done, total)`` is called after each batch; ``should_stop()`` is
polled before each batch and a True answer raises :class:`~sampo_engine.errors.Cancelled`.
Nothing here imports Qt; the napari widget wraps these calls in a worker thread.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sampo_engine.errors import Cancelled, ConfigError, DataError, SampoError

# what a prediction is asked (re-exported: ``from sampo_engine.predict.predictor import ...``)
from sampo_engine.predict.config import (  # noqa: F401
    DEFAULT_T2_CLASS,
    DEVICES,
    MAX_POINTS,
    TASKS,
    PredictConfig,
    check_points,
)

#: Most probability pixels decoded at once (B · S² float32; 4 M px = 16 MB): the decode batch
#: is this divided by S² (81 tiles at 224 px, 4 at 1024 px).
DECODE_PIXELS = 4 << 20

Progress = Callable[[int, int], None] | None
StopFlag = Callable[[], bool] | None


@dataclass
class Prediction:
    """The result of :meth:`TilePredictor.predict`. Maps are (H, W), indexed [row, col].

    Attributes:
        prob: float32 blended foreground probability at full resolution (0 where no tile had a
            prompt).
        mask: bool, the foreground the nuclei were cut from (``prob > threshold``, or the
            split head's: :mod:`~sampo_engine.predict.split`).
        labels: int32 instances 1..N, 0 = background.
        task: 't1' or 't2'.
        class_name: the class written to exports (None for T1 unless one was given).
        num_nuclei: N.
        tiles_with_prompts: tiles that held at least one of the user's positive clicks.
        tiles_propagated: tiles without positive clicks that got prompts by propagation.
        seconds: wall time of :meth:`TilePredictor.predict`.
        num_tiles: tiles of the image in all.
        encoder_seconds: wall time of the last :meth:`TilePredictor.set_image` (0 on a cache hit).
        nucleus: for exemplar/hybrid T2 and :meth:`TilePredictor.classify`, the
            :class:`~sampo_engine.predict.nucleus_classes.NucleusClasses` of every nucleus
            (its map, class and probability); None otherwise.
        messages: what the user should know (a click on background, a fallback taken).
    """

    prob: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    task: str
    class_name: str | None
    num_nuclei: int
    tiles_with_prompts: int
    tiles_propagated: int
    seconds: float
    num_tiles: int = 0
    encoder_seconds: float = 0.0
    nucleus: object | None = None
    messages: list = field(default_factory=list)


def _check_stop(should_stop: StopFlag) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("prediction cancelled")


class TilePredictor:
    """Segment all nuclei (T1) or all nuclei of the clicked type (T2) in an image of any size.

    Args:
        config: the options (default :class:`PredictConfig`).
        model: an already loaded :class:`~sampo_engine.models.lora.AdaptedSam` (with
            ``.image_size``, ``.model_type``, ``.info``); else one is loaded from ``config``
            (:func:`~sampo_engine.models.loading.load_model`).
        cache: an :class:`~sampo_engine.predict.cache.EmbeddingCache` to share between
            predictors; default a private one (4 images in memory, plus ``config.cache_dir``).

    Attributes:
        encoder_calls: image-encoder forward batches run so far (cache hits run none).
        encoder_forward_seconds: wall time spent in those forward passes (incl. the copy of the
            embeddings to the CPU), summed over all calls.
        image_size: the model input size = tile side in px.
        device: the torch device everything runs on.
    """

    def __init__(self, config: PredictConfig | None = None, model=None, *, cache=None):
        import torch

        from sampo_engine.predict.cache import EmbeddingCache, _FingerprintMemo
        from sampo_engine.utils.device import resolve_device

        self.config = config if config is not None else PredictConfig()
        self.config.validate()
        self.device = resolve_device(self.config.device)
        if model is None:
            model = self._load_model()
        elif self.config.image_size and self.config.image_size != getattr(model, "image_size", 0):
            raise ConfigError(
                f"the model given runs at {getattr(model, 'image_size', '?')} px but image_size "
                f"{self.config.image_size} was asked; set image_size to 0 (use the model's)"
            )
        self.model = model.to(self.device) if hasattr(model, "to") else model
        self.model.eval()
        self.sam = model.sam
        self.image_size = int(model.image_size)
        self.model_type = str(getattr(model, "model_type", "?"))
        self.info = getattr(model, "info", None)
        from sampo_engine.predict.resample import resample_factor

        self.resample = resample_factor(
            self.model_type, self.config.resample, self.config.um_per_px
        )
        self.encoder_calls = 0
        self.encoder_forward_seconds = 0.0
        self.cache = cache if cache is not None else EmbeddingCache(cache_dir=self.config.cache_dir)
        self._fingerprint = _FingerprintMemo()
        self._entry = None
        self._encoder_seconds = 0.0
        self._window = None
        self._torch = torch
        self._nuclei = None
        self._rgb = None  # the image as the model sees it (resampled by ``self.resample``)
        self._rgb_image = None  # the image as given (the split head reads it)
        from sampo_engine.models.type_head import resolve_type_head
        from sampo_engine.predict.split import NucleusSplitter

        #: how T1 nuclei are cut apart (``config.split_by``): the split head or the watershed
        self.splitter = NucleusSplitter(self.config, self.model_type, self.device)
        #: the nucleus type head that joins the descriptors of T2 by nucleus (``type_head``)
        self.type_head, self._type_messages = resolve_type_head(self.config.type_head, self.device)
        self._image_shape = None  # (H, W) of the image as given
        self._nuclei_image = None  # (index, its nuclei at the image's size): _image_nuclei
        #: the magnification check of the image set last (:func:`~sampo_engine.nuclei.scale.
        #: check_scale`); its message, if any, leads every result's ``messages``
        self.scale_check = None

    @property
    def assumed_um_per_px(self) -> float:
        """The image pixel size (µm) the resampling assumes: ``config.um_per_px``, else the one
        :attr:`resample` implies (0.25 at the model's own factor)."""
        from sampo_engine.predict.resample import assumed_um_per_px

        return assumed_um_per_px(self.model_type, self.resample)

    # ------------------------------------------------------------------------------ loading

    def _load_model(self):
        from sampo_engine.models.loading import load_model

        cfg = self.config
        model_type = cfg.model
        if not model_type and not cfg.adapter:
            from sampo_engine.models.availability import default_model

            model_type = default_model()
        if cfg.adapter:
            from sampo_engine.models.bundle import read_bundle

            model_type = read_bundle(cfg.adapter).model_type  # the bundle decides
        return load_model(
            model_type,
            checkpoint=cfg.checkpoint or None,
            adapter=cfg.adapter or None,
            image_size=cfg.image_size or None,
        )

    def model_identity(self) -> dict:
        """What identifies the weights in the cache key (see :mod:`sampo_engine.predict.cache`)."""
        from sampo_engine.models.loading import checkpoint_sha256

        identity = {
            "model_type": self.model_type,
            "image_size": self.image_size,
            "weights": self._fingerprint(self.sam),
        }
        if self.info is not None:
            path = self.info.path
            identity["adapter"] = str(path.resolve()) if hasattr(path, "resolve") else str(path)
            weights = self.info.weights_file
            identity["adapter_sha256"] = checkpoint_sha256(weights) if weights.is_file() else None
        if self.config.checkpoint:
            identity["checkpoint_sha256"] = checkpoint_sha256(self.config.checkpoint)
        return identity

    @property
    def class_names(self) -> dict[int, str]:
        """Class names of the adapter bundle (empty without one)."""
        return dict(getattr(self.info, "class_names", None) or {})

    # ------------------------------------------------------------------------------ encoding

    @staticmethod
    def points_from_napari(data_rc) -> np.ndarray:
        """napari Points ``data`` (N, 2) (row, col) -> (N, 2) float32 (x, y) = (col, row).

        Only the last two axes are used, so (N, D) data of a multi-dimensional layer works too.
        """
        arr = np.asarray(data_rc, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise DataError(f"napari points must be (N, 2) (row, col), got shape {arr.shape}")
        return np.ascontiguousarray(arr[:, [-1, -2]])

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(H, W) of the image set last, as given, or None."""
        return None if self._entry is None else self._image_shape

    @property
    def tile_grid(self):
        """The :class:`~sampo_engine.predict.tiling.TileGrid` of the image set last as the
        model sees it (resampled by :attr:`resample`), or None."""
        return None if self._entry is None else self._entry.grid

    @property
    def num_tiles(self) -> int:
        return 0 if self._entry is None else len(self._entry.grid)

    def set_image(
        self, image: np.ndarray, progress: Progress = None, should_stop: StopFlag = None
    ) -> None:
        """Tile and encode ``image`` (any size; (H, W) gray, (H, W, 3) RGB, RGBA, 16-bit ...,
        converted by :func:`~sampo_engine.utils.imageio.to_rgb_uint8`), or fetch its embeddings
        from the cache. The model sees it resampled by :attr:`resample`
        (:mod:`~sampo_engine.predict.resample`); clicks and results stay at its own size.
        ``progress(done, total)`` counts tiles."""
        from sampo_engine.nuclei.scale import check_scale
        from sampo_engine.predict.cache import TileEmbeddings, cache_key, image_digest
        from sampo_engine.predict.resample import resample_image
        from sampo_engine.predict.tiling import extract_tiles, make_grid, pad_image
        from sampo_engine.utils.imageio import to_rgb_uint8

        torch = self._torch
        rgb = to_rgb_uint8(image)
        image_shape = rgb.shape[:2]
        self.scale_check = check_scale(rgb, self.assumed_um_per_px, self.model_type)
        self._rgb_image = rgb
        rgb = resample_image(rgb, self.resample)
        self._rgb, self._image_shape = rgb, image_shape
        grid = make_grid(rgb.shape[0], rgb.shape[1], self.image_size, self.config.overlap)
        runtime = {"device": self.device.type, "bf16": self.device.type == "cuda"}
        key = cache_key(image_digest(rgb), self.model_identity(), grid, runtime)
        entry = self.cache.get(key, grid)
        total = len(grid)
        if entry is not None:
            self._entry, self._encoder_seconds = entry, 0.0
            if progress is not None:
                progress(total, total)
            return

        from sampo_engine.models.forward import encode
        from sampo_engine.utils.device import autocast

        start = time.perf_counter()
        padded = pad_image(rgb, grid)
        out = None
        step = self.config.batch_size
        if progress is not None:
            progress(0, total)
        for first in range(0, total, step):
            _check_stop(should_stop)
            index = np.arange(first, min(first + step, total))
            batch = torch.from_numpy(extract_tiles(padded, grid, index)).to(self.device)
            batch = batch.permute(0, 3, 1, 2)
            tick = time.perf_counter()
            with torch.inference_mode(), autocast(self.device):
                emb = encode(self.sam, batch)
            emb = emb.float().cpu()
            self.encoder_forward_seconds += time.perf_counter() - tick
            self.encoder_calls += 1
            if out is None:
                out = torch.empty((total, *emb.shape[1:]), dtype=torch.float32)
            out[index] = emb
            if progress is not None:
                progress(int(index[-1]) + 1, total)
        entry = TileEmbeddings(key, grid, out)
        self.cache.put(entry)
        self._entry = entry
        self._encoder_seconds = time.perf_counter() - start

    # ---------------------------------------------------------------------------- prompting

    def tile_prompts(self, points_xy: np.ndarray, labels: np.ndarray, task: str = "t1"):
        """The prompt set of every tile for these clicks (validated), as ``{tile: TilePrompt}``,
        plus the set of tiles holding positive clicks. Tile prompts are in tile pixels
        (:func:`~sampo_engine.predict.propagation.image_prompts`)."""
        from sampo_engine.predict.propagation import image_prompts
        from sampo_engine.predict.resample import points_to_model

        entry = self._require_image()
        pts, lab = check_points(points_xy, labels, self._image_shape)
        return image_prompts(
            entry.grid,
            entry.embeddings,
            entry.feature_mean,
            points_to_model(pts, self.resample),
            lab,
            propagate_to_rest=self.config.propagate,
            min_similarity=self.config.similarity,
            min_spacing=self.config.spacing,
        )

    def _image_messages(self) -> list[str]:
        """What every result on this image says first (a far-off magnification)."""
        check = self.scale_check
        return ([check.message] if check and check.message else []) + self._type_messages

    def _require_image(self):
        if self._entry is None:
            raise SampoError("no image set: call set_image(image) before predict(...)")
        return self._entry

    # ---------------------------------------------------------------------------- decoding

    def predict(
        self,
        points_xy: np.ndarray,
        labels: np.ndarray,
        task: str | None = None,
        progress: Progress = None,
        should_stop: StopFlag = None,
        class_name: str | None = None,
    ) -> Prediction:
        """Segment the image set last from clicks.

        Args:
            points_xy: (N, 2) float (x, y) = (column, row) in full-image pixels.
            labels: (N,) 1 positive / 0 negative; at least one positive.
            task: 't1' (all nuclei) or 't2' (nuclei of the clicked type); None = ``config.task``.
                The model reads the intent from the clicks; the task names the result and its
                class (several named classes: :meth:`classify`).
            progress: ``progress(done, total)`` over decoded tiles (+1 for the instance split).
            should_stop: polled between batches; True raises :class:`Cancelled`.
            class_name: overrides ``config.class_name`` for the exports.
        """
        from sampo_engine.models.slots import slot_rule_for
        from sampo_engine.predict.nucleus_classes import only_ids
        from sampo_engine.predict.resample import points_to_model, prob_to_image

        start = time.perf_counter()
        task = str(self.config.task if task is None else task).lower()
        if task == "classes":
            raise ConfigError(
                "task 'classes' labels every nucleus with one of several named classes: call "
                "classify(points, classes, names) instead of predict"
            )
        if task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
        entry = self._require_image()
        _check_stop(should_stop)
        cfg = self.config
        by_nucleus = task == "t2" and cfg.t2_mode in ("exemplar", "hybrid")
        shape = self._image_shape
        if by_nucleus and cfg.t2_mode == "exemplar":  # no decoder pass: the nuclei decide
            check_points(points_xy, labels, shape)
            prompts, clicked = {}, set()
        else:
            prompts, clicked = self.tile_prompts(points_xy, labels, task)
        order = sorted(prompts)
        total = len(order) + 1
        if progress is not None:
            progress(0, total)
        rule = slot_rule_for(cfg.slot_rule, task)
        prob = None
        if not by_nucleus or cfg.t2_mode == "hybrid":
            prob = self._decode_and_blend(entry, prompts, order, progress, should_stop, total, rule)
        _check_stop(should_stop)
        name = class_name or cfg.class_name or (DEFAULT_T2_CLASS if task == "t2" else None)
        nucleus, messages = None, self._image_messages()
        if by_nucleus:
            from sampo_engine.predict.nucleus_classes import score_t2

            index = self.nuclei_index(points_xy, progress, should_stop=should_stop)
            nucleus = score_t2(
                index, points_to_model(points_xy, self.resample), labels, cfg.t2_mode,
                decoder_prob=prob, method=cfg.classifier, snap_radius=cfg.snap_radius,
                class_name=name,
            )  # fmt: skip
            messages += list(nucleus.messages)
            nucleus = dataclasses.replace(nucleus, nuclei=self._image_nuclei(index))
            wanted = nucleus.ids[nucleus.probability >= cfg.class_threshold]
            instances = only_ids(nucleus.nuclei, wanted)
            mask = instances > 0
            if prob is None:
                prob = np.zeros(instances.shape, np.float32)
                prob[instances > 0] = nucleus.probability[
                    index.descriptors.index_of(instances[instances > 0])
                ]
            else:
                prob = prob_to_image(prob, shape)
            num = int(np.count_nonzero(nucleus.probability >= cfg.class_threshold))
        else:  # T1 by the split head where the model ships one; the decoder's T2 (the head
            # learnt T1 probabilities) by the watershed
            prob = prob_to_image(prob, shape)
            cut = self.splitter.split(prob, self._rgb_image, head=task == "t1")
            mask, instances = cut.mask, cut.labels
            messages += cut.messages
            num = int(instances.max()) if instances.size else 0
        if progress is not None:
            progress(total, total)
        return Prediction(
            prob=prob,
            mask=mask,
            labels=instances,
            task=task,
            class_name=name,
            num_nuclei=num,
            tiles_with_prompts=len(clicked),
            tiles_propagated=sum(1 for t in order if prompts[t].propagated),
            seconds=time.perf_counter() - start,
            num_tiles=len(entry.grid),
            encoder_seconds=self._encoder_seconds,
            nucleus=nucleus,
            messages=messages,
        )

    # ------------------------------------------------------------------- nuclei by class

    def nuclei_index(self, points_xy, progress: Progress = None, should_stop: StopFlag = None):
        """Every nucleus of the image set last, with its descriptors
        (:class:`~sampo_engine.predict.nucleus_classes.NucleiIndex`).

        Segmented once per image, by T1 from these clicks all taken as positives (they lie on
        nuclei), then reused while the clicks change; :meth:`forget_nuclei` drops it.
        """
        entry = self._require_image()
        if self._nuclei is not None and self._nuclei.key == entry.key:
            return self._nuclei
        pts = np.asarray(points_xy, np.float32).reshape(-1, 2)
        t1 = self.predict(pts, np.ones(len(pts), np.int64), "t1", progress, should_stop)
        self._nuclei = self.nuclei_from_labels(t1.labels)
        return self._nuclei

    def nuclei_from_labels(self, labels, embeddings: bool = True):
        """A :class:`~sampo_engine.predict.nucleus_classes.NucleiIndex` of the image set last
        for a given (H, W) instance map (e.g. an edited Labels layer); it becomes the one used
        by exemplar T2 and :meth:`classify` until the image changes. ``embeddings=False``
        describes the nuclei by morphology and stain alone (e.g. for a model whose features
        mean nothing yet)."""
        from sampo_engine.predict.nucleus_classes import NucleiIndex, type_head_columns
        from sampo_engine.predict.resample import labels_to_shape

        entry = self._require_image()
        labels = np.asarray(labels)
        if labels.shape != self._image_shape:
            raise DataError(
                f"the nuclei map is {labels.shape} but the image is {self._image_shape}; pass "
                f"the labels of this image"
            )
        self._nuclei = NucleiIndex.build(
            entry.key,
            self._rgb,
            labels_to_shape(labels, entry.grid.shape),  # as the model sees the image
            embeddings=entry.embeddings if embeddings else None,
            grid=entry.grid,
            nucleus_types=type_head_columns(self.type_head, self.assumed_um_per_px / self.resample),
        )
        return self._nuclei

    def _image_nuclei(self, index) -> np.ndarray:
        """(H, W) int32: the nuclei of ``index`` (held as the model sees the image) at the
        image's own size, only ids the index describes; computed once per index."""
        from sampo_engine.predict.nucleus_classes import only_ids
        from sampo_engine.predict.resample import labels_to_shape

        if self._nuclei_image is None or self._nuclei_image[0] is not index:
            labels = labels_to_shape(index.labels, self._image_shape)
            self._nuclei_image = (index, only_ids(labels, index.descriptors.ids))
        return self._nuclei_image[1]

    def forget_nuclei(self) -> None:
        """Segment the nuclei afresh at the next exemplar T2 or :meth:`classify`."""
        self._nuclei = None
        self._nuclei_image = None

    def classify(
        self,
        points_xy,
        point_classes,
        class_names,
        should_stop: StopFlag = None,
        progress: Progress = None,
    ) -> Prediction:
        """Give every nucleus one of several named classes from a few clicks of each.

        Args:
            points_xy: (P, 2) (x, y) clicks, each on a nucleus.
            point_classes: (P,) class index of each click into ``class_names``.
            class_names: K ≥ 2 names ("lymphocyte", "tumour", ...).

        Returns a :class:`Prediction` whose ``labels`` hold every nucleus and whose
        ``nucleus`` (:class:`~sampo_engine.predict.nucleus_classes.NucleusClasses`) gives
        each one's class and probability.
        """
        from sampo_engine.predict.nucleus_classes import score_classes
        from sampo_engine.predict.resample import points_to_model

        start = time.perf_counter()
        entry = self._require_image()
        pts = np.asarray(points_xy, np.float32).reshape(-1, 2)
        check_points(pts, np.ones(len(pts), np.int64), self._image_shape)
        index = self.nuclei_index(pts, progress, should_stop)
        cfg = self.config
        nucleus = score_classes(
            index, points_to_model(pts, self.resample), point_classes, list(class_names),
            cfg.classifier, cfg.snap_radius,
        )  # fmt: skip
        labels = self._image_nuclei(index)
        nucleus = dataclasses.replace(nucleus, nuclei=labels)
        prob = np.zeros(labels.shape, np.float32)
        inside = labels > 0
        prob[inside] = nucleus.probability[index.descriptors.index_of(labels[inside])]
        return Prediction(
            prob=prob,
            mask=inside,
            labels=labels,
            task="classes",
            class_name=None,
            num_nuclei=len(nucleus.ids),
            tiles_with_prompts=0,
            tiles_propagated=0,
            seconds=time.perf_counter() - start,
            num_tiles=len(entry.grid),
            encoder_seconds=self._encoder_seconds,
            nucleus=nucleus,
            messages=self._image_messages() + list(nucleus.messages),
        )

    def _decode_and_blend(
        self, entry, prompts, order, progress, should_stop, total, slot_rule: str = "iou"
    ) -> np.ndarray:
        from sampo_engine.models.forward import decode, upsample
        from sampo_engine.models.slots import select_slots_torch
        from sampo_engine.predict.tiling import ProbabilityBlender, blend_window
        from sampo_engine.utils.device import autocast

        torch = self._torch
        grid = entry.grid
        s = grid.tile
        if self._window is None or self._window[0] != (s, grid.overlap):
            window = torch.from_numpy(blend_window(s, grid.overlap)).to(self.device)
            self._window = ((s, grid.overlap), window)
        blender = ProbabilityBlender(grid, self._window[1])
        step = max(1, DECODE_PIXELS // (s * s))
        for first in range(0, len(order), step):
            _check_stop(should_stop)
            index = order[first : first + step]
            points = np.zeros((len(index), 1, MAX_POINTS, 2), np.float32)
            labels = np.full((len(index), 1, MAX_POINTS), -1, np.int64)
            for b, t in enumerate(index):
                n = len(prompts[t].labels)
                points[b, 0, :n] = prompts[t].points
                labels[b, 0, :n] = prompts[t].labels
            emb = entry.embeddings[index].to(self.device, non_blocking=True)
            with torch.inference_mode(), autocast(self.device):
                points_t = torch.from_numpy(points).to(self.device)
                labels_t = torch.from_numpy(labels).to(self.device)
                out = decode(self.sam, emb, points_t, labels_t)
                all_logits = out.logits.float()  # (b, 1, 3, s/4, s/4)
                slot = select_slots_torch(
                    all_logits, out.iou_pred.float(), points_t, labels_t, s, slot_rule
                )
                pick = slot[..., None, None, None].expand(-1, -1, 1, *all_logits.shape[-2:])
                logits = all_logits.gather(2, pick).squeeze(2)
            with torch.inference_mode():
                probs = torch.sigmoid(upsample(logits[:, 0], (s, s)))
                blender.add(index, probs)
            if progress is not None:
                progress(first + len(index), total)
        return blender.result()
