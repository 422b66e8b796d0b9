#!/usr/bin/env bash
# Stop the LocalStack that start.sh started (by its pid file). Idempotent: no pid
# file, or a pid that is gone, is success. Moto keeps nothing on disk, so stopping
# also forgets every resource.
set -euo pipefail

home_dir="${IMMUNE_LOCALSTACK_HOME:-$HOME/.cache/immune-localstack}"
pid_file="$home_dir/localstack.pid"

say() { printf 'localstack: %s\n' "$*" >&2; }

if [[ ! -f "$pid_file" ]]; then
    say "not running (no $pid_file)"
    exit 0
fi
pid="$(cat "$pid_file")"

# A pid file can outlive its process and the pid be reused by something else:
# only signal a process that is LocalStack's runtime.
if ! grep -qa 'localstack.runtime.main' "/proc/$pid/cmdline" 2>/dev/null; then
    say "not running (stale pid $pid)"
    rm -f "$pid_file"
    exit 0
fi

# start.sh runs it under setsid, so it leads its own process group; signalling the
# group also reaches anything it spawned.
target="$pid"
if [[ "$(ps -o pgid= -p "$pid" | tr -d ' ')" == "$pid" ]]; then
    target="-$pid"
fi

say "stopping pid $pid"
kill -TERM -- "$target" 2>/dev/null || true
for _ in $(seq 1 40); do # LocalStack shuts down in a second or two
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
done
if kill -0 "$pid" 2>/dev/null; then
    say "still running after 10s; killing"
    kill -KILL -- "$target" 2>/dev/null || true
fi
rm -f "$pid_file"
say "stopped"
