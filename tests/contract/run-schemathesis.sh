#!/usr/bin/env bash
# Checks docs/openapi.yaml against the real service: starts the `realtime-core` binary with
# auth on (client tokens, signed stream keys, the broadcast secret), a fresh SQLite database
# and the mock provider, then runs schemathesis over every operation of the contract. Fails on
# any 5xx, any response whose status, content type, headers or body the contract does not
# describe, and any operation the contract secures that answers without credentials.
#
#   tests/contract/run-schemathesis.sh            # CONTRACT_MAX_EXAMPLES (default 100) per operation
#
# Needs python3 with venv (scripts/install-debian-deps.sh --test) and PyPI; schemathesis is
# installed into target/contract-venv on first use. Binaries come from $CARGO_TARGET_DIR (or
# target/)/debug and are built when missing. With CI=true a missing tool is a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${CONTRACT_MAX_EXAMPLES:-100}"
SEED="${CONTRACT_SEED:-17}"
target_dir="${CARGO_TARGET_DIR:-target}"
bin_dir="$target_dir/debug"
venv="$target_dir/contract-venv"

fail() {
  echo "contract: $*" >&2
  exit 1
}

# Tools: python3 with venv. Never skipped in CI; outside CI a missing python3 is a skip.
if ! command -v python3 >/dev/null 2>&1; then
  [[ "${CI:-}" == "true" ]] && fail "python3 is missing: run scripts/install-debian-deps.sh --test"
  echo "*** SKIPPING contract test (not in CI): python3 is missing ***" >&2
  exit 0
