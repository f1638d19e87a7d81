#!/usr/bin/env bash
# Consume `smokecheck verify --format json` with jq: print each failed check's cause and hint,
# and fail when the key coupling broke. The exit code of smokecheck itself is kept.
set -uo pipefail
report="$(smokecheck verify --format json "$@")"
status=$?
jq -r '.checks[] | select(.status == "failed") | "\(.name) [\(.cause)]: \(.summary)\n  hint: \(.hint // "-")"' <<<"$report"
jq -r '"\(.summary.passed) passed, \(.summary.failed) failed, \(.summary.skipped) skipped in \(.summary.duration_ms) ms"' <<<"$report"
if jq -e '.checks[] | select(.cause == "key_mismatch")' <<<"$report" >/dev/null; then
  echo "vLLM key coupling broken: re-seal litellm-secrets" >&2
fi
exit "$status"
