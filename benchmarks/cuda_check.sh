#!/usr/bin/env bash
# The CUDA checks, run on a machine with an NVIDIA GPU (python3 there holds a CUDA torch):
#   bash benchmarks/cuda_check.sh [OUT_DIR] [PEARL_SECONDS]
# 1. tests/test_cuda.py: each agent trains on the toy tasks with its learner on the GPU and
#    resumes there;
# 2. benchmarks/pearl_update.py: seconds per PEARL gradient step, CPU and CUDA, same process;
# 3. benchmarks/iteration.py on cuda and on cpu (same machine, 8 sampler workers);
# 4. if PEARL_SECONDS > 0: configs/ml1_reach_pearl.yaml with the learner on the GPU for that
#    long (then SIGTERM: final evaluation on the 50 held-out goals), to compare its curve with
#    the CPU run's per env step.
# Files land in OUT_DIR (default $OUT, else /tmp/cuda_check). Each step has its own time limit
# so one failure leaves the others' results.
set -u
O=${1:-${OUT:-/tmp/cuda_check}}
PEARL_SECONDS=${2:-0}
mkdir -p "$O"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
t0=$(date +%s)
stamp() { echo "== $(( $(date +%s) - t0 )) s: $*"; }
nvidia-smi -L
python3 -c "import torch, numpy, scipy, metaworld, mujoco, gymnasium; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'scipy', scipy.__version__)"
stamp test_cuda
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$O/test_cuda.log" | tail -5
stamp pearl_update
timeout 150 python3 benchmarks/pearl_update.py --steps 100 --out "$O/pearl_update_cuda.json"
stamp iteration cuda
timeout 150 python3 benchmarks/iteration.py --device cuda --set env.n_workers=8 --out "$O/iteration_cuda.json" | tail -3
stamp iteration cpu
timeout 150 python3 benchmarks/iteration.py --device cpu --set env.n_workers=8 --out "$O/iteration_cpu_same_machine.json" | tail -3
if [ "$PEARL_SECONDS" -gt 0 ]; then
  stamp "pearl ml1 reach on cuda for $PEARL_SECONDS s"
  timeout -s TERM -k 90 "$PEARL_SECONDS" python3 -m metarl.app.cli bench run configs/ml1_reach_pearl.yaml --seeds 1 \
    --device cuda --set env.n_workers=12 --set run.torch_threads=4 --runs /tmp/cuda_check_runs \
    --results /tmp/cuda_check_results --name ml1_reach_pearl_cuda 2>&1 | grep -v "^\s*$" | tail -15
  for f in json progress.csv eval.csv; do cp /tmp/cuda_check_results/ml1_reach_pearl_cuda.$f "$O/" 2>/dev/null; done
fi
stamp done
