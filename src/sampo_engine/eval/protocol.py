"""The paper's evaluation protocol (docs/evaluation.md) for several models on identical prompts.

:class:`~sampo_engine.eval.config.EvalConfig` holds every option of ``sampo-engine eval`` (help
text shared with the GUI); :func:`run_evaluation` runs it:

1. open the test data, cut its images into crops at the model input size and build the
   (crop, intent) queries with seeded 3 + 3 prompts (:func:`~sampo_engine.scoring.queries.make_queries`);
2. give some of the queries extra prompt sets: the prompt-sensitivity grid (the first p
   positives and n negatives of the query's own 3 + 3 set, p = 1–3, n = 0–3) and R random
   3 + 3 sets (robustness) — :mod:`~sampo_engine.eval.plan`;
3. for each method — the base model without adapter, then each ``--adapter`` — encode each crop
   once, decode all its prompt sets, and score the IoU-head-selected slot and the best slot
   (oracle), the selected mask split into nuclei (PQ, AJI, detection F1), and, for every T2
   query, the model's answer to the T1 query of the same crop ("T1 answer as T2") —
   :mod:`~sampo_engine.eval.score`;
4. the trivial T2 row "all nuclei, perfectly segmented" (the T1 ground truth as every T2 answer);
5. aggregate (macro over queries as the paper's tables, pooled over pixels, per class, tissue,
   density bin; :mod:`~sampo_engine.eval.aggregate`) and write ``metrics.json``,
   ``per_query.csv``, ``report.md`` and the plots.

Nothing is written until the data, the adapters and the base checkpoint have been checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sampo_engine.errors import ConfigError
from sampo_engine.eval.aggregate import paired_versus_base
from sampo_engine.eval.config import EvalConfig
from sampo_engine.eval.methods import Method, load_method
from sampo_engine.eval.metrics_json import build_metrics, method_entry, trivial_rows
from sampo_engine.eval.outputs import (
    EVAL_MARKER,
    METRICS_FILE,
    copy_curves,
    per_query_csv,
    prepare_eval_dir,
)
from sampo_engine.eval.plan import EvalPlan, plan_evaluation, prompts_digest, reported_counts
from sampo_engine.eval.score import score_method

__all__ = ["EvalConfig", "EvalResult", "run_evaluation"]  # EvalConfig: the documented import


@dataclass
class EvalResult:
    """What :func:`run_evaluation` returns: the output folder and the ``metrics.json``
    structure (scores as Python floats, NaN kept; the file holds null instead)."""

    out: Path
    metrics: dict = field(default_factory=dict)


def run_evaluation(
    config: EvalConfig,
    progress: Callable[[int, int, str], None] | None = None,
    log: Callable[[str], None] = print,
    stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Run the protocol and write the report; returns the output folder and the metrics.

    ``progress(done, total, method_name)`` counts scored queries over all methods; ``stop`` is
    polled after every batch (a true value raises :class:`~sampo_engine.errors.Cancelled`).
    """
    from sampo_engine.utils.device import resolve_device

    t_start = time.perf_counter()
    plan = plan_evaluation(config, log)
    device = resolve_device(config.device)
    out = prepare_eval_dir(config.out, config.overwrite)
    digest = prompts_digest(plan)
    log(_start_line(plan, device))
    counter = _Counter(len(plan.queries) * len(plan.methods), progress)
    entries, records = [], []
    for m in plan.methods:
        entry, recs = _evaluate_method(m, plan, config, device, counter, stop, log)
        entries.append(entry)
        records.append(recs)
    trivial, trivial_records = trivial_rows(plan, config.instances)
    paired = paired_versus_base(plan, records)
    curves = copy_curves(plan.methods, out)
    metrics = build_metrics(config, plan, entries, trivial, paired, curves, digest, t_start)
    _write_outputs(out, plan, metrics, records + trivial_records, log)
    return EvalResult(out, metrics)


class _Counter:
    """Queries scored over all methods, reported as ``progress(done, total, method_name)``."""

    def __init__(self, total: int, progress: Callable[[int, int, str], None] | None):
        self.total, self.done, self.progress = total, 0, progress

    def for_method(self, name: str) -> Callable[[int], None]:
        def tick(k: int) -> None:
            self.done += k
            if self.progress is not None:
                self.progress(self.done, self.total, name)

        return tick


def _start_line(plan: EvalPlan, device) -> str:
    from sampo_engine.data.detect import describe

    n_reported = reported_counts(plan)
    return (
        f"{describe(plan.dataset)}; evaluating {len(plan.image_indices)} image(s): "
        + ", ".join(f"{n} {t.upper()} queries" for t, n in n_reported.items() if n)
        + f" × {len(plan.methods)} method(s) on {device}"
    )


def _evaluate_method(
    m: Method, plan: EvalPlan, config: EvalConfig, device, counter: _Counter, stop, log
) -> tuple[dict, dict[int, dict]]:
    """Load one method, score it on the crops (and whole images with ``--whole-images``) and
    free it; returns its ``metrics.json`` entry and its per-query records."""
    import torch

    t0 = time.perf_counter()
    model = load_method(m, plan.model_type, plan.image_size, device, config.seed)
    whole = None
    try:
        records, fed = score_method(model, plan, config, device, counter.for_method(m.name), stop)
        if config.whole_images:
            log(f"{m.name}: whole images with the tiled predictor")
            whole = _whole_images(model, m, plan, config, device)
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(
            f"out of GPU memory at --batch-size {config.batch_size}; pass a smaller one"
        ) from None
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return method_entry(m, plan, records, fed, t0, whole), records


def _whole_images(model, m: Method, plan: EvalPlan, config: EvalConfig, device) -> dict:
    """The whole-image blocks of one method: every test image segmented with the tiled
    predictor from 3 + 3 clicks in one tile, in each T2 mode of ``--t2-modes``."""
    from sampo_engine.eval.whole import score_whole_images, summarize_whole

    modes = [t.strip() for t in config.t2_modes.split(",") if t.strip()]
    if m.kind == "classical":  # no decoder: its own rule stands in ('decoder')
        modes = [t for t in modes if t != "hybrid"] or ["exemplar"]
    rows = score_whole_images(
        model, plan.dataset, plan.image_indices, config.task, config.seed,
        str(device), config.instances, slot_rule=config.slot_rule,
        t2_modes=modes, match_radius=config.match_radius, split=config.split_by,
        type_head=config.type_head,
    )  # fmt: skip
    return summarize_whole(rows)


def _write_outputs(out: Path, plan: EvalPlan, metrics: dict, records: list, log) -> None:
    """per_query.csv, metrics.json (strict JSON), report.md with its plots, then the marker
    that says the evaluation is complete. ``records`` follow the methods, then the baselines."""
    from sampo_engine.eval.report import write_report
    from sampo_engine.utils.atomic import write_json_atomic, write_text_atomic
    from sampo_engine.utils.jsonable import strict_jsonable

    rows = metrics["methods"] + metrics["baselines"]
    write_text_atomic(out / "per_query.csv", per_query_csv(plan, rows, records))
    write_json_atomic(out / METRICS_FILE, strict_jsonable(metrics))
    write_report(metrics, out, log=log)
    write_json_atomic(
        out / EVAL_MARKER,
        {
            "written": metrics["written"],
            "complete": True,
            "prompts_sha256": metrics["prompts_sha256"],
        },
    )
