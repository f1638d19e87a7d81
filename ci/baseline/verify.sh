#!/usr/bin/env bash
# The script baseline: smokecheck's default suite (suites/litellm.yaml) as a competent engineer
# writes it with kubectl, curl, psql, jq (and yq, to read the proxy config's YAML), one check
# after another as such scripts run. ci/bench measures smokecheck against it, side by side; keep
# it honest both ways: the same checks, the same requests and the same safety (TLS verified,
# SCRAM with channel binding, keys never on a command line or in the output), no shortcut a
# reviewer would refuse, and no handicap smokecheck does not also carry. Each check is named as
# smokecheck names it, so the two outputs read side by side.
#
# What it checks, in smokecheck's order:
#   platform      namespaces Active; the CNPG, Sealed Secrets and Argo CD APIs served; the two
#                 operators' Deployments ready; the Argo CD Application Synced and Healthy
#   kubernetes    pods ready and not broken (a crash loop's previous log); Services with the port
#                 and ready endpoints; the Secrets' keys present and not empty; LiteLLM's copy of
#                 vLLM's key equal to vLLM's (SHA-256 digests); the migration Job complete or gone;
#                 the guardrail declared, enabled and mounted where LiteLLM imports it; the CNPG
#                 cluster healthy with its -rw Service on the primary
#   database      one psql session per check (as smokecheck opens one per check): log in over
#                 TLS, a writable primary, Prisma's migrations applied, LiteLLM's tables there
#   litellm       live; ready (and db connected unless EXPECT_DB=false); 401 without a key and
#                 no 2xx with a bogus one; every alias of the config served
#   vllm          /health; /v1/models with LiteLLM's own key (max_model_len read once)
#   e2e           per alias: api_base is the suite's vLLM Service; a 5-token chat; a stream with
#                 a content delta and [DONE]; for guarded aliases a prompt over the window that
#                 must come back trimmed, and the same prompt straight to vLLM, refused
#
# How it reaches the stack: kubectl with KUBECONFIG for the API; LiteLLM, vLLM and PostgreSQL at
# local addresses that port-forwards hold open, as `kubectl port-forward svc/...` would:
#   LITELLM_URL=http://127.0.0.1:P   VLLM_URL=http://127.0.0.1:Q   PGHOSTADDR=127.0.0.1 PGPORT=R
# Against a real cluster, start those port-forwards first (kubectl port-forward -n litellm
# svc/litellm 4000:4000 &, ... svc/vllm -n vllm 8000:80 &, ... svc/cloudnative-pg-cluster-rw
# 5432:5432 &). `ci/sandbox --serve` holds them open through the fake API server and writes
# these settings to a file (each connection a port-forward stream, as smokecheck's own; kubectl
# cannot forward through the fake, which speaks WebSocket port-forward only). This script does
# not pay kubectl port-forward's start-up (~0.1-0.3 s), which favours it; its connections each
# pay an upgrade request to the API server, as smokecheck's do, where kubectl's would share one.
#
# Settings (environment; defaults are the default suite's):
#   NAMESPACE=litellm   VLLM_NAMESPACE=vllm VLLM_SERVICE=vllm VLLM_PORT=80
#   EXPECT_DB=true      DB_NAME=litellm DB_SSLMODE=require DB_CA_CONFIGMAP= (name; key ca.crt)
#   TIMEOUT=30          seconds per request (kubectl, curl, psql)
# Output: one line per check, `PASS  name: summary` or `FAIL  name: why`, then a count.
# Exit: 0 every check passed, 1 a check failed, 2 a setting or tool is missing.
set -uo pipefail

