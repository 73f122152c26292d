"""The official Segment Anything checkpoints: where they come from, where they are cached, and a
verified download.

A plain registry (``CHECKPOINTS``: model type → :class:`CheckpointInfo`); tests add fake entries
with ``monkeypatch.setitem(CHECKPOINTS, ...)``. Files are cached in ``cache_root() /
"checkpoints"``, where ``cache_root()`` is ``$SAMPO_CACHE_DIR`` when set, else the platform's
user cache folder + ``sampo`` (Linux: ``$XDG_CACHE_HOME/sampo``, default ``~/.cache/sampo``).
A download streams to a temporary file beside the target, checks size and SHA-256, and only then
renames it into place, so a present file is always complete.

``SAMPO_WEIGHTS_BASE_URL`` replaces the base URL (a mirror, a ``file://`` folder, a local server).
Imports only the standard library (tqdm lazily), so the CLI can list models instantly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sampo_engine.errors import CheckpointError, ConfigError
from sampo_engine.utils.atomic import atomic_path

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
BASE_URL_ENV = "SAMPO_WEIGHTS_BASE_URL"
CACHE_DIR_ENV = "SAMPO_CACHE_DIR"
DEFAULT_TIMEOUT = 15.0  # seconds without data before a download is abandoned
CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckpointInfo:
    """One downloadable checkpoint: file name (under the base URL), SHA-256 and size in bytes."""

    model: str
    filename: str
    sha256: str
    size: int


CHECKPOINTS: dict[str, CheckpointInfo] = {
    "vit_b": CheckpointInfo(
        "vit_b",
        "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383,
    ),
    "vit_l": CheckpointInfo(
        "vit_l",
        "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607,
    ),
    "vit_h": CheckpointInfo(
        "vit_h",
        "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879,
    ),
}


def cache_root() -> Path:
    """``$SAMPO_CACHE_DIR``, else the platform user cache folder + ``sampo``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "sampo" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sampo"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sampo"


def checkpoint_dir() -> Path:
    return cache_root() / "checkpoints"


def get_info(model: str) -> CheckpointInfo:
    """Registry entry of ``model``; ConfigError naming the choices when it has none."""
    try:
        return CHECKPOINTS[model]
    except KeyError:
        from sampo_engine.models.registry import SPECS

        scratch = model in SPECS and not SPECS[model].pretrained
        hint = f" (the {model} model is trained from scratch: use --full)" if scratch else ""
        raise ConfigError(
            f"model {model!r} has no official checkpoint{hint}; choose one of "
            f"{', '.join(CHECKPOINTS)}"
        ) from None


def checkpoint_path(model: str) -> Path:
    """Where the checkpoint of ``model`` lives in the cache (whether or not it is there)."""
    return checkpoint_dir() / get_info(model).filename


def checkpoint_url(model: str, base_url: str | None = None) -> str:
    """Download URL: ``base_url`` or ``$SAMPO_WEIGHTS_BASE_URL`` or the official one + file name."""
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return base.rstrip("/") + "/" + get_info(model).filename


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def find_checkpoint(model: str, verify: bool = False) -> Path | None:
    """The cached checkpoint of ``model`` if present and complete (right size; with ``verify``
    also the right SHA-256, which reads the whole file), else None."""
    info = get_info(model)
    path = checkpoint_dir() / info.filename
    try:
        if not path.is_file() or path.stat().st_size != info.size:
            return None
    except OSError:
        return None
    if verify and sha256_file(path) != info.sha256:
        return None
    return path


def _manual_hint(info: CheckpointInfo, url: str) -> str:
    return (
        f"download {info.filename} ({info.size / 1e6:.0f} MB) from {url} on a machine with "
        f"internet access and place it at {checkpoint_dir() / info.filename} (or point "
        f"{CACHE_DIR_ENV} at a folder holding checkpoints/{info.filename}, or set "
        f"{BASE_URL_ENV} to a reachable mirror), then run the command again"
    )


def _check_free_space(folder: Path, needed: int, info: CheckpointInfo) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed:
        raise CheckpointError(
            f"not enough disk space for {info.filename}: {needed / 1e6:.0f} MB needed, "
            f"{free / 1e6:.0f} MB free in {folder}; free some space or set {CACHE_DIR_ENV} "
            f"to a folder on a larger disk"
        )


def download_checkpoint(
    model: str,
    url: str | None = None,
    progress: bool | Callable[[int, int], None] = True,
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
) -> Path:
    """Download the checkpoint of ``model`` into the cache and return its path.

    An already complete file is returned as is unless ``force``. The data stream to a temporary
    file beside the target; size and SHA-256 are checked before the atomic rename, and on any
    failure the temporary is removed and :class:`CheckpointError` says what went wrong and how
    to place the file by hand. ``timeout`` bounds connecting and each wait for data (seconds).
    ``progress``: True → a tqdm bar on stderr; a callable → called as ``progress(bytes_done,
    bytes_total)`` after each chunk (for a GUI); False → silent.
    """
    info = get_info(model)
    target = checkpoint_dir() / info.filename
    if not force and find_checkpoint(model) is not None:
        return target
    url = url or checkpoint_url(model)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"cannot create the checkpoint folder {target.parent} ({err}); set {CACHE_DIR_ENV} "
            f"to a writable folder"
        ) from None
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise CheckpointError(
            f"cannot download {url}: HTTP {err.code} {err.reason}. To continue, "
            + _manual_hint(info, url)
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise CheckpointError(
            f"cannot reach {url} ({reason}; offline or blocked?). To continue, "
            + _manual_hint(info, url)
        ) from None

    bar = None
    try:
        with response, atomic_path(target) as tmp:
            _check_free_space(target.parent, info.size, info)
            report = progress if callable(progress) else None
            if progress is True:
                from tqdm import tqdm

                bar = tqdm(
                    total=info.size,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=info.filename,
                    file=sys.stderr,
                )
            digest = hashlib.sha256()
            received = 0
            with open(tmp, "wb") as handle:
                while block := response.read(CHUNK):
                    handle.write(block)
                    digest.update(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
                    if report is not None:
                        report(received, info.size)
                    if received > info.size:
                        break
            got = digest.hexdigest()
            if received != info.size or got != info.sha256:
                raise CheckpointError(
                    f"the download of {info.filename} from {url} is corrupt and was discarded: "
                    f"expected {info.size} bytes with SHA-256 {info.sha256}, got "
                    f"{'more than ' if received > info.size else ''}{received} bytes with "
                    f"SHA-256 {got}. Try again, or " + _manual_hint(info, url)
                )
    except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
        raise CheckpointError(
            f"the download of {url} stalled or broke off ({err}); nothing was kept. Try "
            f"again, or " + _manual_hint(info, url)
        ) from None
    except OSError as err:
        raise CheckpointError(
            f"cannot write {target} ({err}); check the folder's permissions and free space, "
            f"or set {CACHE_DIR_ENV} to a writable folder"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    return target


def describe(model: str) -> dict:
    """One row of ``weights list``: model, file, size (bytes), cached (bool), path."""
    info = get_info(model)
    cached = find_checkpoint(model)
    return {
        "model": model,
        "file": info.filename,
        "size": info.size,
        "cached": cached is not None,
        "path": str(checkpoint_dir() / info.filename),
    }
