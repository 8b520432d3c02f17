#!/usr/bin/env bash
# Runs every test: installs what the tests need, starts PostgreSQL and Redis on loopback when
# none answers, then runs rustfmt, clippy, the workspace's tests, the HTTP contract test
# (schemathesis) and the fuzz targets. With CI=true a test whose tool or server is missing
# fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-debian-deps.sh --test
# The offline provider's tests (tests/e2e_whisper.rs, whisper/tests) need the default model.
scripts/install-whisper-model.sh

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

# PostgreSQL on 127.0.0.1:5432, unless one already answers there.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z "$version" ]]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    "${sudo_cmd[@]}" pg_createcluster "$version" main >/dev/null
  fi
  "${sudo_cmd[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  # A cluster we started ourselves gets a known password for the test role.
  "${sudo_cmd[@]}" -u postgres psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 ||
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
fi
export DATABASE_URL_PG_ADMIN="${DATABASE_URL_PG_ADMIN:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"

# Redis on 127.0.0.1:6379, unless one already answers there (cluster-mode tests use it).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/realtime-core-test-redis.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
export REDIS_URL_TEST="${REDIS_URL_TEST:-redis://127.0.0.1:6379}"

cargo fmt --all -- --check
# No module of any crate imports another that imports it back (docs/ARCHITECTURE.md).
python3 scripts/check-module-deps.py
cargo clippy --workspace --all-targets --locked -- -D warnings
# Licences, sources and bans of every dependency (deny.toml); advisories where the RustSec
# database can be fetched.
scripts/deny.sh
cargo test --workspace --locked -- --test-threads=2

# A short load run against the debug build (the full benchmarks use a release build, see
# docs/PERFORMANCE.md): 50 live sessions x 2 clients for 20 s must deliver every final, and the
# service's threads stay bounded by the cores, not the sessions (decoding runs in the session
# threads: one per core for sessions, one per core for HTTP, plus a few fixed ones; 7 in all on
# 2 cores whether 1 or 1,000 sessions are live).
cargo build -p loadgen -p realtime-core --bin loadgen --bin realtime-core --locked
# deploy/ without a container engine: YAML, every variable the manifests set against --help,
# HAProxy's config (and a real HAProxy run), the shutdown grace (docs/DEPLOY.md).
scripts/check-deploy.sh "${CARGO_TARGET_DIR:-target}/debug/realtime-core"
"${CARGO_TARGET_DIR:-target}/debug/loadgen" --sessions 50 --clients 2 --seconds 20 \
  --service-bin "${CARGO_TARGET_DIR:-target}/debug/realtime-core" \
  --max-missing-finals 0 --max-threads "$(( 3 * $(nproc) + 10 ))" >/dev/null

# The HTTP contract: docs/openapi.yaml checked against the real binary (built by the tests
# above) with schemathesis; installs it into target/contract-venv on first use.
tests/contract/run-schemathesis.sh

# Hostile input: each cargo-fuzz target runs for a bounded time from its seed corpus and must
# not crash (issue #4). Builds in fuzz/target; a cold build takes ~12 minutes on 2 cores.
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
