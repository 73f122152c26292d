"""The plugin's long computations as generators, the stardist-napari way. No Qt here.

Each job is a generator that yields :class:`Progress` (or training updates) and *returns* its
result; the widgets wrap it in ``napari.qt.threading.thread_worker``, so the viewer never blocks,
``yielded`` drives the progress bar and ``returned`` delivers the result.

The engine's inference API takes progress *callbacks* (micro-sam's style):
:func:`call_with_progress` adapts such a call to a generator by running it in a helper thread and
forwarding its callbacks through a queue. Cancelling sets a ``threading.Event`` that the engine
polls through ``should_stop`` (it then raises :class:`~sampo_engine.errors.Cancelled`).
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_DONE = object()


def guard_triton() -> bool:
    """Keep triton out of a process whose OpenGL runs on Mesa's LLVM; True if it was blocked.

    ``import torchvision`` (segment_anything needs it) imports ``torch._dynamo``, which imports
    triton when installed. triton's native library carries its own LLVM; loading it into a process
    where Mesa's ``libLLVM`` is already mapped (software OpenGL: llvmpipe, Xvfb, VMs, many Intel /
    AMD Linux desktops — napari's canvas loads it at start-up) segfaults the whole viewer. The
    plugin does not use ``torch.compile``, so in that case triton is marked unavailable for this
    process (torch then reports ``has_triton() == False``). Loaded the other way round — triton
    first, as when torch is imported before the viewer opens — both coexist; nothing is blocked.
    """
    if "triton" in sys.modules:
        return False
    try:
        with open("/proc/self/maps") as maps:
            mesa_llvm = any("libLLVM" in line for line in maps)
    except OSError:  # not Linux: no Mesa clash known
        return False
    if mesa_llvm:
        sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError
    return mesa_llvm


def preload_engine(training: bool = False) -> None:
    """Import torch and the model code in the GUI thread before a worker starts (once).

    Imports in worker threads would race with the GUI thread's own imports; importing here also
    applies :func:`guard_triton` first. Cheap after the first call.
    """
    guard_triton()
    import sampo_engine.models.build  # noqa: F401  (segment_anything, torchvision, torch)
    import sampo_engine.models.loading  # noqa: F401
    import sampo_engine.predict.predictor  # noqa: F401

    if training:
        import peft  # noqa: F401

        import sampo_engine.train.trainer  # noqa: F401


@dataclass
class Progress:
    """``done`` of ``total`` units of ``stage`` (``total == 0``: unknown length)."""

    stage: str
    done: int = 0
    total: int = 0


def call_with_progress(
    fn: Callable[..., Any], stage: str, stop: threading.Event, *args: Any, **kwargs: Any
) -> Generator[Progress, None, Any]:
    """Run ``fn(*args, progress=cb, should_stop=stop.is_set, **kwargs)`` and yield its progress.

    The call runs in a helper thread; this generator yields one :class:`Progress` per callback
    (bursts are coalesced to the latest) and returns ``fn``'s return value, or re-raises its
    exception. Closing the generator early (the worker was quit) sets ``stop`` and waits for
    ``fn`` to notice it.
    """
    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def progress(done: int, total: int) -> None:
        events.put(Progress(stage, int(done), int(total)))

    def target() -> None:
        try:
            outcome["value"] = fn(*args, progress=progress, should_stop=stop.is_set, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer below
            outcome["error"] = err
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name=f"sampo-{stage}", daemon=True)
    thread.start()
    finished = False
    try:
        yield Progress(stage, 0, 0)
        while not finished:
            item = events.get()
            latest = None
            while True:
                if item is _DONE:
                    finished = True
                    break
                latest = item
                try:
                    item = events.get_nowait()
                except queue.Empty:
                    break
            if latest is not None:
                yield latest
    finally:
        if not finished:
            stop.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@dataclass
class Failure:
    """A job that ended on a user-facing error (:class:`~sampo_engine.errors.SampoError`).

    Returned instead of raised, so the widget shows the message alone (napari shows raised
    exceptions with their traceback, which is right for bugs, noise for "no checkpoint found").
    ``cancelled`` is True when the error is :class:`~sampo_engine.errors.Cancelled`.
    """

    error: BaseException
    cancelled: bool = False


class WorkerCrash(Exception):
    """A ``RuntimeError`` raised inside a job, re-raised under another type (cause attached).

    superqt's ``GeneratorWorker`` takes any ``RuntimeError`` for "the Qt object was deleted": it
    only warns and never emits ``errored`` nor ``finished``, so the widget would wait forever —
    and torch reports most failures (shapes, CUDA, out of memory) as ``RuntimeError``.
    """


def guarded(job: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Run ``job``; a :class:`SampoError` (or a cancel) becomes a returned :class:`Failure`.

    Other exceptions propagate (napari shows them with their traceback: they are bugs), a
    ``RuntimeError`` as :class:`WorkerCrash`.
    """
    from sampo_engine.errors import Cancelled, SampoError

    try:
        return (yield from job)
    except Cancelled as err:
        return Failure(err, cancelled=True)
    except SampoError as err:
        return Failure(err)
    except RuntimeError as err:
        raise WorkerCrash(f"RuntimeError: {err}") from err


# ------------------------------------------------------------------------------ segmentation


