#!/usr/bin/env bash
# CI, second job: the plan against the account, saved for the apply job. It carries the
# variables' values (never the sensitive ones), so the apply job needs no --var.
#
# Env:
#   RELEASE        the release to plan (required)
#   IMMUNE_CONFIG  the configuration's directory (default examples/quickstart)
#   VAR_FILE       a file of variable values (optional; `name = value` lines or JSON)
#   PLAN_FILE      where the plan goes (default immune.plan)
#   IMMUNE         the immune binary (default: immune on PATH)
# Writes `changes=true|false` to $GITHUB_OUTPUT when it is set.
set -euo pipefail
immune="${IMMUNE:-immune}"
config="${IMMUNE_CONFIG:-examples/quickstart}"
release="${RELEASE:?set RELEASE to the release to plan}"
plan="$(realpath -m "${PLAN_FILE:-immune.plan}")"
vars=(--var "release=$release")
[[ -n "${VAR_FILE:-}" ]] && vars+=(--var-file "$(realpath "$VAR_FILE")")

# Credentials, region and backend first: each says what is wrong before any plan.
"$immune" --chdir "$config" init "${vars[@]}"
"$immune" --chdir "$config" validate "${vars[@]}"
code=0
"$immune" --chdir "$config" plan --detailed-exitcode --out "$plan" "${vars[@]}" || code=$?
case "$code" in
    0) changes=false ;;
    2) changes=true ;;
    4) changes=false
       echo "::warning::only locked fleets would change: run \`immune unlock FLEET --reason TEXT\` once the cause is understood" ;;
    *) exit "$code" ;;
esac
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
    echo "changes=$changes" >>"$GITHUB_OUTPUT"
fi
echo "changes=$changes"
