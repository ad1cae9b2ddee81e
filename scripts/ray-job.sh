#!/usr/bin/env bash
# The nightly run through `ray job submit`, from a fresh clone: set-up, a Ray head of its own on
# 127.0.0.1 (token auth, free ports, its own temp dir), the job in this project's environment,
# then exactly that head stopped. Any `python -m pipelines.index` option passes through:
#   bash scripts/ray-job.sh --source samples --index .snappy-index --ocr rapid
# Local --source/--index paths are made absolute (the job runs in a copy of this folder).
# On a cluster you already run, only the submit line is needed (README: On a Ray cluster).
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"         # the head, its workers and so the job's `python`: this environment
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # the head listens on 127.0.0.1 only
export RAY_AUTH_MODE=token                  # Ray 2.60's token auth: `ray start` writes the token, the client reads it
unset RAY_ADDRESS

args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --source|--index)
      v=$2
      case "$v" in s3://*|/*) ;; *) v="$here/$v" ;; esac
      args+=("$1" "$v"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

tmp=$(mktemp -d /tmp/snrj.XXXXXX)  # short: Ray's socket paths must stay under 108 characters
read -r gcs dash client node obj agent agent_grpc env_agent metrics wmin < <(python - <<'EOF'
import socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
setsid ray start --head --block --port="$gcs" --dashboard-host=127.0.0.1 --dashboard-port="$dash" \
  --ray-client-server-port="$client" --node-manager-port="$node" --object-manager-port="$obj" \
  --dashboard-agent-listen-port="$agent" --dashboard-agent-grpc-port="$agent_grpc" \
  --runtime-env-agent-port="$env_agent" --metrics-export-port="$metrics" \
  --min-worker-port="$wmin" --max-worker-port="$((wmin + 200))" \
  --temp-dir="$tmp" --disable-usage-stats >"$tmp/head.log" 2>&1 &
head_pid=$!

stop_head() {
  kill -TERM -- "-$head_pid" 2>/dev/null || true  # the head's process group
  for _ in $(seq 30); do kill -0 "$head_pid" 2>/dev/null || break; sleep 1; done
  # daemons that left the group still name this head's temp dir: stop those, by PID
  for d in /proc/[0-9]*; do
    if grep -qa -- "$tmp" "$d/cmdline" 2>/dev/null; then kill -KILL "${d#/proc/}" 2>/dev/null || true; fi
  done
  rm -rf "$tmp"
}
trap stop_head EXIT

url="http://127.0.0.1:$dash"
for i in $(seq 120); do
  code=$(python -c "import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + '/api/version', timeout=2); print(200)
except urllib.error.HTTPError as e:
    print(e.code)  # answering (401 before the token): up
except Exception:
    print(0)" "$url")
  [ "$code" != 0 ] && break
  kill -0 "$head_pid" 2>/dev/null || { cat "$tmp/head.log" >&2; echo "ray-job: the Ray head did not start" >&2; exit 1; }
  [ "$i" = 120 ] && { echo "ray-job: the Ray head did not answer in 120 s" >&2; exit 1; }
  sleep 1
done

echo "ray-job: head on $url; submitting python -m pipelines.index ${args[*]}" >&2
ray job submit --address "$url" --working-dir . -- python -m pipelines.index "${args[@]}"
