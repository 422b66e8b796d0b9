#!/usr/bin/env bash
# CI, third job: the saved plan carried out as it was approved. It is refused as stale
# when the state or the configuration moved on since the plan job (plan again then).
#
# Env:
#   IMMUNE_CONFIG  the configuration's directory (default examples/quickstart)
#   PLAN_FILE      the plan from the plan job (default immune.plan)
#   IMMUNE         the immune binary (default: immune on PATH)
# Sensitive variables are not in the plan: give them as IMMUNE_VAR_name from secrets.
# Writes the outputs (what runs now) to outputs.json.
set -euo pipefail
immune="${IMMUNE:-immune}"
config="${IMMUNE_CONFIG:-examples/quickstart}"
plan="$(realpath -m "${PLAN_FILE:-immune.plan}")"

errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
code=0
"$immune" --chdir "$config" apply "$plan" 2> >(tee "$errors" >&2) || code=$?
wait # for tee
case "$code" in
    0) ;;
    1) if grep -q "saved plan is stale\|holds no sensitive values" "$errors"; then
           echo "::error::the saved plan cannot be applied as it is (see above): run the workflow again to plan anew"
       else
           echo "::error::apply stopped (exit 1, see above): run the workflow again to resume the rollout, or \`immune rollback FLEET\` to roll it back"
       fi ;;
    3) echo "::error::a release was rolled back by its gates or health and its fleet is locked: see \`immune history FLEET\`" ;;
    4) echo "::error::a fleet is locked by an earlier rollback: run \`immune unlock FLEET --reason TEXT\` once the cause is understood" ;;
    *) echo "::error::apply stopped (exit $code): run the workflow again to resume the rollout, or \`immune rollback FLEET\`" ;;
esac
"$immune" --chdir "$config" output --json >outputs.json || true
exit "$code"