NAMESPACE="${NAMESPACE:-litellm}"
VLLM_NAMESPACE="${VLLM_NAMESPACE:-vllm}"
VLLM_SERVICE="${VLLM_SERVICE:-vllm}"
VLLM_PORT="${VLLM_PORT:-80}"
EXPECT_DB="${EXPECT_DB:-true}"
DB_NAME="${DB_NAME:-litellm}"
DB_SSLMODE="${DB_SSLMODE:-require}"
DB_CA_CONFIGMAP="${DB_CA_CONFIGMAP:-}"
TIMEOUT="${TIMEOUT:-30}"
# The default suite's names.
LITELLM_SELECTOR=app.kubernetes.io/name=litellm
LITELLM_CONTAINER=litellm
LITELLM_SECRET=litellm-secrets
CONFIG_CM=litellm-config
MIGRATION_JOB=litellm-migrations
GUARDRAIL=message_trimming
GUARDRAIL_CM=message-trimming-config
WORKDIR=/app
CLUSTER=cloudnative-pg-cluster
DB_SELECTOR=cnpg.io/cluster=$CLUSTER
DB_SERVICE=$CLUSTER-rw
DB_SECRET=$CLUSTER-litellm
VLLM_SECRET=vllm-secrets
TABLES=(LiteLLM_VerificationToken LiteLLM_UserTable LiteLLM_TeamTable LiteLLM_SpendLogs)
PROMPT="Reply with the single word: ok"

for tool in kubectl curl psql jq yq base64 sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "verify.sh: $tool is missing" >&2; exit 2; }
done
for var in LITELLM_URL VLLM_URL PGHOSTADDR PGPORT; do
  [ -n "${!var:-}" ] || { echo "verify.sh: $var is not set (see the header)" >&2; exit 2; }
done

