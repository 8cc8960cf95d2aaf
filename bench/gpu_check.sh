#!/usr/bin/env bash
# The GPU check of issue 16, on a machine with an NVIDIA GPU (CI has none; tests/test_gpu.py skips there).
#
#   bash bench/gpu_check.sh                  # ~6 minutes: install, nvidia-smi, tests, a short optimize, figures
#   WHEELS=/path/to/wheels bash bench/gpu_check.sh   # offline: install from a folder of wheels (--no-index)
#   SKIP_INSTALL=1 bash bench/gpu_check.sh   # the gpu extra is already installed
#
# 1. installs the gpu extra: onnxruntime-gpu replaces onnxruntime (the same module), plus nvidia-ml-py;
# 2. prints nvidia-smi and the providers ONNX Runtime offers;
# 3. runs tests/test_gpu.py (nothing may skip for want of CUDA or NVML here) and the shared backend suite on
#    the CUDA provider with IOBinding;
# 4. runs one short `tuner optimize workloads/resnet50-gpu.yaml` (study.timeout_s 240 s) into a fresh storage;
# 5. prints best, knee, their qps, gpu_mem_peak_mb and gpu_util from `tuner report --json`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [ -z "${SKIP_INSTALL:-}" ]; then
  echo "== install the gpu extra (onnxruntime-gpu replaces onnxruntime)"
  "$PY" -m pip uninstall -y -q onnxruntime || true
  if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e '.[gpu,test]'
  else
    "$PY" -m pip install -q -e '.[gpu,test]'
  fi
fi

echo "== nvidia-smi"
nvidia-smi || echo "nvidia-smi: not found or failed"
"$PY" -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_device(), ort.get_available_providers())"
"$PY" -c "import json; from tuner.platform import fingerprint; print('fingerprint gpu:', json.dumps(fingerprint()['gpu']))"

echo "== tests/test_gpu.py (a skip for want of CUDA or NVML is a failure here)"
"$PY" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py | tee /tmp/gpu_check_pytest.txt
if grep -E "SKIPPED .*(no CUDA provider|no NVML driver)" /tmp/gpu_check_pytest.txt; then
  echo "FAIL: the GPU tests skipped on a GPU machine"; exit 1
fi

echo "== the shared backend suite on CUDA with IOBinding"
TUNER_BACKEND_CONTRACT=onnxruntime:zoo:tiny TUNER_BACKEND_CONTRACT_OPTIONS='{"provider": "CUDA", "io_binding": true}' \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_backend_contract.py

echo "== tuner optimize workloads/resnet50-gpu.yaml (short budget)"
DB=$(mktemp -d)/resnet50-gpu.db
tuner optimize workloads/resnet50-gpu.yaml --storage "$DB" --new --no-confirm --timeout 240

echo "== figures (tuner report --json)"
tuner report "$DB" --json > /tmp/gpu_check_report.json
"$PY" - /tmp/gpu_check_report.json <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
doc = doc[0] if isinstance(doc, list) else doc
print("study:", doc.get("study"), "| trials:", doc.get("trials"), "| gpu:", (doc.get("platform") or {}).get("gpu"))
for pick in ("best", "knee"):
    t = doc.get(pick) or {}
    m = t.get("metrics") or {}
    print(f"{pick}: #{t.get('number')} {t.get('params')} qps={m.get('qps')} p99={m.get('latency_p99_ms')} ms "
          f"gpu_mem_peak_mb={m.get('gpu_mem_peak_mb')} gpu_util={m.get('gpu_util')}"
          + (f" confirmed={t.get('confirmed')}" if pick == "knee" else ""))
EOF
