#!/usr/bin/env bash
# The quickstart on LocalStack, from a fresh clone: start LocalStack, create the
# surroundings a fleet needs (subnets, security group, base image, load balancer,
# alarm), then plan and apply release v1 and release v2 of examples/quickstart.
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
