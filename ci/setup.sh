# Sourced by ci/test and ci/sandbox: installs what the test bed needs, idempotently. A green
# run must never depend on something installed by hand. Expects $root (the repository).

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# kubectl: the machine image ships one on PATH. Installing Debian's kubernetes-client would
# conflict with it, so where none exists, unpack that package into a folder of our own.
ensure_kubectl() {
  if command -v kubectl >/dev/null 2>&1; then return; fi
  local dir="$root/target/tools/kubectl"
  if [ ! -x "$dir/usr/bin/kubectl" ]; then
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download kubernetes-client)
    mkdir -p "$dir"
    dpkg -x "$tmp"/kubernetes-client_*.deb "$dir"
    rm -rf "$tmp"
  fi
  export PATH="$dir/usr/bin:$PATH"
}

# LiteLLM proxy for the end-to-end test bed: a venv outside the clone (CI clones afresh and the
# install is ~750 MB), `.venv` in the repo a symlink to it. Recreated when missing or when the
# installed litellm is not the pinned one (checked by version, not by the folder's presence).
# Never 1.107.x: 1.107.0 was a compromised release.
litellm_version=1.106.12
prisma_version=0.15.0
ensure_litellm_venv() {
  local venv="${HOME}/.cache/smokecheck/venv-litellm-${litellm_version}"
  local have=
  if [ -x "$venv/bin/python" ]; then
    have="$("$venv/bin/python" - <<'PY' 2>/dev/null || true
from importlib.metadata import version
print(version("litellm"), version("prisma"))
PY
)"
  fi
  if [ "$have" != "$litellm_version $prisma_version" ] || [ ! -x "$venv/bin/litellm" ]; then
    echo "ci/test: installing litellm[proxy]==$litellm_version into $venv (found: ${have:-none})" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "litellm[proxy]==$litellm_version" "prisma==$prisma_version"
  fi
  if [ "$(readlink "$root/.venv" 2>/dev/null)" != "$venv" ]; then
    rm -rf "$root/.venv"
    ln -s "$venv" "$root/.venv"
  fi
}

# PostgreSQL 15 for the database test bed (tests/support/postgres/): a real server, run as
# the `postgres` OS user that the package creates.
ensure_postgres() {
  if [ -x /usr/lib/postgresql/15/bin/postgres ]; then return; fi
  apt_install postgresql-15
}

# LiteLLM's migration SQL, replayed by the test bed into a template database. Pinned to the
# litellm-proxy-extras that LiteLLM 1.106.12 pulls. Kept outside the clone: CI clones afresh
# each run and the cache makes the step a no-op after the first.
extras_version=0.4.108
ensure_litellm_schema() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/smokecheck/litellm-proxy-extras-$extras_version"
  local migrations="$dir/litellm_proxy_extras/migrations"
  if [ ! -f "$dir/.complete" ]; then
    local tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$dir")"
    python3 -m pip install --quiet --no-deps --no-compile --root-user-action=ignore --target "$tmp" \
      "litellm-proxy-extras==$extras_version"
    ls "$tmp"/litellm_proxy_extras/migrations/*/migration.sql >/dev/null
    rm -rf "$dir"
    mv "$tmp" "$dir"
    touch "$dir/.complete"
  fi
  export SMOKECHECK_LITELLM_MIGRATIONS="$migrations"
}

# Prometheus (2.42, with promtool) and the Pushgateway (1.5) from Debian, for the continuous-
# checks bed (tests/support/prometheus.rs, pushgateway.rs) and the alert proofs (promtool test
# rules). The tests spawn the binaries on free ports with their own storage; the packages'
# services are not used.
ensure_prometheus() {
  if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus-pushgateway ]; then
    return
  fi
  apt_install prometheus prometheus-pushgateway
}

# Python tools the tests drive as real consumers of our output (junitparser reads the JUnit).
junitparser_version=5.0.3
ensure_tools_venv() {
  local venv="${HOME}/.cache/smokecheck/venv-tools"
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('junitparser') != '$junitparser_version')" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "junitparser==$junitparser_version"
  fi
}

# Everything the bed needs, in one call.
ensure_test_bed() {
  ensure_kubectl
  kubectl version --client >/dev/null
  command -v jq >/dev/null 2>&1 || apt_install jq
  # The script baseline (ci/baseline/verify.sh) reads the proxy config's YAML with Debian's yq
  # (a jq wrapper); psql comes with postgresql-15, curl with the image.
  command -v yq >/dev/null 2>&1 || apt_install yq
  # GNU time measures a child's own peak memory for the trust-envelope tests (tests/it/harness.rs).
  [ -x /usr/bin/time ] || apt_install time
  ensure_tools_venv
  ensure_litellm_venv
  ensure_postgres
  ensure_litellm_schema
  ensure_prometheus
}

# cargo fuzz (libFuzzer) for ci/fuzz and the short fuzz run of ci/test. Pinned, and used on
# stable with `--sanitizer none` only (the sanitizers need nightly, which CI does not have).
cargo_fuzz_version=0.13.2
ensure_cargo_fuzz() {
  if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
    echo "ci: installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version"
  fi
}
