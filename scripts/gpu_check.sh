#!/usr/bin/env bash
# GPU check (issue 28.6): one prepared script for a machine with an NVIDIA GPU, under 8 minutes.
#
#   bash scripts/gpu_check.sh            # results in $OUT/gpu_check (or results/gpu_check)
#
# The machine may lack this project's lighter dependencies (jsonschema, fastapi, zarr ...) while
# its image has torch (CUDA), onnxruntime (CPU) and lightning. The script then makes a venv that
# sees the image's packages (--system-site-packages), installs this project into it without
# touching torch (a constraints file pins the image's torch), adds what is missing from pip (or
# from a wheel folder, WHEELS=DIR, where pip cannot reach an index), and tries the GPU extra
# (onnxruntime-gpu). Every step has its own time limit and its log; a step that fails or has
# nothing to run on (no CUDA provider for ONNX Runtime, no tritonclient) is reported, not fatal.
#
# Steps (seconds allowed):
#   env (20)       nvidia-smi, torch / ONNX Runtime versions and providers
#   install (150)  the venv, missing dependencies, onnxruntime-gpu
#   reproduce (90) both runners on CUDA reproduce every standard package's test tensors
#   bench (150)    scripts/bench_predict.py --device cuda at 4096^2 (default, onnx, torch) and 16384^2 (default)
#   serve (75)     scripts/bench_serve.py: zoo serve on the GPU, 1 and 8 clients, server batch 1 and 8
#   train (60)     a few training steps of N2V on the GPU (zoo train --device cuda)
#   triton (45)    zoo export triton, the config parsed by tritonclient's model_config protobuf
# summary.json and summary.md (the rows for docs/benchmarks/gpu.md) are written at the end.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=${OUT:-$REPO/results}/gpu_check
mkdir -p "$RESULTS"
SUMMARY=$RESULTS/steps.tsv
: > "$SUMMARY"
T0=$(date +%s)
cd "$REPO"

step() {   # step NAME SECONDS COMMAND...: run with a time limit, log to NAME.log, record rc and seconds
    local name=$1 limit=$2; shift 2
    local start=$(date +%s)
    echo "== $name (limit ${limit}s, $(( start - T0 ))s elapsed)"
    timeout --kill-after=5 "$limit" "$@" > "$RESULTS/$name.log" 2>&1
    local rc=$?
    local took=$(( $(date +%s) - start ))
    printf '%s\t%s\t%s\n' "$name" "$rc" "$took" >> "$SUMMARY"
    tail -n 25 "$RESULTS/$name.log"
    echo "-- $name: rc=$rc in ${took}s"
}

# ---------------------------------------------------------------- python with this project
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -c "import torch, zoo; assert torch.cuda.is_available()" 2>/dev/null; then
        PY=$REPO/.venv/bin/python
    else
        PY=$REPO/.gpuvenv/bin/python
    fi
fi

install() {
    if [ "$PY" = "$REPO/.gpuvenv/bin/python" ] && [ ! -x "$PY" ]; then
        python3 -m venv --system-site-packages "$REPO/.gpuvenv" || return 1
    fi
    local torch_version
    torch_version=$("$PY" -c "import torch; print(torch.__version__)") || { echo "no torch in the image"; return 1; }
    printf 'torch==%s\n' "$torch_version" > "$RESULTS/constraints.txt"
    local pipargs=(-q --disable-pip-version-check -c "$RESULTS/constraints.txt")
    [ -n "${WHEELS:-}" ] && pipargs+=(--find-links "$WHEELS")
    "$PY" -m pip install "${pipargs[@]}" --no-deps -e "$REPO" || return 1
    # what the image lacks, by import name -> requirement (pyproject's ranges)
    local missing=()
    while read -r module requirement; do
        "$PY" -c "import $module" 2>/dev/null || missing+=("$requirement")
    done <<'EOF'
jsonschema jsonschema>=4.21,<5
yaml pyyaml>=6,<7
huggingface_hub huggingface-hub>=0.24,<3
safetensors safetensors>=0.4,<1
tifffile tifffile>=2024.1.1
zarr zarr>=3,<4
scipy scipy>=1.11
skimage scikit-image>=0.22
PIL pillow>=10,<14
packaging packaging>=23
fastapi fastapi>=0.110
uvicorn uvicorn>=0.29
prometheus_client prometheus-client>=0.20
onnx onnx>=1.16,<2
onnxruntime onnxruntime>=1.18,<2
pytorch_lightning pytorch-lightning>=2.4,<3
EOF
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        "$PY" -m pip install "${pipargs[@]}" "${missing[@]}" || return 1
    fi
    # the GPU extra: ONNX Runtime with the CUDA provider (optional: torch on CUDA is checked without it)
    if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
        timeout 120 "$PY" -m pip install "${pipargs[@]}" "onnxruntime-gpu>=1.18,<2" \
            || echo "onnxruntime-gpu could not be installed: ONNX Runtime stays on the CPU"
    fi
    "$PY" -c "import zoo, jsonschema, fastapi, zarr; print('zoo imports')"
}

env_info() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -c "import torch; print('image torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" || true
    nproc; free -g | head -2
}

step env 20 env_info
step install 150 install
ZOO_HOME=$RESULTS/zoo_home
export ZOO_HOME ZOO_CALIBRATION=$RESULTS/calibration.json PYTHONUNBUFFERED=1
"$PY" -c "import onnxruntime as o; print('ONNX Runtime', o.__version__, o.get_available_providers())" | tee "$RESULTS/providers.txt"