tmp="$(mktemp -d)"
chmod 700 "$tmp"
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
started=${EPOCHREALTIME/./}
pass() { passed=$((passed + 1)); echo "PASS  $1: $2"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1: $2"; }
k() { kubectl --request-timeout="${TIMEOUT}s" "$@"; }
# curl with a key from a header file (never on the command line); prints the status, the body
# goes to $tmp/body.
call() {
  local header="$1"; shift
  curl -sS --max-time "$TIMEOUT" --connect-timeout 10 -o "$tmp/body" -w '%{http_code}' \
    ${header:+-H "@$header"} "$@" 2>"$tmp/curl.err" || echo 000
}
key_header() { # NAME VALUE: writes an Authorization header file, prints its path
  printf 'Authorization: Bearer %s\n' "$2" >"$tmp/$1.h"
  echo "$tmp/$1.h"
}
secret_value() { jq -r --arg k "$2" '.data[$k] // empty' <<<"$1" | base64 -d; }

# --- platform -----------------------------------------------------------------------------
if ns=$(k get namespace "$NAMESPACE" "$VLLM_NAMESPACE" -o json 2>"$tmp/err"); then
  inactive=$(jq -r '[.items[] | select(.status.phase != "Active") | .metadata.name] | join(", ")' <<<"$ns")
  if [ -z "$inactive" ]; then
    pass platform::namespace "$NAMESPACE, $VLLM_NAMESPACE exist and are Active"
  else
    fail platform::namespace "not Active: $inactive"
  fi
else
  fail platform::namespace "$(head -n 1 "$tmp/err")"
fi

missing=()
for gv in postgresql.cnpg.io/v1:clusters bitnami.com/v1alpha1:sealedsecrets argoproj.io/v1alpha1:applications; do
  if ! k get --raw "/apis/${gv%%:*}" 2>/dev/null | jq -e --arg r "${gv##*:}" '.resources[] | select(.name == $r)' >/dev/null; then
    missing+=("${gv##*:}.${gv%%/*}")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  pass platform::crds "served: clusters, sealedsecrets, applications"
else
  fail platform::crds "not served: ${missing[*]}"
fi

for op in cnpg-system/cnpg-controller-manager:cnpg-operator kube-system/sealed-secrets-controller:sealed-secrets-controller; do
  target=${op%%:*} name=platform::${op##*:}
  if d=$(k get deployment -n "${target%%/*}" "${target##*/}" -o json 2>"$tmp/err"); then
    read -r ready want < <(jq -r '"\(.status.readyReplicas // 0) \(.spec.replicas // 1)"' <<<"$d")
    if [ "$want" -gt 0 ] && [ "$ready" -ge "$want" ]; then
      pass "$name" "$ready/$want replicas ready"
    else
      fail "$name" "$ready/$want replicas ready"
    fi
  else
    fail "$name" "$(head -n 1 "$tmp/err")"
  fi
done

if app=$(k get applications.argoproj.io -n argocd litellm -o json 2>"$tmp/err"); then
  read -r sync health < <(jq -r '"\(.status.sync.status) \(.status.health.status)"' <<<"$app")
  if [ "$sync" = Synced ] && [ "$health" = Healthy ]; then
    pass platform::argocd-app "Application argocd/litellm is $sync and $health"
  else
    fail platform::argocd-app "Application argocd/litellm is $sync and $health"
  fi
else
  fail platform::argocd-app "$(head -n 1 "$tmp/err")"
fi

# --- kubernetes ---------------------------------------------------------------------------
check_pods() { # LABEL SELECTOR: sets $pods_json
  local name=kubernetes::pods::$1
  if ! pods_json=$(k get pods -n "$NAMESPACE" -l "$2" -o json 2>"$tmp/err"); then
    fail "$name" "$(head -n 1 "$tmp/err")"; return
  fi
  local ready total pod container reason
  # Ready pods, all pods, and the first broken container: pod, container, reason.
  read -r ready total pod container reason < <(jq -r '
    [.items[] | select(.metadata.deletionTimestamp == null) | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] as $ready
    | ([.items[] | . as $p | (.status.initContainerStatuses // []) + (.status.containerStatuses // []) | .[]
        | select(.state.waiting.reason // "" | test("CrashLoopBackOff|ImagePull|ErrImage|CreateContainer|RunContainerError"))
        | "\($p.metadata.name) \(.name) \(.state.waiting.reason)"] | first // "") as $broken
    | "\($ready | length) \(.items | length) \($broken)"' <<<"$pods_json")
  if [ -n "$reason" ]; then
    fail "$name" "$ready/$total pods ready; $pod: container $container in $reason"
    if [ "$reason" = CrashLoopBackOff ]; then
      k logs -n "$NAMESPACE" "$pod" -c "$container" --previous --tail 20 2>&1 | sed 's/^/      /'
    fi
  elif [ "$ready" -ge 1 ]; then
    pass "$name" "$ready/$total pods ready (need 1)"
  else
    fail "$name" "$ready/$total pods ready (need 1)"
  fi
}
check_pods litellm "$LITELLM_SELECTOR"
litellm_pods=$pods_json
check_pods database "$DB_SELECTOR"

check_service() { # NAMESPACE SERVICE PORT CHECK-NAME: sets $slices_json and $svc_json
  local name=kubernetes::services::$4
  slices_json='{"items":[]}'
  if ! svc_json=$(k get service -n "$1" "$2" -o json 2>"$tmp/err"); then
    fail "$name" "$(head -n 1 "$tmp/err")"; return
  fi
  if ! jq -e --argjson p "$3" 'any(.spec.ports[]; .port == $p)' <<<"$svc_json" >/dev/null; then
    fail "$name" "service $1/$2 does not expose port $3"; return
  fi
  if ! slices_json=$(k get endpointslices -n "$1" -l "kubernetes.io/service-name=$2" -o json 2>"$tmp/err"); then
    fail "$name" "$(head -n 1 "$tmp/err")"; return
  fi
  read -r ready total < <(jq -r '[.items[].endpoints[]?] | "\([.[] | select((.conditions.ready // true) and ((.conditions.terminating // false) | not))] | length) \(length)"' <<<"$slices_json")
  if [ "$ready" -gt 0 ]; then
    pass "$name" "$ready/$total endpoints ready"
  else
    fail "$name" "service $1/$2 has no ready endpoints"
  fi
}
check_service "$NAMESPACE" litellm 4000 litellm
check_service "$NAMESPACE" "$DB_SERVICE" 5432 "$DB_SERVICE"
rw_slices=$slices_json
check_service "$VLLM_NAMESPACE" "$VLLM_SERVICE" "$VLLM_PORT" "$VLLM_NAMESPACE/$VLLM_SERVICE"

check_secret() { # NAMESPACE SECRET CHECK-NAME KEYS...: sets $secret_json
  local ns=$1 secret=$2 name=kubernetes::secrets::$3; shift 3
  if ! secret_json=$(k get secret -n "$ns" "$secret" -o json 2>"$tmp/err"); then
    secret_json='{}'
    fail "$name" "$(head -n 1 "$tmp/err")"; return
  fi
  local bad
  bad=$(jq -r '[$ARGS.positional[] as $k | select((.data[$k] // "") == "") | $k] | join(" ")' --args "$@" <<<"$secret_json")
  if [ -z "$bad" ]; then
    pass "$name" "has $*"
  else
    fail "$name" "secret $ns/$secret has no (or an empty) $bad"
  fi
}
check_secret "$NAMESPACE" "$LITELLM_SECRET" "$LITELLM_SECRET" PROXY_MASTER_KEY CA_VLLM_LOCAL_API_KEY
litellm_secret=$secret_json
check_secret "$NAMESPACE" "$DB_SECRET" "$DB_SECRET" username password
db_secret=$secret_json
check_secret "$VLLM_NAMESPACE" "$VLLM_SECRET" "$VLLM_NAMESPACE/$VLLM_SECRET" VLLM_API_KEY
vllm_secret=$secret_json

master_key=$(secret_value "$litellm_secret" PROXY_MASTER_KEY)
vllm_key=$(secret_value "$litellm_secret" CA_VLLM_LOCAL_API_KEY)
ours=$(printf '%s' "$vllm_key" | sha256sum)
theirs=$(secret_value "$vllm_secret" VLLM_API_KEY | sha256sum)
what="$NAMESPACE/$LITELLM_SECRET CA_VLLM_LOCAL_API_KEY and $VLLM_NAMESPACE/$VLLM_SECRET VLLM_API_KEY"
if [ -z "$vllm_key" ]; then
  fail kubernetes::secrets::vllm-api-key "cannot compare: LiteLLM's copy is missing"
elif [ "$ours" = "$theirs" ]; then
  pass kubernetes::secrets::vllm-api-key "$what are equal (compared by SHA-256 digest)"
else
  fail kubernetes::secrets::vllm-api-key "$what differ"
fi

if job=$(k get job -n "$NAMESPACE" "$MIGRATION_JOB" -o json --ignore-not-found 2>"$tmp/err"); then
  if [ -z "$job" ]; then
    pass kubernetes::jobs::$MIGRATION_JOB "not present (already cleaned up)"
  elif jq -e 'any(.status.conditions[]?; .type == "Complete" and .status == "True")' <<<"$job" >/dev/null; then
    pass kubernetes::jobs::$MIGRATION_JOB "complete ($(jq '.status.succeeded // 0' <<<"$job") succeeded)"
  else
    fail kubernetes::jobs::$MIGRATION_JOB "not complete: $(jq -r '[.status.conditions[]? | select(.status == "True") | "\(.type): \(.message // .reason)"] | join("; ")' <<<"$job")"
  fi
else
  fail kubernetes::jobs::$MIGRATION_JOB "$(head -n 1 "$tmp/err")"
fi

# The proxy config, read once: the guardrail check and the litellm and e2e layers use it.
config='{}'
name=kubernetes::guardrail::$GUARDRAIL
if cm=$(k get configmap -n "$NAMESPACE" "$CONFIG_CM" -o json 2>"$tmp/err") \
  && config=$(jq -r '.data["config.yaml"] // ""' <<<"$cm" | yq '.' 2>"$tmp/err") && [ -n "$config" ]; then
  target=$(jq -r --arg g "$GUARDRAIL" '.guardrails[]? | select(.guardrail_name == $g) | .litellm_params.guardrail' <<<"$config")
  enabled=$(jq -r --arg g "$GUARDRAIL" '[.model_list[]? | select(.litellm_params.guardrails // [] | index($g)) | .model_name] | join(", ")' <<<"$config")
  if [ -z "$target" ]; then
    fail "$name" "the proxy config declares no guardrail named $GUARDRAIL"
  elif [ -z "$enabled" ]; then
    fail "$name" "guardrail $GUARDRAIL is declared, but no model enables it"
  elif ! module_cm=$(k get configmap -n "$NAMESPACE" "$GUARDRAIL_CM" -o json 2>"$tmp/err"); then
    fail "$name" "configmap $NAMESPACE/$GUARDRAIL_CM (the guardrail module): $(head -n 1 "$tmp/err")"
  else
    module_file="$(tr . / <<<"${target%.*}").py"
    # Where LiteLLM imports it from: beside the config file, the working directory, PYTHONPATH.
    found=$(jq -r --arg c "$LITELLM_CONTAINER" --arg cm "$GUARDRAIL_CM" --arg f "$module_file" \
      --arg wd "$WORKDIR" --argjson keys "$(jq '[(.data // {}), (.binaryData // {}) | keys[]]' <<<"$module_cm")" '
      [.items[] | select(.metadata.deletionTimestamp == null)] | sort_by(.metadata.creationTimestamp) | last
      | .spec as $spec | ($spec.containers | map(select(.name == $c)) | first // $spec.containers[0]) as $ctr
      | ([$ctr.command[]?, $ctr.args[]?] | . as $w | [range(length) | select($w[.] == "--config" or $w[.] == "-c") | $w[. + 1]] | first) as $cfg
      | ([($cfg // empty | sub("/[^/]*$"; "")), ($ctr.workingDir // $wd)] + ([$ctr.env[]? | select(.name == "PYTHONPATH") | .value | split(":")[]])) as $dirs
      | [$spec.volumes[]? | select(.configMap.name == $cm) | .name] as $vols
      | [$ctr.volumeMounts[]? | select(.name as $n | $vols | index($n)) | . as $m | $keys[]
          | if ($m.subPath // "") == "" then "\($m.mountPath)/\(.)" elif $m.subPath == . then $m.mountPath else empty end] as $files
      | [$dirs[] | "\(.)/\($f)" | select(. as $p | $files | index($p))] | first // ("none of " + ($files | join(", ")))
      ' <<<"$litellm_pods")
    case "$found" in
      "none of "*) fail "$name" "$module_file is not mounted where LiteLLM imports it from (${found#none of })" ;;
      *) pass "$name" "$module_file mounted at $found; enabled on $enabled" ;;
    esac
  fi
else
  fail "$name" "configmap $NAMESPACE/$CONFIG_CM (the proxy config): $(head -n 1 "$tmp/err")"
fi

if cluster=$(k get clusters.postgresql.cnpg.io -n "$NAMESPACE" "$CLUSTER" -o json 2>"$tmp/err"); then
  read -r ok primary summary < <(jq -r '.status as $s
    | ($s.phase == "Cluster in healthy state" and ($s.readyInstances // 0) == ($s.instances // -1)
       and any($s.conditions[]?; .type == "Ready" and .status == "True")) as $ok
    | "\($ok) \($s.currentPrimary // "-") phase \($s.phase), \($s.readyInstances // 0)/\($s.instances // 0) instances ready"' <<<"$cluster")
  routed=$(jq -r '[.items[].endpoints[]? | select(.conditions.ready // true) | .targetRef.name] | unique | join(",")' <<<"$rw_slices")
  if [ "$ok" != true ]; then
    fail kubernetes::cnpg::$CLUSTER "CNPG cluster $NAMESPACE/$CLUSTER: $summary"
  elif [ "$routed" != "$primary" ]; then
    fail kubernetes::cnpg::$CLUSTER "service $NAMESPACE/$DB_SERVICE routes to ${routed:-no pod}, but the primary is $primary"
  else
    pass kubernetes::cnpg::$CLUSTER "healthy, $summary, primary $primary behind $DB_SERVICE"
  fi
else
  fail kubernetes::cnpg::$CLUSTER "$(head -n 1 "$tmp/err")"
fi

# --- database -----------------------------------------------------------------------------
# libpq connects to PGHOSTADDR and verifies the certificate against PGHOST, the Service's name.
export PGHOST="$DB_SERVICE.$NAMESPACE.svc" PGHOSTADDR PGPORT PGDATABASE="$DB_NAME"
export PGSSLMODE="$DB_SSLMODE" PGCONNECT_TIMEOUT="$TIMEOUT" PGAPPNAME=verify.sh
export PGOPTIONS="-c statement_timeout=${TIMEOUT}s -c lock_timeout=${TIMEOUT}s"
[ "$DB_SSLMODE" = disable ] || [ "$DB_SSLMODE" = prefer ] || export PGCHANNELBINDING=require
PGUSER=$(secret_value "$db_secret" username)
PGPASSWORD=$(secret_value "$db_secret" password)
export PGUSER PGPASSWORD
case "$DB_SSLMODE" in
  verify-ca | verify-full)
    if [ -n "$DB_CA_CONFIGMAP" ]; then
      k get configmap -n "$NAMESPACE" "$DB_CA_CONFIGMAP" -o json 2>"$tmp/err" | jq -r '.data["ca.crt"] // empty' >"$tmp/ca.crt"
    else
      k get secret -n "$NAMESPACE" "$CLUSTER-ca" -o json 2>"$tmp/err" | jq -r '.data["ca.crt"] // empty' | base64 -d >"$tmp/ca.crt"
    fi
    export PGSSLROOTCERT="$tmp/ca.crt"
    ;;
esac
sql() { psql -XAtq -v ON_ERROR_STOP=1 -F ' ' -c "$1" 2>"$tmp/err"; }

if version=$(sql "SELECT 1, current_setting('server_version')"); then
  pass database::connect "logged in to $DB_NAME at $PGHOSTADDR:$PGPORT (port-forward): PostgreSQL ${version#1 }, sslmode $DB_SSLMODE"
else
  fail database::connect "$(head -n 1 "$tmp/err")"
fi
if row=$(sql "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"); then
  if [ "$row" = "f off" ]; then
    pass database::primary "a writable primary: pg_is_in_recovery() false, default_transaction_read_only off"
  else
    fail database::primary "not a writable primary (pg_is_in_recovery, default_transaction_read_only: $row)"
  fi
else
  fail database::primary "$(head -n 1 "$tmp/err")"
fi
if row=$(sql 'SELECT count(*) FILTER (WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL), count(*) FILTER (WHERE finished_at IS NULL AND rolled_back_at IS NULL) FROM "_prisma_migrations"'); then
  read -r applied unfinished <<<"$row"
  if [ "$applied" -gt 0 ] && [ "$unfinished" -eq 0 ]; then
    pass database::migrations "$applied migrations applied, none unfinished"
  else
    fail database::migrations "$applied migrations applied, $unfinished unfinished"
  fi
else
  fail database::migrations "$(head -n 1 "$tmp/err")"
fi
list=$(printf "'%s'," "${TABLES[@]}")
if absent=$(sql "SELECT string_agg(t, ', ') FROM unnest(ARRAY[${list%,}]) t WHERE to_regclass(quote_ident(t)) IS NULL"); then
  if [ -z "$absent" ]; then
    pass database::schema "all ${#TABLES[@]} core tables present"
  else
    fail database::schema "missing: $absent"
  fi
else
  fail database::schema "$(head -n 1 "$tmp/err")"
fi

# --- litellm ------------------------------------------------------------------------------
status=$(call "" "$LITELLM_URL/health/liveliness")
if [ "$status" = 200 ]; then
  pass litellm::live "alive ($LITELLM_URL/health/liveliness)"
else
  fail litellm::live "$status from /health/liveliness $(head -c 200 "$tmp/curl.err")"
fi
status=$(call "" "$LITELLM_URL/health/readiness")
db=$(jq -r '.db // "absent"' "$tmp/body" 2>/dev/null)
if [ "$status" != 200 ]; then
  fail litellm::ready "$status from /health/readiness"
elif [ "$EXPECT_DB" = true ] && [ "$db" != connected ]; then
  fail litellm::ready "ready, but db $db"
else
  pass litellm::ready "ready, db $db"
fi
none=$(call "" "$LITELLM_URL/v1/models")
bogus=$(call "$(key_header bogus "sk-verify-bogus-$RANDOM$RANDOM")" "$LITELLM_URL/v1/models")
if [[ $none == 2* || $bogus == 2* ]]; then
  fail litellm::auth "CRITICAL: the proxy answered $none without a key and $bogus with a bogus key"
elif [ "$none" != 401 ]; then
  fail litellm::auth "the proxy refused a request without a key with $none instead of 401"
else
  pass litellm::auth "refuses a request without a key ($none) and with a bogus key ($bogus)"
fi
master=$(key_header master "$master_key")
mapfile -t aliases < <(jq -r '.model_list[]?.model_name' <<<"$config")
status=$(call "$master" "$LITELLM_URL/v1/models")
if [ "$status" != 200 ]; then
  fail litellm::models "$status from /v1/models with the master key"
else
  absent=$(jq -r '$ARGS.positional - [.data[].id] | join(", ")' "$tmp/body" --args "${aliases[@]}")
  if [ -z "$absent" ]; then
    pass litellm::models "serves all ${#aliases[@]} expected aliases"
  else
    fail litellm::models "does not serve: $absent"
  fi
fi

# --- vllm ---------------------------------------------------------------------------------
status=$(call "" "$VLLM_URL/health")
if [ "$status" = 200 ]; then
  pass vllm::health "vLLM $VLLM_NAMESPACE/$VLLM_SERVICE is healthy"
else
  fail vllm::health "$status from $VLLM_URL/health $(head -c 200 "$tmp/curl.err")"
fi
upstream=$(key_header upstream "$vllm_key")
status=$(call "$upstream" "$VLLM_URL/v1/models")
windows='{}'
if [ "$status" = 200 ]; then
  windows=$(jq '[.data[] | {key: .id, value: .max_model_len}] | from_entries' "$tmp/body")
  pass vllm::models "vLLM $VLLM_NAMESPACE/$VLLM_SERVICE serves $(jq -r 'to_entries | map("\(.key) (max_model_len \(.value))") | join(", ")' <<<"$windows") and accepts LiteLLM's key"
elif [ "$status" = 401 ]; then
  fail vllm::models "vLLM $VLLM_NAMESPACE/$VLLM_SERVICE rejects LiteLLM's CA_VLLM_LOCAL_API_KEY (401)"
else
  fail vllm::models "$status from $VLLM_URL/v1/models"
fi

# --- e2e, per alias -----------------------------------------------------------------------
chat_body() { # ALIAS CONTENT [STREAM]
  jq -n --arg m "$1" --arg c "$2" --argjson s "${3:-false}" \
    '{model: $m, messages: [{role: "user", content: $c}], max_tokens: 5, temperature: 0, num_retries: 0}
     + (if $s then {stream: true, stream_options: {include_usage: true}} else {} end)' >"$tmp/request"
}
said() { jq -r '.error.message // .message // .' "$tmp/body" 2>/dev/null | head -c 200; }
for alias in "${aliases[@]}"; do
  params=$(jq -c --arg a "$alias" '.model_list[] | select(.model_name == $a) | .litellm_params' <<<"$config")
  api_base=$(jq -r '.api_base // ""' <<<"$params")
  if [[ $api_base =~ ^https?://([^./:]+)\.([^./:]+)(\.svc(\.cluster\.local)?)?(:[0-9]+)?/ ]] \
    && [ "${BASH_REMATCH[1]}/${BASH_REMATCH[2]}" = "$VLLM_SERVICE/$VLLM_NAMESPACE" ]; then
    pass "vllm::api_base::$alias" "api_base $api_base is service $VLLM_NAMESPACE/$VLLM_SERVICE"
  else
    fail "vllm::api_base::$alias" "api_base $api_base is not the suite's vLLM service $VLLM_NAMESPACE/$VLLM_SERVICE"
  fi

  chat_body "$alias" "$PROMPT"
  status=$(call "$master" "$LITELLM_URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary "@$tmp/request")
  content=$(jq -r '.choices[0].message.content // empty' "$tmp/body" 2>/dev/null)
  if [ "$status" = 200 ] && [ -n "$content" ] && jq -e '.usage.total_tokens > 0' "$tmp/body" >/dev/null 2>&1; then
    pass "e2e::chat::$alias" "alias $alias answered: \"$content\""
  else
    fail "e2e::chat::$alias" "$status: $(said)"
  fi

  chat_body "$alias" "$PROMPT" true
  status=$(call "$master" "$LITELLM_URL/v1/chat/completions" -N -H 'Content-Type: application/json' --data-binary "@$tmp/request")
  deltas=$(grep '^data: {' "$tmp/body" | sed 's/^data: //' | jq -s '[.[].choices[]?.delta.content // empty | select(. != "")] | length' 2>/dev/null)
  if [ "$status" = 200 ] && [ "${deltas:-0}" -gt 0 ] && grep -q '^data: \[DONE\]' "$tmp/body"; then
    pass "e2e::chat::$alias::stream" "alias $alias streamed $deltas content deltas and [DONE]"
  else
    fail "e2e::chat::$alias::stream" "$status: ${deltas:-0} content deltas, [DONE] $(grep -c '^data: \[DONE\]' "$tmp/body")"
  fi

  jq -e --arg g "$GUARDRAIL" '.guardrails // [] | index($g)' <<<"$params" >/dev/null || continue
  served=$(jq -r '.model | sub("^openai/"; "")' <<<"$params")
  window=$(jq -r --arg m "$served" '.[$m] // empty' <<<"$windows")
  if [ -z "$window" ]; then
    fail "e2e::trimming::$alias" "no max_model_len for $served (see vllm::models)"
    fail "e2e::trimming::$alias::control" "no max_model_len for $served (see vllm::models)"
    continue
  fi
  over=$((window / 10 > 256 ? window / 10 : 256))
  words=$((window + over))
  prompt=$(printf 'word %.0s' $(seq 1 "$words"))
  chat_body "$alias" "${prompt% }"
  status=$(call "$master" "$LITELLM_URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary "@$tmp/request")
  used=$(jq -r '.usage.prompt_tokens // 0' "$tmp/body" 2>/dev/null)
  if [ "$status" = 200 ] && [ $((used + 5)) -le "$window" ]; then
    pass "e2e::trimming::$alias" "guardrail $GUARDRAIL trimmed a $words-word prompt to $used tokens (max_model_len $window)"
  else
    fail "e2e::trimming::$alias" "$status, $used prompt tokens: $(said)"
  fi
  jq --arg m "$served" '.model = $m | del(.num_retries)' "$tmp/request" >"$tmp/control"
  status=$(call "$upstream" "$VLLM_URL/v1/chat/completions" -H 'Content-Type: application/json' --data-binary "@$tmp/control")
  if [ "$status" = 400 ] && grep -q 'maximum context length' "$tmp/body"; then
    pass "e2e::trimming::$alias::control" "vLLM refuses the $words-word prompt on its own"
  else
    fail "e2e::trimming::$alias::control" "vLLM answered $status to the oversized prompt: $(said)"
  fi
done

ended=${EPOCHREALTIME/./}
echo "$passed passed, $failed failed in $(( (ended - started) / 1000 )) ms"
[ "$failed" -eq 0 ]
