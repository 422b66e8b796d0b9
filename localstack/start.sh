#!/usr/bin/env bash
# Start LocalStack on this host, without Docker, for immune's integration tests.
#
# Idempotent: the virtualenv, the LocalStack install and the provider plugin are
# cached under $IMMUNE_LOCALSTACK_HOME and only (re)installed when they are missing
# or changed; if LocalStack already answers on the port, nothing is started.
#
# Env:
#   IMMUNE_LOCALSTACK_HOME    cache dir (default ~/.cache/immune-localstack)
#   IMMUNE_LOCALSTACK_PYTHON  interpreter to build the venv with (default: searched)
#   IMMUNE_LOCALSTACK_PORT    gateway port on 127.0.0.1 (default 4566)
#   IMMUNE_LOCALSTACK_TIMEOUT seconds to wait for health (default 90)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home_dir="${IMMUNE_LOCALSTACK_HOME:-$HOME/.cache/immune-localstack}"
venv="$home_dir/venv"
port="${IMMUNE_LOCALSTACK_PORT:-4566}"
timeout="${IMMUNE_LOCALSTACK_TIMEOUT:-90}"
health_url="http://127.0.0.1:$port/_localstack/health"
log_file="$home_dir/localstack.log"
pid_file="$home_dir/localstack.pid"

# Pinned together: newer dependency releases (cbor2 6, pyOpenSSL >= 24.3, ...) break
# this LocalStack, so resolution is cut at a date known to work.
localstack_spec='localstack-core[runtime]==2026.3.0'
exclude_newer='2026-03-25'

# Services the tests use. autoscaling and elbv2 come from our plugin (plugin/).
services='ec2,autoscaling,elbv2,cloudwatch,s3,sts,iam,sns,sqs'

