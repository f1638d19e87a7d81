# The critical path of a `smokecheck verify --format json` run: the chain of checks that set its
# wall time. A check's start is its `started_ms` (issue 11 adds it to the report) and its end
# that plus `duration_ms`. From the check that ended last, each step goes back to the check that
# ended latest by the time this one started (what it waited for: a prerequisite, or a free
# thread), until a check that started with the first ones. No dependency list is needed: the
# timeline shows what each check waited for.
#
# Usage: jq -r -f ci/critical-path.jq run.json
# Prints the chain, first to last, and the slowest single check; without `started_ms` in the
# report, one line saying so, and the slowest single check (which needs no timeline).

# A check that ended within this many ms before another's start counts as what it waited for.
def slack: 2;

# The chain from the run's first checks to this one (input: a check with end_ms).
def chain($timed; $first):
  . as $cur
  | if ($cur.started_ms - $first) <= slack then
      [$cur]
    else
      ([$timed[] | select(.started_ms < $cur.started_ms and .end_ms <= $cur.started_ms + slack)]
        | max_by(.end_ms)) as $before
      | if $before == null then [$cur] else ($before | chain($timed; $first)) + [$cur] end
    end;

[.checks[] | select(.status != "skipped")] as $checks
| .summary.duration_ms as $wall
| if ($checks | length) == 0 then
    "critical path: no check ran"
  else
    ($checks | max_by(.duration_ms) | "slowest single check: \(.name) (\(.duration_ms) ms)") as $slowest
    | if ($checks | all((.started_ms | type) == "number") | not) then
        "critical path: unknown, the report has no started_ms yet (issue 11)", $slowest
      else
        ($checks | map(. + {end_ms: (.started_ms + .duration_ms)})) as $timed
        | ($timed | map(.started_ms) | min) as $first
        | ($timed | max_by(.end_ms) | chain($timed; $first)) as $path
        | "critical path: \($path | length) checks, the first starting at \($first) ms, the last ending at \($path[-1].end_ms) ms (run: \($wall) ms)",
          ($path[] | "  \(.started_ms)..\(.end_ms) ms  \(.name) (\(.duration_ms) ms)"),
          $slowest
      end
  end
