#!/usr/bin/env bash
# Schema fuzzing of the REST API: builds api-test-server (the API over a permissive fake
# control), forwards a loopback TCP port to its Unix socket, and runs schemathesis against
# docs/api/cloud-hypervisor-swift.yaml. Fails on any 5xx other than an unsupported endpoint's
# deliberate 500, on undocumented statuses or content types, on responses that break their
# schema, on schema-invalid bodies that are accepted, on schema-valid bodies that are refused
# without a reason the document allows (hooks.py's positive_data_acceptance_or_explained: an
# absent feature, the fake's state, an unsupported action, or a rule the schema cannot state),
# and if the server dies. Prints a summary of the schema-valid bodies that were refused and why.
# API_FUZZ_STRICT=1 also fails on schema-valid bodies refused by validation.
#
# Bounded: API_FUZZ_EXAMPLES examples per operation (default 30), API_FUZZ_SECONDS in all
# (default 80). Needs python3 with pip (installs schemathesis if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && case ":$PATH:" in *":/opt/swift/usr/bin:"*) ;; *) PATH="$PATH:/opt/swift/usr/bin" ;; esac
scratch=${API_FUZZ_SCRATCH:-.build-api}
examples=${API_FUZZ_EXAMPLES:-30}
seconds=${API_FUZZ_SECONDS:-80}
port=${API_FUZZ_PORT:-18765}

# The version hooks.py is written against (it imports two of its internals).
command -v schemathesis >/dev/null || python3 -m pip install --quiet 'schemathesis==4.32.5'
swift build --scratch-path "$scratch" --product api-test-server 2>&1 | tail -n 3
server_bin="$scratch/debug/api-test-server"

work=$(mktemp -d)
socket="$work/api.sock"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work" .schemathesis
}
trap cleanup EXIT

"$server_bin" "$socket" --permissive >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
python3 Scripts/api-fuzz/unix_forwarder.py "$port" "$socket" &
pids+=($!)
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "api-fuzz: the server did not start"; cat "$work/server.log"; exit 1; }
sleep 0.3

status=0
API_FUZZ_REFUSALS="$work/refusals.jsonl" PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=Scripts/api-fuzz SCHEMATHESIS_HOOKS=hooks timeout $((seconds + 30)) schemathesis run \
  docs/api/cloud-hypervisor-swift.yaml \
  --url "http://127.0.0.1:$port/api/v1" \
  --checks no_server_error_but_unsupported,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection_or_defaulted,positive_data_acceptance_or_explained \
  --max-examples "$examples" --max-time "$seconds" --workers 2 \
  --phases examples,coverage,fuzzing \
  --suppress-health-check all \
  --no-color || status=$?

python3 Scripts/api-fuzz/refusals.py "$work/refusals.jsonl" || true

if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "api-fuzz: the server died"; cat "$work/server.log"; exit 1
fi
exit "$status"
