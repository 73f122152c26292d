"""The real-data study (docs/results.md): SAMPO vs a supervised-only twin on real H&E nuclei.

``study`` — its command line (``python tools/real_data_study.py``) and stages; ``plan`` — the
datasets, the held-out split and the variants; ``stages`` — the ``sampo-engine`` commands it runs
(pretrain, fine-tune, eval); ``results`` — reading the evaluations back; ``report`` and
``plots`` — docs/results.md and its figures.
"""
