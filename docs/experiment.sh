#!/usr/bin/env bash
# The runs behind docs/results.md: the class count (30 epochs) and the density at an equal
# budget of optimizer steps, on the synthetic faces at 32x32, seeds in blocks of two so that
# an interrupted plan leaves every grid point with the same number of seeds.
#
#   STORE=results-store SEEDS="0 1 2 3 4 5 6 7" docs/experiment.sh   # the full plan (default)
#
# QUESTIONS (default "classes density"), IDENTITIES (2,3,5,8,10), DENSITIES
# (25,50,100,200,400) and STEPS (1500) narrow the plan. Then
# `uv run python docs/results.py --store results-store` writes docs/results.md.
set -euo pipefail
STORE=$(realpath -m "${STORE:-results-store}")
SEEDS=(${SEEDS:-0 1 2 3 4 5 6 7})
QUESTIONS=${QUESTIONS:-classes density}
IDENTITIES=${IDENTITIES:-2,3,5,8,10}
DENSITIES=${DENSITIES:-25,50,100,200,400}
STEPS=${STEPS:-1500}
PYTHON=${PYTHON:-python}
mkdir -p "$STORE"
export MLFLOW_TRACKING_URI="sqlite:///$STORE/mlflow.db"
REC="snapshot-every=0 snapshot-images=false checkpoint-every=1000 state-every=1000"
$PYTHON - "$STORE" <<'PY'
import sys, mlflow
for name in ("classes", "density"):
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=f"{sys.argv[1]}/artifacts/{name}")
PY
for ((i = 0; i < ${#SEEDS[@]}; i += 2)); do
    block=$(IFS=,; echo "${SEEDS[*]:i:2}")
    for question in $QUESTIONS; do
        start=$(date +%s)
        if [[ $question == classes ]]; then
            $PYTHON -m dsc sweep --experiment classes --seeds "$block" --grid "identities=$IDENTITIES" \
                --image-size 32 --set "epochs=30 $REC" --parallel 2 --no-progress
        else
            $PYTHON -m dsc sweep --experiment density --seeds "$block" \
                --grid "exemplars-per-class=$DENSITIES" --image-size 32 --set "steps=$STEPS $REC" \
                --parallel 2 --no-progress
        fi
        echo "$question, seeds $block: $(( $(date +%s) - start )) s" | tee -a "$STORE/wall_times.txt"
    done
done
