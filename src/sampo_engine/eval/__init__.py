"""Evaluation with the paper's protocol (``sampo-engine eval``): several models scored on the
same seeded queries and prompts, aggregated into ``metrics.json``, ``report.md`` and plots.
The driver is :mod:`sampo_engine.eval.protocol`; the metrics themselves are
:mod:`sampo_engine.scoring`."""
