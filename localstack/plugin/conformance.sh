#!/usr/bin/env bash
# Runs the emulator conformance suite (tests/test_*.py) against a running LocalStack:
# each test checks, with boto3 alone, that the emulator answers as AWS's documentation
# says (see ../README.md, "What the emulator models").
#
#   localstack/plugin/conformance.sh                 # every test
#   localstack/plugin/conformance.sh test_propagation  # one module (or module.Class.test)
#
# Env:
#   AWS_ENDPOINT_URL          the LocalStack gateway (default http://127.0.0.1:4566)
#   IMMUNE_LOCALSTACK_HOME    where start.sh put the venv (default ~/.cache/immune-localstack)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home_dir="${IMMUNE_LOCALSTACK_HOME:-$HOME/.cache/immune-localstack}"
py="$home_dir/venv/bin/python"
[[ -x "$py" ]] || { echo "conformance: no $py (run localstack/start.sh first)" >&2; exit 1; }
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:${IMMUNE_LOCALSTACK_PORT:-4566}}"

cd "$here/tests"
if (($#)); then
    exec "$py" -m unittest -v "$@"
fi
exec "$py" -m unittest discover -v -s . -p 'test_*.py'
