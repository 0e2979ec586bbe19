#!/usr/bin/env bash
# Serve the Pusher's directory with TF Serving 2.16 (the TensorFlow the model was built with).
#   serving/deploy/docker-run.sh            after `make run` and
#   python -m serving.rollout --config-base-path /models/taxi-big-tipper stable
# REST on :8501, gRPC on :8500. TF Serving re-reads models.config every 30 s, so
# `serving.rollout canary|promote|rollback` take effect without a restart.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MODEL="${MODEL:-taxi-big-tipper}"
SERVING_DIR="${SERVING_DIR:-$ROOT/outputs/serving/$MODEL}"      # versions: 1700000000/, ...
CONFIG_DIR="${CONFIG_DIR:-$ROOT/outputs/tf_serving/$MODEL}"     # models.config
exec docker run --rm --name "tf-serving-$MODEL" \
  -p 8500:8500 -p 8501:8501 \
  -v "$SERVING_DIR:/models/$MODEL:ro" \
  -v "$CONFIG_DIR:/config:ro" \
  -v "$ROOT/serving/deploy/batching_parameters.txt:/config-batching/batching_parameters.txt:ro" \
  tensorflow/serving:2.16.1 \
  --port=8500 --rest_api_port=8501 \
  --model_config_file=/config/models.config \
  --model_config_file_poll_wait_seconds=30 \
  --enable_batching=true \
  --batching_parameters_file=/config-batching/batching_parameters.txt \
  --enable_model_warmup=true \
  --file_system_poll_wait_seconds=5
