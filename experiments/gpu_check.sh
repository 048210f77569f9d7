#!/usr/bin/env bash
# The GPU checks of issue 12 as one script (one call of a lent GPU machine; see the README's "Speed" section).
#
#   bash experiments/gpu_check.sh [a|b|c|d|all]   # on a CUDA machine, from the repository root
#
# Part a: the Dis-II runs and the device-aware tests; part b: the benchmarks (each part fits a 10-minute call);
# part c: a short re-check of the defaults; part d: the Dis-II AUC of compiled vs eager steps alone.
# Expects: python3 with torch (CUDA) and torch-geometric; geoopt (and the flow benchmark's peers, optional) as wheels
# in .whl/ when they are not installed; the Dis-II files in $RF_DATA_ROOT (default .devdata/, the layout of
# shared/data). Writes logs and results to $LOGS (default /tmp/gpu_check), a summary, the benchmark results and a
# tarball of the logs to $OUT (default: $LOGS), and prints the summary last.
# Every step has its own time limit and the script goes on after a failed step, so one call yields every figure.
set -u
export PYTHONUNBUFFERED=1
export RF_DATA_ROOT="${RF_DATA_ROOT:-$PWD/.devdata}"
PART="${1:-all}"
LOGS="${LOGS:-/tmp/gpu_check}"
OUT="${OUT:-$LOGS}"
mkdir -p "$OUT" "$LOGS"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}"
SUMMARY="$LOGS/summary-$PART.txt"
: >"$SUMMARY"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $LOGS/NAME.log, record status and time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$SUMMARY"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$SUMMARY"
python3 -c "import torch, torch_geometric; print('torch', torch.__version__, 'pyg', torch_geometric.__version__)" \
    | tee -a "$SUMMARY"

run_dis2() {  # run_dis2 NAME SECONDS ARGS...
    local name=$1
    shift
    local limit=$1
    shift
    step "dis2-$name" "$limit" python3 -m experiments graph-recon --dataset dis-ii --flow whc --device cuda \
        --no-progress --out "$LOGS/runs/$name" --csv "$LOGS/runs/results.csv" "$@"
    grep -h "seed\|auc =" "$LOGS/dis2-$name.log" | tee -a "$SUMMARY"
}

if [ "$PART" = a ] || [ "$PART" = all ]; then
# 1. the device-aware tests on the GPU (CUDA-graph step = eager step; models and DDP with --device cuda)
step pytest 100 python3 -m pytest -q -p no:cacheprovider --device cuda -k \
    "cuda_graph or test_identity_features_and_device or test_every_paper_model_runs_and_moves or ddp" \
    tests/test_compiled_step.py tests/vae/test_graph_vae.py tests/vae/test_vae_model.py tests/experiments/test_cli.py

# 2. Dis-II WHC, 3000 epochs, 5 seeds: compiled + CUDA graph (the issue's run); eager numerics in a CUDA graph
#    (the reference for the AUC); one plain eager seed (the old way, for the wall time)
run_dis2 compiled 170 --seeds 5 --compile
run_dis2 graph-eager 90 --seeds 5 --cuda-graph on
run_dis2 eager 60 --seeds 1 --cuda-graph off
fi

if [ "$PART" = b ] || [ "$PART" = all ]; then
# 3. the graph benchmark (eager, then compiled + CUDA graph on Dis-II and the 1M-node graph)
step bench-graph 200 python3 -m experiments.bench graph --device cuda --epochs 20 --warmup 5 \
    --json "$OUT/bench_graph.json"
step bench-graph-compiled 150 python3 -m experiments.bench graph --device cuda --graphs dis-ii,1m --flows whc \
    --compile --epochs 20 --warmup 5 --json "$OUT/bench_graph_compiled.json"

# 4. the flows benchmark on the GPU (peers that are not installed are reported as such)
step bench-flows 100 python3 -m experiments.bench flows --device cuda --out "$OUT/bench_flows.md"
# ... and with every model's loss compiled (ours and the peers'), as --compile trains
step bench-flows-compiled 200 python3 -m experiments.bench flows --device cuda --compile \
    --out "$OUT/bench_flows_compiled.md"
fi

if [ "$PART" = d ]; then
# the metric check alone: Dis-II WHC, 5 seeds, compiled vs eager kernels (both in a CUDA graph)
run_dis2 compiled 110 --seeds 5 --compile
run_dis2 graph-eager 80 --seeds 5
fi

if [ "$PART" = c ]; then
# a short re-check: the CUDA-graph tests and DDP on one GPU; the default (eager kernels in a CUDA graph) on Dis-II
# and 1M nodes, with where any CUDA sync happens
step pytest 120 python3 -m pytest -q -p no:cacheprovider --device cuda -k "cuda_graph or captured or ddp" \
    tests/test_compiled_step.py tests/experiments/test_cli.py
run_dis2 default 60 --seeds 1
step bench-graph 200 python3 -m experiments.bench graph --device cuda --graphs dis-ii,1m --flows none,whc \
    --epochs 20 --warmup 5 --json "$OUT/bench_graph_default.json"
grep -h "CUDA sync in" "$LOGS/bench-graph.log" | tee -a "$SUMMARY"
fi

echo
echo "######## tables"
for f in bench-graph bench-graph-compiled bench-flows bench-flows-compiled; do
    [ -f "$LOGS/$f.log" ] || continue
    echo "---- $f"
    grep -E "^\|" "$LOGS/$f.log" | tail -n 20
done
[ -f "$LOGS/pytest.log" ] && tail -n 3 "$LOGS/pytest.log"
cp "$SUMMARY" "$OUT/" 2>/dev/null
tar czf "$OUT/logs-$PART.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")" 2>/dev/null
echo "######## summary"
cat "$SUMMARY"