# ---------------------------------------------------------------- both runners reproduce the test tensors on CUDA
step reproduce 90 "$PY" - <<'EOF'
import json, os, time
from pathlib import Path
import onnxruntime as ort
import zoo
from zoo.errors import ZooError
standard = Path(zoo.__file__).parent / "standard" / "packages"
runtimes = ["torch"] + (["onnx"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
rows = []
for folder in sorted(standard.iterdir()):
    root = max(folder.iterdir(), key=lambda p: tuple(int(v) for v in p.name.split(".")))
    for runtime in runtimes:
        start = time.perf_counter()
        try:
            model = zoo.load(root, runtime=runtime, device="cuda")
            where = getattr(model.runner, "provider", None) or str(model.runner.device)
            worst = model.test()      # the largest error over the tolerance (raises beyond it)
            rows.append({"package": root.parent.name + "@" + root.name, "runtime": runtime, "on": where, "ok": True,
                         "worst_error_over_tolerance": worst, "seconds": round(time.perf_counter() - start, 2)})
        except (ZooError, RuntimeError, ValueError) as e:
            rows.append({"package": root.parent.name + "@" + root.name, "runtime": runtime, "ok": False,
                         "error": str(e).splitlines()[0][:300]})
        print(json.dumps(rows[-1]), flush=True)
Path(os.environ["ZOO_HOME"]).parent.joinpath("reproduce.json").write_text(json.dumps(rows, indent=1))
print(f"{sum(r['ok'] for r in rows)} of {len(rows)} reproduce on CUDA ({', '.join(runtimes)})")
if "onnx" not in runtimes:
    print("ONNX Runtime has no CUDA provider here: only torch was checked on CUDA")
EOF

# ---------------------------------------------------------------- prediction speed on the GPU
bench() {
    "$PY" scripts/bench_predict.py --device cuda --size 4096 --no-peer --modes ours-default ours-onnx ours-torch \
        --json "$RESULTS/bench_4096.json" || return 1
    "$PY" scripts/bench_predict.py --device cuda --size 16384 --no-peer --modes ours-default \
        --json "$RESULTS/bench_16384.json"
}
step bench 150 bench

# ---------------------------------------------------------------- zoo serve on the GPU under load
step serve 75 "$PY" scripts/bench_serve.py --model n2v-w2s-2d --size 256 --clients 1 8 --max-batch 1 8 --seconds 5

# ---------------------------------------------------------------- training on the GPU
train() {
    local data=$RESULTS/train_data
    mkdir -p "$data"
    cp samples/hagen_actin_lowsnr.tif "$data/a.tif"
    "$PY" -c "import tifffile; a = tifffile.imread('$data/a.tif'); tifffile.imwrite('$data/b.tif', a[::-1].copy())"
    "$PY" -m zoo train n2v --data "$data" --out "$RESULTS/n2v-gpu" --max-steps 20 --patch 64 --batch-size 16 \
        --device cuda --overwrite
}
step train 60 train

# ---------------------------------------------------------------- Triton's model repository
triton() {
    "$PY" -m zoo export triton n2v-w2s "$RESULTS/triton" --instance-kind gpu || return 1
    timeout 40 "$PY" -m pip install -q --disable-pip-version-check "tritonclient[grpc]" \
        || { echo "tritonclient could not be installed: the config is not checked by its parser"; return 3; }
    "$PY" - "$RESULTS/triton" <<'EOF'
import sys
from pathlib import Path
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
for config in Path(sys.argv[1]).glob("*/config.pbtxt"):
    parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    assert parsed.name and parsed.input and parsed.output, "config without name, inputs or outputs"
    print(f"{config}: parsed by tritonclient: {parsed.name}, platform {parsed.platform or parsed.backend}, "
          f"max_batch_size {parsed.max_batch_size}, {len(parsed.input)} input(s), {len(parsed.output)} output(s), "
          f"instance {[model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in parsed.instance_group]}")
EOF
}
step triton 45 triton

# ---------------------------------------------------------------- summary
"$PY" - "$RESULTS" <<'EOF'
import json, sys
from pathlib import Path
results = Path(sys.argv[1])
steps = [dict(zip(("step", "rc", "seconds"), line.split("\t"))) for line in (results / "steps.tsv").read_text().splitlines()]
summary = {"steps": steps}
lines = ["| step | rc | seconds |", "|---|---|---|"] + [f"| {s['step']} | {s['rc']} | {s['seconds']} |" for s in steps]
for size in (4096, 16384):
    path = results / f"bench_{size}.json"
    if path.exists():
        bench = json.loads(path.read_text())
        summary[f"bench_{size}"] = {k: v for k, v in bench.items() if k.startswith("ours")}
        lines += ["", f"{size}^2 on the GPU:", "| contender | runtime | Mpx/s | peak RSS MB | tiles x batch |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v.get('runtime')} | {v['mpx_per_s']:.1f} | {v['peak_rss_mb']:.0f} | {v['tiles']} x {v['batch']} |"
                  for k, v in bench.items() if k.startswith("ours")]
if (results / "reproduce.json").exists():
    rows = json.loads((results / "reproduce.json").read_text())
    summary["reproduce"] = rows
    lines += ["", f"reproduce on CUDA: {sum(r['ok'] for r in rows)} of {len(rows)} (package x runtime)"]
(results / "summary.json").write_text(json.dumps(summary, indent=1))
(results / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "gpu_check done in $(( $(date +%s) - T0 ))s; results in $RESULTS"