say() { printf 'localstack: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

mkdir -p "$home_dir"

# Two test runners calling this at once must not both build the venv or both start
# a server on the same port; the second waits here and then finds the first's work.
exec 9>"$home_dir/start.lock"
flock 9

# --- Python >= 3.12 -----------------------------------------------------------
# LocalStack 2026.x uses PEP 695 syntax. pyenv shims (python3.13 on PATH) only run
# when that version is selected, so every candidate is tried, not just looked up.
is_new_enough() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    local candidates=() root=""
    if [[ -n "${IMMUNE_LOCALSTACK_PYTHON:-}" ]]; then
        candidates+=("$IMMUNE_LOCALSTACK_PYTHON")
    fi
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
    elif [[ -d "$HOME/.pyenv" ]]; then
        root="$HOME/.pyenv"
    fi
    if [[ -n "$root" ]]; then
        # Newest patch release first within each minor version.
        local minor
        for minor in 3.13 3.12; do
            while IFS= read -r p; do
                candidates+=("$p")
            done < <(printf '%s\n' "$root"/versions/"$minor".*/bin/python3 | sort -rV)
        done
    fi
    candidates+=(python3.13 python3.12 python3)
    local c
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 && is_new_enough "$c"; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

# --- virtualenv + LocalStack ----------------------------------------------------
# A venv whose base interpreter vanished (pyenv version removed) is rebuilt.
if ! { [[ -x "$venv/bin/python" ]] && is_new_enough "$venv/bin/python"; }; then
    python="$(find_python)" || die "no Python >= 3.12 found (tried pyenv 3.13/3.12, python3.13, python3.12, python3); set IMMUNE_LOCALSTACK_PYTHON"
    say "creating virtualenv $venv with $python ($("$python" -c 'import platform; print(platform.python_version())'))"
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"

if [[ ! -x "$venv/bin/uv" ]]; then
    say "installing uv into the venv"
    "$py" -m pip install --quiet --no-cache-dir uv
fi
uv() { "$venv/bin/uv" "$@"; }
# uv's download cache lives with the venv, so one directory holds all there is to
# cache in CI or to delete for a clean slate.
export UV_CACHE_DIR="${UV_CACHE_DIR:-$home_dir/uv-cache}"

# The marker names exactly what was installed; any change to the pins reinstalls.
install_id="$localstack_spec exclude-newer=$exclude_newer python=$("$py" -c 'import platform; print(platform.python_version())')"
marker="$venv/.immune-localstack-installed"
if [[ "$(cat "$marker" 2>/dev/null || true)" != "$install_id" ]]; then
    say "installing $localstack_spec (about a minute on a fresh machine)"
    uv pip install --python "$py" --exclude-newer "$exclude_newer" "$localstack_spec"
    printf '%s\n' "$install_id" >"$marker"
    rm -f "$venv/.immune-plugin-hash" # new site-packages: plugin must go in again
fi

# The plugin is reinstalled only when its files change (hash of their contents).
# The conformance tests (plugin/tests) are not part of it.
plugin_hash="$(cd "$here/plugin" && find . -type f \( -name '*.py' -o -name '*.toml' \) \
    -not -path '*/build/*' -not -path '*.egg-info*' -not -path './tests/*' \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
plugin_marker="$venv/.immune-plugin-hash"
if [[ "$(cat "$plugin_marker" 2>/dev/null || true)" != "$plugin_hash" ]]; then
    say "installing the autoscaling/elbv2 provider plugin"
    # Built from a copy: setuptools leaves build/ and *.egg-info next to the sources,
    # which are in the repository. --no-deps: it only needs what LocalStack brought;
    # --reinstall: same version number, new contents. The build backend comes from
    # PyPI (cached by uv).
    rm -rf "$home_dir/plugin-src"
    cp -r "$here/plugin" "$home_dir/plugin-src"
    uv pip install --python "$py" --exclude-newer "$exclude_newer" --no-deps --reinstall "$home_dir/plugin-src"
    printf '%s\n' "$plugin_hash" >"$plugin_marker"
    # plux caches the entry-point index keyed on file mtimes, which a reinstall of
    # the same version can leave unchanged: new hooks would go unseen.
    rm -rf "$home_dir/home/.cache/plux"
fi

# --- run ------------------------------------------------------------------------
# health_state prints "ready" when every service above is served, "up" when the
# gateway answers without some (an older start, or someone else's LocalStack), nothing
# when it is down.
health_state() {
    "$py" - "$health_url" "$services" <<'EOF' 2>/dev/null || true
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        services = json.load(r).get("services", {})
except Exception:
    sys.exit(0)
ok = ("available", "running")
print("ready" if all(services.get(s) in ok for s in sys.argv[2].split(",")) else "up")
EOF
}

state="$(health_state)"
# One this script started with fewer services (before a service was added) is
# restarted; anyone else's is left alone, with a warning.
if [[ "$state" == up && -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    say "the running LocalStack lacks some of $services: restarting it"
    flock -u 9
    bash "$here/stop.sh"
    flock 9
    state="$(health_state)"
fi
if [[ -n "$state" ]]; then
    say "already answering on $health_url"
    [[ "$state" == ready ]] || say "warning: that LocalStack does not serve all of $services (not started by this script?)"
    exit 0
fi

# A stale pid file from a crashed run would confuse stop.sh; drop it.
if [[ -f "$pid_file" ]] && ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    rm -f "$pid_file"
fi

mkdir -p "$home_dir/filesystem" "$home_dir/home"
# One log per run (the previous one kept), so a failure shows this run's lines.
[[ -f "$log_file" ]] && mv -f "$log_file" "$log_file.1"
say "starting LocalStack on 127.0.0.1:$port (log: $log_file)"
# setsid + nohup: the server outlives the shell (and CI step) that started it.
# The flags below keep it from reaching for the internet, which is not there:
#   SKIP_SSL_CERT_DOWNLOAD  use a self-signed cert instead of downloading one
#   DISABLE_EVENTS          no analytics events (they would be posted to LocalStack)
#   DNS_ADDRESS=0           no DNS server (it would bind port 53 and forward upstream)
#   EAGER_SERVICE_LOADING   load the services now, not on first request: the first
#                           EC2 call would otherwise take seconds, inside some test
#   MOTO_ENABLE_AMI_VALIDATION, MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION
#                           fail RunInstances on an unknown image or instance type
#                           (InvalidAMIID.NotFound...) as AWS does; moto accepts any
#   HOME                    LocalStack and plux keep caches under ~ (~/.cache/plux,
#                           ~/.localstack); keep them in our cache dir instead
# 9>&- : the child must not inherit (and so hold) the start lock.
env \
    GATEWAY_LISTEN="127.0.0.1:$port" \
    SERVICES="$services" \
    FILESYSTEM_ROOT="$home_dir/filesystem" \
    PERSISTENCE=0 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    DISABLE_EVENTS=1 \
    DNS_ADDRESS=0 \
    EAGER_SERVICE_LOADING=1 \
    MOTO_ENABLE_AMI_VALIDATION=1 \
    MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=1 \
    HOME="$home_dir/home" \
    setsid nohup "$py" -m localstack.runtime.main >>"$log_file" 2>&1 </dev/null 9>&- &
echo $! >"$pid_file"

started=$SECONDS
while ((SECONDS - started < timeout)); do
    if [[ "$(health_state)" == ready ]]; then
        say "ready in $((SECONDS - started))s (pid $(cat "$pid_file"))"
        exit 0
    fi
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        say "LocalStack exited during startup; last log lines:"
        tail -n 40 "$log_file" >&2
        rm -f "$pid_file"
        exit 1
    fi
    sleep 0.5
done
# Left running: it may still come up (a later start.sh then finds it); stop.sh ends it.
say "not ready after ${timeout}s (pid $(cat "$pid_file") left running; stop.sh stops it); last log lines:"
tail -n 40 "$log_file" >&2
exit 1
