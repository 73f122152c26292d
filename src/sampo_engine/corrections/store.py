"""The pathologist's corrections: human preference pairs kept on disk for DPO (docs/corrections.md).

When a user edits a result layer of "Segment nuclei (SAMPO)" (paints, erases, merges, splits,
deletes nuclei), the plugin stores one :class:`CorrectionRecord` per correction session: the image
region, the prompts, the model's original output and the corrected labels. Training
(``sampo-engine train --corrections DIR`` or "include my corrections" in the plugin) uses each
record as an offline preference pair — preferred = corrected mask, dispreferred = original output,
both scored under ONE context (image region, prompts, task) — see
:mod:`sampo_engine.train.corrections_loss`.

Store layout (``docs/corrections.md``)::

    DIR/index.json          {"format": "sampo-corrections", "version": 1, "records": [{summary}...]}
    DIR/<id>.npz            one record: image (H,W,3) uint8, points (N,2) float32 (x, y),
                            labels (N,) int64, original (H,W) bool, corrected (H,W) bool,
                            corrected_instances (H,W) int32, meta (JSON string)

Every file is written atomically (temporary sibling + rename): a crash never leaves half a record
and the index is rewritten only after the record's file is in place. The index is a cache: records
whose ``.npz`` exists but which it misses are found again by :meth:`CorrectionStore.list`.
No Qt here.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sampo_engine.errors import DataError
from sampo_engine.utils.atomic import atomic_path, write_json_atomic

FORMAT = "sampo-corrections"
VERSION = 1
INDEX = "index.json"
CORRECTIONS_DIR_ENV = "SAMPO_CORRECTIONS_DIR"


@dataclass
class CorrectionRecord:
    """One correction session. Arrays are the stored region (H, W), indexed [row, col].

    ``points`` are (x, y) = (column, row) in region pixels (as SAM expects); ``origin`` is the
    region's (row, col) in the full image.
    """

    image: np.ndarray  # (H, W, 3) uint8
    points: np.ndarray  # (N, 2) float32 (x, y)
    labels: np.ndarray  # (N,) int64: 1 positive, 0 negative
    original: np.ndarray  # (H, W) bool: the model's output
    corrected: np.ndarray  # (H, W) bool: after the user's edits
    corrected_instances: np.ndarray | None = None  # (H, W) int32 instance labels after edits
    task: str = "t1"
    class_name: str = ""
    class_id: int = 0
    model: dict = field(default_factory=dict)  # model/adapter identity (type, adapter path, sha)
    origin: tuple[int, int] = (0, 0)
    image_name: str = ""
    created: float = field(default_factory=time.time)
    id: str = ""

    def __post_init__(self) -> None:
        self.image = np.ascontiguousarray(self.image, dtype=np.uint8)
        self.points = np.asarray(self.points, np.float32).reshape(-1, 2)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.original = np.asarray(self.original, bool)
        self.corrected = np.asarray(self.corrected, bool)
        if self.corrected_instances is None:
            self.corrected_instances = self.corrected.astype(np.int32)
        self.corrected_instances = np.asarray(self.corrected_instances, np.int32)
        h, w = self.original.shape
        if (
            self.image.shape != (h, w, 3)
            or self.corrected.shape != (h, w)
            or self.corrected_instances.shape != (h, w)
        ):
            raise DataError(
                f"correction record arrays disagree: image {self.image.shape}, original "
                f"{self.original.shape}, corrected {self.corrected.shape}"
            )
        if len(self.points) != len(self.labels):
            raise DataError(f"{len(self.points)} points but {len(self.labels)} point labels")
        if self.task not in ("t1", "t2"):
            raise DataError(f"a correction's task must be t1 or t2, not {self.task!r}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.original.shape

    @property
    def changed_pixels(self) -> int:
        return int((self.original != self.corrected).sum())

    def summary(self) -> dict:
        """The record's entry in ``index.json`` (no arrays)."""
        return {
            "id": self.id,
            "created": self.created,
            "task": self.task,
            "class_name": self.class_name,
            "class_id": self.class_id,
            "image_name": self.image_name,
            "origin": list(self.origin),
            "shape": list(self.shape),
            "points": len(self.points),
            "changed_pixels": self.changed_pixels,
            "original_pixels": int(self.original.sum()),
            "corrected_pixels": int(self.corrected.sum()),
            "model": self.model,
        }


