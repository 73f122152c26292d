"""The ``metrics.json`` structure of an evaluation: one entry per method, the trivial rows and
the header (config, data, model, protocol).

``report.md`` and the plots are drawn from this structure alone
(:func:`sampo_engine.eval.report.write_report`), so a report can be redrawn from a saved file.
Scores are fractions (``"percent": False``); NaN is written as null.
"""

from __future__ import annotations

import time

from sampo_engine._config import to_jsonable
from sampo_engine._version import __version__
from sampo_engine.eval.aggregate import DENSITY_BINS, aggregate
from sampo_engine.eval.methods import Method
from sampo_engine.eval.plan import EvalPlan, reported_counts
from sampo_engine.eval.score import trivial_all_nuclei

METRICS_FORMAT = 1
TRIVIAL_NAME = "all nuclei, perfect (trivial)"


def method_entry(
    method: Method,
    plan: EvalPlan,
    records: dict[int, dict],
    prompts_sha256: str,
    t0: float,
    whole: dict | None = None,
) -> dict:
    """The entry of one method: its name, kind, prompt digest, seconds since ``t0``
    (:func:`time.perf_counter`), every breakdown of its records, its whole-image blocks, its
    bundle and its T1 answers scored as T2."""
    class_names = dict(plan.dataset.class_names)
    entry = {
        "name": method.name,
        "kind": method.kind,
        "adapter": method.adapter,
        "prompts_sha256": prompts_sha256,
        "seconds": time.perf_counter() - t0,
        **aggregate(plan.queries, plan.reported, records, class_names),
    }
    if whole is not None:
        entry["whole_image"] = whole
    if method.info is not None:
        entry["bundle"] = _bundle_summary(method.info)
    t1_as_t2 = {i: r["t1_as_t2"] for i, r in records.items() if "t1_as_t2" in r}
    if t1_as_t2:
        entry["t1_as_t2"] = aggregate(plan.queries, plan.reported, t1_as_t2, class_names)
    return entry


def trivial_rows(plan: EvalPlan, instances: bool) -> tuple[list[dict], list[dict[int, dict]]]:
    """The trivial T2 row "all nuclei, perfectly segmented" and its records, when the plan
    reports T2 queries; ([], []) otherwise."""
    if not any(plan.queries[i].intent.task == "t2" for i in plan.reported):
        return [], []
    recs = trivial_all_nuclei(plan, instances)
    class_names = dict(plan.dataset.class_names)
    entry = {
        "name": TRIVIAL_NAME,
        "kind": "trivial",
        **aggregate(plan.queries, plan.reported, recs, class_names),
    }
    return [entry], [recs]


def build_metrics(
    config,
    plan: EvalPlan,
    methods: list[dict],
    baselines: list[dict],
    paired: list[dict],
    curves: dict[str, str],
    prompts_sha256: str,
    t_start: float,
) -> dict:
    """The whole ``metrics.json`` structure (before NaN is made strict JSON); ``config`` is the
    :class:`~sampo_engine.eval.config.EvalConfig`, ``t_start`` the run's start
    (:func:`time.perf_counter`)."""
    from sampo_engine.data.detect import describe

    n_reported = reported_counts(plan)
    class_names = dict(plan.dataset.class_names)
    return {
        "format": "sampo-eval",
        "format_version": METRICS_FORMAT,
        "package_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": to_jsonable(config),
        "data": {
            "path": str(config.data),
            "format": plan.dataset.format,
            "description": describe(plan.dataset),
            "images_total": len(plan.dataset),
            "images_evaluated": len(plan.image_indices),
            "class_names": {str(k): v for k, v in class_names.items()},
            "crops": len({plan.queries[i].name for i in plan.reported}),
            "queries": {t: n for t, n in n_reported.items() if n},
        },
        "model": {
            "model_type": plan.model_type,
            "image_size": plan.image_size,
            "base_checkpoint": plan.base_checkpoint,
        },
        "protocol": {
            "seed": config.seed,
            "num_positive": config.num_positive,
            "num_negative": config.num_negative,
            "density_bins": list(DENSITY_BINS),
            "sensitivity_queries": config.sensitivity_queries,
            "robustness_repeats": config.robustness_repeats,
            "robustness_queries": config.robustness_queries,
            "instance_match_iou": 0.5,
            "percent": False,
        },
        "prompts_sha256": prompts_sha256,
        "methods": methods,
        "baselines": baselines,
        "paired": paired,
        "curves": curves,
        "seconds": time.perf_counter() - t_start,
    }


def _bundle_summary(info) -> dict:
    """The bundle facts a report shows, from a :class:`~sampo_engine.models.bundle.BundleInfo`."""
    return {
        "name": info.name,
        "kind": info.kind,
        "rank": info.rank,
        "task": info.task,
        "epochs_done": info.epochs_done,
        "complete": info.complete,
        "base_checkpoint": info.base_checkpoint,
        "config": info.config,
    }
