#!/usr/bin/env bash
# The task suite and its interventions, resumably (each call skips what is finished): every head on
# the built-in tasks (experiments/ablations/tasks.yaml, 5 seeds where 3 disagree), then the
# interventions that test the causes of its failed predictions (docs/results.md). Two runs at a
# time, one thread each; run it with nothing else on the machine (its costs and wall times are
# measured). Extra arguments go to every `lit-seg ablate` (e.g. --launcher slurm --partition gpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for ablation in tasks ccnet_on_recurrence ccnet_on_recurrence_long nonlocal_on_binding nonlocal_fusion_on_binding oc_base_draws_on_binding ema_on_reach ema_on_reach_long recurrence_long; do
    scripts/run lit-seg ablate "experiments/ablations/${ablation}.yaml" --jobs 2 "$@"
done