def edited_region(
    changed: np.ndarray, min_size: int, points_rc: np.ndarray | None = None
) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the changed pixels (and the prompt points), padded to at
    least ``min_size`` × ``min_size`` around its centre and clipped to the image; None when
    nothing changed."""
    rows, cols = np.nonzero(changed)
    if rows.size == 0:
        return None
    h, w = changed.shape
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if points_rc is not None and len(points_rc):
        pts = np.asarray(points_rc, float)
        r0 = min(r0, int(np.floor(pts[:, 0].min())))
        r1 = max(r1, int(np.ceil(pts[:, 0].max())) + 1)
        c0 = min(c0, int(np.floor(pts[:, 1].min())))
        c1 = max(c1, int(np.ceil(pts[:, 1].max())) + 1)

    def grow(a: int, b: int, limit: int) -> tuple[int, int]:
        a, b = max(0, a), min(limit, b)
        size = min(limit, max(b - a, min_size))
        centre = (a + b) // 2
        a = int(np.clip(centre - size // 2, 0, limit - size))
        return a, a + size

    top, bottom = grow(int(r0), int(r1), h)
    left, right = grow(int(c0), int(c1), w)
    return top, left, bottom, right


def make_record(
    image: np.ndarray,
    original_labels: np.ndarray,
    corrected_labels: np.ndarray,
    points_rc: np.ndarray,
    labels: np.ndarray,
    task: str,
    min_size: int,
    class_name: str = "",
    class_id: int = 0,
    model: dict | None = None,
    image_name: str = "",
) -> CorrectionRecord | None:
    """A record of the region the user edited in a full image, or None if the labels are unchanged.

    The region is the bounding box of the changed pixels and the prompt points, padded to at
    least ``min_size`` (the model input size) and clipped to the image.

    ``image`` (H, W, 3) uint8; ``original_labels`` / ``corrected_labels`` (H, W) instance maps
    (the model's and the user's); ``points_rc`` (N, 2) prompt points as napari gives them
    (row, col) in image pixels. Points outside the region are dropped.
    """
    original = np.asarray(original_labels) > 0
    corrected_inst = np.asarray(corrected_labels)
    corrected = corrected_inst > 0
    changed = original != corrected
    # splits/merges change the instances but not the mask: they still count as a correction
    instance_edit = original_labels is not None and not np.array_equal(
        np.asarray(original_labels), corrected_inst
    )
    if not changed.any() and not instance_edit:
        return None
    if not changed.any():
        changed = np.asarray(original_labels) != corrected_inst
    pts = np.asarray(points_rc, float).reshape(-1, 2)
    region = edited_region(changed, min_size, pts)  # the prompts belong to the context
    if region is None:
        return None
    top, left, bottom, right = region
    inside = (pts[:, 0] >= top) & (pts[:, 0] < bottom) & (pts[:, 1] >= left) & (pts[:, 1] < right)
    local = pts[inside] - [top, left]
    sl = (slice(top, bottom), slice(left, right))
    return CorrectionRecord(
        image=np.asarray(image)[sl],
        points=local[:, ::-1].astype(np.float32),
        labels=np.asarray(labels)[inside],
        original=original[sl],
        corrected=corrected[sl],
        corrected_instances=corrected_inst[sl].astype(np.int32),
        task=task,
        class_name=class_name or "",
        class_id=int(class_id),
        model=dict(model or {}),
        origin=(top, left),
        image_name=image_name,
    )


class CorrectionStore:
    """The records in one folder: :meth:`add`, :meth:`list`, :meth:`load`, :meth:`delete`."""

    def __init__(self, folder: str | os.PathLike, create: bool = True):
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"corrections folder {self.folder} is a file, not a folder")
        if not self.folder.exists() and not create:
            raise DataError(
                f"corrections folder {self.folder} does not exist; save a correction in the "
                f"plugin first, or pass the folder holding index.json and <id>.npz records"
            )
        if self.folder.is_dir() and (self.folder / INDEX).exists():
            self._read_index()  # a damaged index fails early, with its path

    # ----------------------------------------------------------------- index
    def _read_index(self) -> list[dict]:
        path = self.folder / INDEX
        if not path.is_file():
            return []
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read {path}: {err}; delete it to rebuild the index") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{path} is not a SAMPO corrections index (format {FORMAT!r})")
        if int(data.get("version", 0)) > VERSION:
            raise DataError(f"{path} was written by a newer napari-sampo; update it to read it")
        return list(data.get("records", []))

    def _write_index(self, entries: list[dict]) -> None:
        entries = sorted(entries, key=lambda e: (e.get("created", 0), e.get("id", "")))
        write_json_atomic(
            self.folder / INDEX, {"format": FORMAT, "version": VERSION, "records": entries}
        )

    # ----------------------------------------------------------------- API
    def add(self, record: CorrectionRecord) -> str:
        """Write ``record`` (a new id unless it has one); returns its id."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record.id = record.id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        meta = {k: v for k, v in record.summary().items()}
        meta.update(format=FORMAT, version=VERSION)
        with atomic_path(self.folder / f"{record.id}.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(
                    handle,
                    image=record.image,
                    points=record.points,
                    labels=record.labels,
                    original=record.original,
                    corrected=record.corrected,
                    corrected_instances=record.corrected_instances,
                    meta=np.array(json.dumps(meta, default=str)),
                )
        entries = [e for e in self._read_index() if e.get("id") != record.id]
        self._write_index([*entries, record.summary()])
        return record.id

    def list(self) -> list[dict]:
        """Summaries of the records, oldest first (index entries whose file is gone are dropped;
        record files missing from the index are added back)."""
        if not self.folder.is_dir():
            return []
        entries = {e["id"]: e for e in self._read_index() if "id" in e}
        files = {p.stem for p in self.folder.glob("*.npz") if not p.name.startswith(".")}
        found = [entries[i] for i in entries if i in files]
        for stem in sorted(files - set(entries)):
            try:
                found.append(self.load(stem).summary())
            except DataError:
                continue
        return sorted(found, key=lambda e: (e.get("created", 0), e.get("id", "")))

    def __len__(self) -> int:
        return len(self.list())

    def ids(self) -> list[str]:
        return [e["id"] for e in self.list()]

    def load(self, record_id: str) -> CorrectionRecord:
        path = self.folder / f"{record_id}.npz"
        if not path.is_file():
            raise DataError(f"no correction record {record_id!r} in {self.folder}")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return CorrectionRecord(
                    image=z["image"],
                    points=z["points"],
                    labels=z["labels"],
                    original=z["original"],
                    corrected=z["corrected"],
                    corrected_instances=z["corrected_instances"],
                    task=meta.get("task", "t1"),
                    class_name=meta.get("class_name", ""),
                    class_id=int(meta.get("class_id") or 0),
                    model=meta.get("model", {}),
                    origin=tuple(meta.get("origin", (0, 0))),
                    image_name=meta.get("image_name", ""),
                    created=float(meta.get("created", 0.0)),
                    id=record_id,
                )
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged file: say which
            raise DataError(f"cannot read correction record {path}: {err}") from err

    def load_all(self) -> list[CorrectionRecord]:
        return [self.load(i) for i in self.ids()]

    def delete(self, record_id: str) -> None:
        """Remove one record (its file, then its index entry)."""
        path = self.folder / f"{record_id}.npz"
        entries = self._read_index()
        if not path.is_file() and not any(e.get("id") == record_id for e in entries):
            raise DataError(f"no correction record {record_id!r} in {self.folder}")
        path.unlink(missing_ok=True)
        self._write_index([e for e in entries if e.get("id") != record_id])


def open_corrections(folder: str | os.PathLike) -> list[CorrectionRecord]:
    """Every record of an existing corrections folder (for training); clear errors otherwise."""
    store = CorrectionStore(folder, create=False)
    records = store.load_all()
    if not records:
        raise DataError(
            f"no correction records in {store.folder}; save corrections in the plugin's "
            f"'Segment nuclei (SAMPO)' dock first"
        )
    return records
