#!/usr/bin/env bash
# CI, first job: the release rehearsed on LocalStack, without an AWS account. The
# configuration is validated, planned and applied, gates included, against LocalStack's
# emulation (started by immune's localstack/start.sh, no Docker), in a throwaway copy:
# the real state is never read or written.
#
# Env:
#   RELEASE        the release to rehearse (required)
#   IMMUNE_CONFIG  the configuration's directory (default examples/quickstart)
#   IMMUNE         the immune binary (default: immune on PATH)
#   IMMUNE_TOOLS   a checkout of immune, for localstack/ (default: this script's)
set -euo pipefail
tools="${IMMUNE_TOOLS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
immune="${IMMUNE:-immune}"
config="${IMMUNE_CONFIG:-examples/quickstart}"
release="${RELEASE:?set RELEASE to the release to rehearse}"

bash "$tools/localstack/start.sh"
export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION="${AWS_REGION:-us-east-1}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$config/." "$work/"
rm -rf "$work/.immune"
# What the fleet expects to exist already (subnets, a security group, a base image, the
# load balancer, the gate's alarm), made in LocalStack, as variables for the copy.
"${IMMUNE_LOCALSTACK_HOME:-$HOME/.cache/immune-localstack}/venv/bin/python" \
    "$tools/localstack/surroundings.py" --prefix "rehearsal-$$" \
    --var-file "$work/localstack.tfvars" >/dev/null

"$immune" --chdir "$work" validate
"$immune" --chdir "$work" plan --var "release=$release" --var-file "$work/localstack.tfvars"
"$immune" --chdir "$work" apply --auto-approve --var "release=$release" \
    --var-file "$work/localstack.tfvars"
