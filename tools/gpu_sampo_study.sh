#!/usr/bin/env bash
# The second SAMPO study (docs/sampo_study.md) on one GPU, sized for a 15-minute device window:
#
#   bash tools/gpu_sampo_study.sh [OUT]          # default OUT: runs/sampo_study_gpu
#
# Same runs as the CPU study (SAMPO, L_sup only, without L_inter, without L_intra; 100 % and
# 10 % of the class-labelled images; seeds 0 1 2; paired), with a larger model and batch: vit_b
# from its official checkpoint when it is cached (`sampo-engine weights list`), else the shipped
# nuclei-small; batch 16, STEPS steps (default 300), four trainings at once on the one GPU. Every
# output (adapters, evaluations, preference.json, timings.json, the page, nvidia-smi, the log)
# lands in OUT. Needs the held-out split of the real-data study in SPLIT_DIR (default runs/study;
# made by `python tools/real_data_study.py split --shared ../shared/data --out runs/study`).
#
# Environment: STEPS, BATCH, JOBS, MODEL (override the choice), SPLIT_DIR, PYTHON,
# DRY_RUN=1 (print the study's command line and stop).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-runs/sampo_study_gpu}"
PYTHON="${PYTHON:-python}"
STEPS="${STEPS:-300}"
BATCH="${BATCH:-16}"
JOBS="${JOBS:-4}"
SPLIT_DIR="${SPLIT_DIR:-runs/study}"
if [[ -z "${MODEL:-}" ]]; then
    MODEL=$("$PYTHON" -c "from sampo_engine.models.checkpoints import find_checkpoint as f; print('vit_b' if f('vit_b') else 'nuclei-small')")
fi
cmd=("$PYTHON" tools/sampo_study.py all --out "$OUT" --split-dir "$SPLIT_DIR" --device cuda
     --model "$MODEL" --steps "$STEPS" --batch-size "$BATCH" --jobs "$JOBS"
     --probe-crops 96 --robustness-queries 200 --docs "$OUT/docs")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "${cmd[@]}"
    exit 0
fi
mkdir -p "$OUT/docs"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
start=$(date +%s)
"${cmd[@]}" 2>&1 | tee "$OUT/study.log"
echo "wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/study.log"