@dataclass
class SegmentRequest:
    """One "Segment" run, prepared in the GUI thread.

    ``image_layer`` is read (its pixels converted) inside the worker, since lazy data may be slow.
    ``points_rc`` (N, 2) are (row, col) image pixels, ``labels`` (N,) 1 positive / 0 negative
    — or, for the task ``classes``, each click's class index into ``class_names``.
    """

    image_layer: Any
    image_key: tuple
    points_rc: np.ndarray
    labels: np.ndarray
    task: str
    predictor_key: tuple
    make_config: Callable[[], Any]
    class_name: str = ""  # T2: the class name written to the result ("" = the engine's default)
    predictor: Any = None  # the widget's cached TilePredictor for predictor_key, if any
    predictor_image_key: tuple | None = None
    t2_mode: str = ""  # T2: decoder | exemplar | hybrid ("" = the config's)
    class_names: tuple[str, ...] = ()  # task classes: the K ≥ 2 class names


@dataclass
class SegmentResult:
    prediction: Any
    predictor: Any
    predictor_key: tuple
    image_key: tuple
    image_shape: tuple[int, int]
    embedded: bool = False  # True when this run computed (or fetched) the image's embeddings


def segment_job(
    request: SegmentRequest, stop: threading.Event
) -> Generator[Progress, None, SegmentResult]:
    """Load the model (once per model), embed the image (once per image), decode the prompts.

    The image layer's pixels are read only when the predictor has not embedded this image yet,
    so a new click on the same image costs only the prompt encoder and the mask decoder.
    """
    from napari_sampo._image import layer_image_shape, layer_to_rgb
    from sampo_engine.errors import Cancelled
    from sampo_engine.predict.predictor import TilePredictor

    def check() -> None:
        if stop.is_set():
            raise Cancelled("cancelled")

    predictor = request.predictor
    if predictor is None:
        yield Progress("loading the model")
        predictor = TilePredictor(request.make_config())
        check()
    embedded = (
        predictor is not request.predictor or request.predictor_image_key != request.image_key
    )
    if embedded:
        yield Progress("reading the image")
        image = layer_to_rgb(request.image_layer)
        check()
        yield from call_with_progress(predictor.set_image, "embedding the image", stop, image)
        shape = image.shape[:2]
        del image
    else:
        shape = layer_image_shape(request.image_layer)
    points_xy = TilePredictor.points_from_napari(request.points_rc)
    if request.t2_mode:  # a cached predictor keeps its model; the mode is per run
        predictor.config.t2_mode = request.t2_mode
    labels = np.asarray(request.labels, dtype=np.int64)
    if request.task == "classes":  # every nucleus gets one of the named classes
        stage, call = "classifying the nuclei", predictor.classify
        args, kwargs = (points_xy, labels, list(request.class_names)), {}
    else:
        stage, call, args = "segmenting", predictor.predict, (points_xy, labels)
        kwargs = {"task": request.task, "class_name": request.class_name or None}
    prediction = yield from call_with_progress(call, stage, stop, *args, **kwargs)
    return SegmentResult(
        prediction=prediction,
        predictor=predictor,
        predictor_key=request.predictor_key,
        image_key=request.image_key,
        image_shape=tuple(shape),
        embedded=embedded,
    )


# ------------------------------------------------------------------------------ fine-tuning


@dataclass
class TrainUpdate:
    """What the training worker yields: the trainer's event (None before the first step) and the
    log lines written since the last update."""

    event: Any = None
    logs: list[str] = field(default_factory=list)
    total_steps: int = 0


def training_job(config, dataset, stop: threading.Event) -> Generator[TrainUpdate, None, Any]:
    """Build a :class:`~sampo_engine.train.trainer.Trainer` and run it, one update per event.

    ``stop`` is polled between steps: a stop ends the run after the current step with a
    checkpoint and the bundle written. Returns the final ('done') event.
    """
    from sampo_engine.train.trainer import Trainer

    lines: list[str] = []

    def drain() -> list[str]:
        out = lines[:]
        del lines[:]
        return out

    trainer = Trainer(config, dataset=dataset, log=lines.append)
    yield TrainUpdate(None, drain(), trainer.total_steps)
    last = None
    for event in trainer.steps(stop=stop.is_set):
        last = event
        yield TrainUpdate(event, drain(), trainer.total_steps)
    return last


# ------------------------------------------------------------------------------ checkpoints


def download_job(model: str, stop: threading.Event) -> Generator[Progress, None, Any]:
    """Download the official checkpoint of ``model`` into the cache (verified, atomic).

    Yields :class:`Progress` in kB (a GUI progress bar holds 32-bit ints; vit_h is 2.6 GB).
    ``stop`` cancels between chunks: :class:`~sampo_engine.errors.Cancelled` is raised and the
    partial file removed. Returns the checkpoint's path.
    """
    from sampo_engine.errors import Cancelled
    from sampo_engine.models.checkpoints import download_checkpoint

    def run(progress, should_stop):
        def report(done: int, total: int) -> None:
            if should_stop():
                raise Cancelled(f"download of {model} cancelled")
            progress(-(-done // 1000), -(-total // 1000))

        return download_checkpoint(model, progress=report)

    return (yield from call_with_progress(run, f"downloading {model}", stop))
