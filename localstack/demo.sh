#!/usr/bin/env bash
# The quickstart on LocalStack, from a fresh clone: start LocalStack, create the
# surroundings a fleet needs (subnets, security group, base image, load balancer,
# alarm), then plan and apply release v1 and release v2 of examples/quickstart, and
# finally a bad release v3 whose 5xx alarm fires during the canary: immune sends traffic
# back to v2, destroys v3 and locks the fleet, and the demo shows status and history
# before unlocking it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
home_dir="${IMMUNE_LOCALSTACK_HOME:-$HOME/.cache/immune-localstack}"

bash "$here/start.sh"

export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$home_dir/venv/bin/python" "$here/surroundings.py" --prefix immune-demo \
    --var-file "$work/surroundings.hcl" >/dev/null
# A demo cut short may have left its alarm firing.
"$home_dir/venv/bin/python" "$here/fire_alarm.py" immune-demo-5xx --over

cargo build --quiet --manifest-path "$repo/Cargo.toml"
immune="$repo/target/debug/immune"
# State stays in examples/quickstart/.immune between runs, as it would in a repository:
# running the demo again releases v1 and v2 as the fleet's next groups.

for release in v1 v2; do
    printf '\n=== immune plan --var release=%s\n\n' "$release"
    "$immune" --chdir "$repo/examples/quickstart" plan --var "release=$release" \
        --var-file "$work/surroundings.hcl" || [ $? -eq 2 ]
    printf '\n=== immune apply --auto-approve --var release=%s\n\n' "$release"
    "$immune" --chdir "$repo/examples/quickstart" apply --auto-approve \
        --var "release=$release" --var-file "$work/surroundings.hcl"
done

printf '\n=== a bad release: immune apply --auto-approve --var release=v3, and its 5xx alarm fires at the 25%% step\n\n'
state="$repo/examples/quickstart/.immune/state.json"
"$immune" --chdir "$repo/examples/quickstart" apply --auto-approve \
    --var "release=v3" --var-file "$work/surroundings.hcl" &
apply_pid=$!
# Never leave the apply running behind a failed demo.
trap 'kill "$apply_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do
    grep -q '"observe"' "$state" 2>/dev/null && break
    sleep 0.2
done
alarm="$(sed -n 's/^alarm *= *"\(.*\)"$/\1/p' "$work/surroundings.hcl")"
"$home_dir/venv/bin/python" "$here/fire_alarm.py" "$alarm"
code=0
wait "$apply_pid" || code=$?
# The burst of errors is over (the alarm keeps its state without data).
"$home_dir/venv/bin/python" "$here/fire_alarm.py" "$alarm" --over
printf '\n(apply exited %s: 3 means the release was rolled back)\n' "$code"
[ "$code" -eq 3 ] || { echo "demo: expected the bad release to be rolled back" >&2; exit 1; }

printf '\n=== immune status web\n\n'
"$immune" --chdir "$repo/examples/quickstart" status web
printf '\n=== immune history web (the last rollout)\n\n'
"$immune" --chdir "$repo/examples/quickstart" history web | awk '/release v3/{show=1} show'
printf '\n=== immune unlock web --reason ...\n\n'
"$immune" --chdir "$repo/examples/quickstart" unlock web --reason "demo: the errors were injected on purpose"