fi
if [[ ! -x "$venv/bin/schemathesis" ]] ||
  [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
  echo "contract: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" ||
    fail "python3 cannot create a venv: run scripts/install-debian-deps.sh --test (python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" || fail "cannot install schemathesis $SCHEMATHESIS_VERSION"
fi
py="$venv/bin/python"

if [[ ! -x "$bin_dir/realtime-core" || ! -x "$bin_dir/mock-gladia" ]]; then
  cargo build -p realtime-core -p mock-gladia --bin realtime-core --bin mock-gladia --locked
fi

work=$(mktemp -d)
service_pid=""
mock_pid=""
cleanup() {
  local status=$?
  for pid in "$service_pid" "$mock_pid"; do
    if [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
    fi
  done
  if ((status != 0)) && [[ -f "$work/service.log" ]]; then
    echo "---- last lines of the service log ----" >&2
    tail -n 40 "$work/service.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

# Waits until file $1 has a line matching regex $2 (or process $3 died, or 60 s passed) and
# prints the first such line.
wait_for_line() {
  local file=$1 pattern=$2 pid=$3 deadline=$((SECONDS + 60)) line
  while ((SECONDS < deadline)); do
    line=$(grep -m1 -E "$pattern" "$file" 2>/dev/null || true)
    if [[ -n "$line" ]]; then
      echo "$line"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Secrets of this run only; never printed.
secret() { "$py" -c 'import secrets; print(secrets.token_urlsafe(32))'; }
auth_secret=$(secret)
stream_key_secret=$(secret)
broadcast_secret=$(secret)

# The mock provider on a free loopback port; it prints its base URL.
unset_mock=()
for variable in $(compgen -e | grep '^MOCK_GLADIA_' || true); do unset_mock+=(-u "$variable"); done
env "${unset_mock[@]}" MOCK_GLADIA_BIND=127.0.0.1:0 MOCK_GLADIA_API_KEY=contract-key RUST_LOG=warn \
  "$bin_dir/mock-gladia" >"$work/mock.log" 2>&1 &
mock_pid=$!
mock_line=$(wait_for_line "$work/mock.log" 'listening on http://127\.0\.0\.1:[0-9]+' "$mock_pid") ||
  fail "mock-gladia did not start: $(cat "$work/mock.log")"
mock_url=$(grep -oE 'http://127\.0\.0\.1:[0-9]+' <<<"$mock_line")

# The service: loopback only, ports picked by the kernel (PORT=0), a fresh SQLite database.
# Every setting the binary reads (its --help lists them) and the OTEL_* variables are cleared
# first, so the caller's own configuration cannot leak into the run.
unset_settings=()
for variable in $("$bin_dir/realtime-core" --help | grep -oE '\[env: [A-Z0-9_]+' | cut -d' ' -f2) \
  $(compgen -e | grep '^OTEL_' || true); do
  unset_settings+=(-u "$variable")
done
env "${unset_settings[@]}" \
  HTTP_HOST=127.0.0.1 PORT=0 RTMP_BIND=127.0.0.1 RTMP_INTERNAL_PORT=0 RTMP_HOST=127.0.0.1 \
  DATABASE_URL="sqlite://$work/realtime-core.db" TRANSCRIPT_SPILL_DIR="$work/spill" \
  GLADIA_API_URL="$mock_url" GLADIA_API_KEY=contract-key STT_PROVIDER=gladia \
  REALTIME_AUTH_SECRET="$auth_secret" RTMP_STREAM_KEY_SECRET="$stream_key_secret" \
  REALTIME_BROADCAST_SECRET="$broadcast_secret" \
  MAX_SESSIONS=100000 TRANSCRIPT_BATCH_DELAY_MS=200 RUST_LOG=info \
  "$bin_dir/realtime-core" >"$work/service.log" 2>&1 &
service_pid=$!
ready_line=$(wait_for_line "$work/service.log" 'realtime-core ready' "$service_pid") ||
  fail "realtime-core did not start"
http_addr=$(grep -oE 'http=127\.0\.0\.1:[0-9]+' <<<"$ready_line" | cut -d= -f2)
[[ -n "$http_addr" ]] || fail "no HTTP address in the ready line: $ready_line"
base_url="http://$http_addr"

# Ready means /readyz says so (the database answers), not just a log line.
"$py" - "$base_url/readyz" <<'EOF' || fail "/readyz never answered 200"
import sys, time, urllib.request
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF

# A service token: HS256 JWT with sub, exp and sessions "*", signed with the auth secret.
token=$(AUTH_SECRET="$auth_secret" "$py" - <<'EOF'
import base64, hashlib, hmac, json, os, time
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b64(json.dumps({"sub": "contract-test", "exp": int(time.time()) + 3600, "sessions": "*", "role": "service"}).encode())
signed = f"{header}.{claims}".encode()
signature = hmac.new(os.environ["AUTH_SECRET"].encode(), signed, hashlib.sha256).digest()
print(f"{header}.{claims}.{b64(signature)}")
EOF
)

echo "contract: schemathesis $SCHEMATHESIS_VERSION against $base_url, at most $MAX_EXAMPLES examples per operation (seed $SEED)" >&2
started=$SECONDS
status=0
# The secrets reach schemathesis as environment variables named in its configuration file,
# never on a command line. One worker: hypothesis calls ast.parse, which CPython 3.11 before
# 3.11.8 (Debian 12 has 3.11.2) can fail with "AST constructor recursion depth mismatch" when
# two threads parse at once.
export CONTRACT_TOKEN="$token" CONTRACT_BROADCAST_SECRET="$broadcast_secret"
"$venv/bin/schemathesis" --config-file tests/contract/schemathesis.toml run docs/openapi.yaml \
  --url "$base_url" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 10 \
  --generation-database none \
  --report har \
  --report-dir "$work/report" \
  --no-color 2>&1 | tee "$work/schemathesis.out" || status=$?
elapsed=$((SECONDS - started))

# What the service answered, per documented operation: a run whose every request is refused
# proves little. (schemathesis also probes undocumented methods; those are left out here.)
"$py" - "$work/report" docs/openapi.yaml <<'EOF' || true
import collections, glob, json, re, sys
import yaml
paths = yaml.safe_load(open(sys.argv[2]))["paths"]
templates = [(re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(p)) + "$"), p) for p in paths]
counts = collections.defaultdict(collections.Counter)
for path in glob.glob(sys.argv[1] + "/*.json"):
    for entry in json.load(open(path))["log"]["entries"]:
        method = entry["request"]["method"].lower()
        url = re.sub(r"^https?://[^/]+", "", entry["request"]["url"]).split("?")[0]
        for pattern, template in templates:
            if pattern.match(url) and method in paths[template]:
                counts[f"{method.upper()} {template}"][entry["response"]["status"]] += 1
                break
print("contract: responses per operation (status: count)", file=sys.stderr)
for operation in sorted(counts):
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(counts[operation].items()))
    print(f"  {operation:<48} {statuses}", file=sys.stderr)
EOF
# schemathesis prints "Test cases:" and, on the next line, "N generated, …".
cases=$(grep -A1 '^Test cases:' "$work/schemathesis.out" | grep -oE '[0-9]+ generated' | grep -oE '[0-9]+' || true)
echo "contract: ${cases:-no} test cases in ${elapsed}s, schemathesis exit $status" >&2
[[ -n "$cases" && "$cases" -gt 0 ]] || { echo "contract: no test case ran" >&2; status=1; }
((status != 0)) || echo "contract: $cases passed, 0 failed"
exit "$status"
