#!/usr/bin/env bash
# Builds and runs realtime-core on this machine: SQLite in ./data, loopback listeners.
# Every setting is an environment variable (see `--help` and docs/PROTOCOL.md#configuration); extra arguments are
# passed to the service, e.g. scripts/run-service.sh --port 9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-debian-deps.sh
mkdir -p data
# Without a Gladia key and without a model of its own, the service transcribes offline with the
# default Whisper model: install it into data/ (once; pinned by hash).
if [[ -z "${GLADIA_API_KEY:-}" && -z "${WHISPER_MODEL_DIR:-}" && "${STT_PROVIDER:-}" != "gladia" ]]; then
  scripts/install-whisper-model.sh
fi
exec cargo run --release --locked --bin realtime-core -- "$@"
