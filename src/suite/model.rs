//! The suite's data model. Field defaults are the reference deployment (DESIGN.md).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Format version: this smokecheck reads version 1.
    pub version: u32,
    /// The namespace LiteLLM and its database run in.
    #[serde(default = "defaults::namespace")]
    pub namespace: String,
    #[serde(default)]
    pub litellm: Litellm,
    /// The CloudNativePG cluster LiteLLM stores its state in; `null` for a proxy without one.
    #[serde(default = "defaults::database")]
    pub database: Option<Database>,
    /// The vLLM backends the proxy config points at.
    #[serde(default = "defaults::vllm")]
    pub vllm: Vec<Vllm>,
    /// What the deployment stands on: operators and the Argo CD Application.
    #[serde(default)]
    pub platform: Platform,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Platform {
    /// The CloudNativePG operator's Deployment; `null` to leave it out.
    pub cnpg_operator: Option<Workload>,
    /// The Sealed Secrets controller's Deployment; `null` to leave it out.
    pub sealed_secrets_controller: Option<Workload>,
    /// The Argo CD Application that deploys LiteLLM; `null` without Argo CD.
    pub argocd: Option<ArgoApp>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            cnpg_operator: Some(Workload {
                namespace: "cnpg-system".into(),
                deployment: "cnpg-controller-manager".into(),
            }),
            sealed_secrets_controller: Some(Workload {
                namespace: "kube-system".into(),
                deployment: "sealed-secrets-controller".into(),
            }),
            argocd: Some(ArgoApp {
                namespace: "argocd".into(),
                application: "litellm".into(),
            }),
        }
    }
}

/// A Deployment in some namespace.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub namespace: String,
    pub deployment: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArgoApp {
    pub namespace: String,
    pub application: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Litellm {
    pub pods: Pods,
    pub service: ServiceRef,
    pub secret: LitellmSecret,
    pub config: ProxyConfigMap,
    /// The Prisma migration Job (an Argo CD PreSync hook, often TTL-deleted); `null` to ignore.
    pub migration_job: Option<String>,
    /// The trimming guardrail; `null` for a deployment without one.
    pub guardrail: Option<Guardrail>,
    /// The model aliases the proxy must serve; `null` (the default) reads them from the proxy
    /// config's `model_list`, so the suite cannot drift from what GitOps deployed.
    pub aliases: Option<Vec<String>>,
    /// Whether `/health/readiness` must say `db: connected`; `false` for a proxy without a
    /// database (readiness says healthy with the database down, so the field is what counts).
    pub expect_db: bool,
    /// The LiteLLM key the chat and trimming checks send; `null` (the default) uses the master
    /// key. Production hooks should name a dedicated low-privilege key here.
    pub chat_key: Option<SecretKeyRef>,
}

/// One key of a Secret in the suite's namespace.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub secret: String,
    pub key: String,
}

impl Default for Litellm {
    fn default() -> Self {
        Litellm {
            pods: Pods {
                selector: "app.kubernetes.io/name=litellm".into(),
                min_ready: 1,
                container: Some("litellm".into()),
            },
            service: ServiceRef {
                name: "litellm".into(),
                port: Some(4000),
            },
            secret: LitellmSecret::default(),
            config: ProxyConfigMap::default(),
            migration_job: Some("litellm-migrations".into()),
            guardrail: Some(Guardrail::default()),
            aliases: None,
            expect_db: true,
            chat_key: None,
        }
    }
}

/// Pods selected by a label selector, of which at least `min_ready` must be Ready.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pods {
    pub selector: String,
    #[serde(default = "defaults::one")]
    pub min_ready: u32,
    /// The container whose state and logs matter; the pod's first container when unset.
    #[serde(default)]
    pub container: Option<String>,
}

// A Service of the deployment as the suite names it (not the Kubernetes object). Doc comments
// here are the JSON Schema's descriptions (suites/schema.json): this type has none.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Service")]
pub struct ServiceRef {
    pub name: String,
    /// A port the Service must expose.
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LitellmSecret {
    pub name: String,
    /// Key holding the proxy's master key.
    pub master_key: String,
    /// Key holding the API key LiteLLM sends to vLLM; must equal vLLM's own key.
    pub vllm_api_key: String,
}

impl Default for LitellmSecret {
    fn default() -> Self {
        LitellmSecret {
            name: "litellm-secrets".into(),
            master_key: "PROXY_MASTER_KEY".into(),
            vllm_api_key: "CA_VLLM_LOCAL_API_KEY".into(),
        }
    }
}

/// Where the proxy's `config.yaml` lives.
// A ConfigMap and its key; the parsed config is `proxy_config::ProxyConfig`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "ProxyConfig")]
pub struct ProxyConfigMap {
    pub configmap: String,
    pub key: String,
}

impl Default for ProxyConfigMap {
    fn default() -> Self {
        ProxyConfigMap {
            configmap: "litellm-config".into(),
            key: "config.yaml".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Guardrail {
    /// `guardrail_name` in the proxy config.
    pub name: String,
    /// The ConfigMap holding the guardrail's Python module.
    pub configmap: String,
    /// The container's working directory when the pod spec sets none (the LiteLLM image's).
    pub workdir: String,
    /// The largest context window (tokens) the trimming checks test; a larger one skips them
    /// with the reason. Proving the trimming sends a prompt over the window and has vLLM
    /// prefill a whole window, on every run.
    #[schemars(range(min = 1, max = 1_048_576))]
    pub max_window: u32,
}

impl Guardrail {
    /// The default `max_window`: a 32k window costs a ~180 KB prompt and a prefill of a few
    /// seconds on one GPU, within the default `--timeout`; 128k-token windows would cost
    /// minutes of GPU per hook run, so testing them is a choice the suite makes.
    pub const DEFAULT_MAX_WINDOW: u32 = 32_768;
    /// The most `max_window` may be: a prompt over a million-token window is ~6 MB of words,
    /// and more would crowd the hook's 128Mi memory limit.
    pub const MAX_MAX_WINDOW: u32 = 1 << 20;
}

impl Default for Guardrail {
    fn default() -> Self {
        Guardrail {
            name: "message_trimming".into(),
            configmap: "message-trimming-config".into(),
            workdir: "/app".into(),
            max_window: Guardrail::DEFAULT_MAX_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// The CloudNativePG `Cluster` (postgresql.cnpg.io/v1).
    pub cluster: String,
    pub pods: Pods,
    /// The read-write Service, which must select the primary.
    pub service: ServiceRef,
    pub secret: DatabaseSecret,
    /// The database LiteLLM uses.
    pub name: String,
    /// TLS to the database, with libpq's meanings; with TLS required, the login must also be
    /// bound to the TLS session (SCRAM channel binding).
    pub sslmode: SslMode,
    /// The CA that signed the server certificate, for `verify-ca` and `verify-full`.
    pub ca_secret: CaSecret,
    /// The CA certificate from a ConfigMap instead of `ca_secret`: CloudNativePG's CA Secret
    /// also holds the CA's private key, which a least-privilege hook should not read.
    pub ca_configmap: Option<CaConfigMap>,
    /// LiteLLM's core tables, which must exist.
    pub tables: Vec<String>,
}

impl Database {
    /// The CA Secret's name: the suite's, else the one CloudNativePG makes (`<cluster>-ca`).
    pub fn ca_secret_name(&self) -> String {
        self.ca_secret
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-ca", self.cluster))
    }

    /// Where `verify-ca`/`verify-full` read the CA: `ca_configmap` when set, else the Secret.
    pub fn ca_source(&self) -> CaSource {
        match &self.ca_configmap {
            Some(c) => CaSource::ConfigMap {
                name: c.name.clone(),
                key: c.key.clone(),
            },
            None => CaSource::Secret {
                name: self.ca_secret_name(),
                key: self.ca_secret.key.clone(),
            },
        }
    }
}

/// Where the CA certificate is read, resolved from the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    Secret { name: String, key: String },
    ConfigMap { name: String, key: String },
}

impl CaSource {
    /// `secret` or `configmap`, as the output names objects.
    pub fn kind(&self) -> &'static str {
        match self {
            CaSource::Secret { .. } => "secret",
            CaSource::ConfigMap { .. } => "configmap",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            CaSource::Secret { name, .. } | CaSource::ConfigMap { name, .. } => name,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            CaSource::Secret { key, .. } | CaSource::ConfigMap { key, .. } => key,
        }
    }

    /// The suite field that sets it.
    pub fn field(&self) -> &'static str {
        match self {
            CaSource::Secret { .. } => "database.ca_secret",
            CaSource::ConfigMap { .. } => "database.ca_configmap",
        }
    }
}

/// libpq's `sslmode` values the checks honour, with libpq's meanings. In every mode a server
/// asking for the password in cleartext or as an MD5 hash is refused before it gets anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without verifying the certificate; plain otherwise.
    /// Channel binding when the server offers it.
    Prefer,
    /// TLS or no session, without verifying the certificate ("encrypted, not verified"), and
    /// a SCRAM login bound to the TLS session (channel binding) or none.
    #[default]
    Require,
    /// As `require`, and the certificate chains to the CA (`ca_secret` or `ca_configmap`),
    /// any name.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the read-write Service.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server certificate is checked against the CA (and so the CA is read).
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CaSecret {
    /// `null`: `<cluster>-ca`, the CA Secret CloudNativePG generates.
    pub name: Option<String>,
    /// Its key holding the CA certificate (PEM).
    pub key: String,
}

/// A ConfigMap holding the CA certificate (PEM): the public half only, as trust-manager or
/// GitOps would publish it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaConfigMap {
    pub name: String,
    /// Its key holding the CA certificate (PEM).
    #[serde(default = "defaults::ca_key")]
    pub key: String,
}

impl Default for CaSecret {
    fn default() -> Self {
        CaSecret {
            name: None,
            key: "ca.crt".into(),
        }
    }
}

/// The tables `database::schema` requires by default: the ones LiteLLM reads on every request.
pub const CORE_TABLES: [&str; 4] = [
    "LiteLLM_VerificationToken",
    "LiteLLM_UserTable",
    "LiteLLM_TeamTable",
    "LiteLLM_SpendLogs",
];

impl Default for Database {
    fn default() -> Self {
        Database {
            cluster: "cloudnative-pg-cluster".into(),
            pods: Pods {
                selector: "cnpg.io/cluster=cloudnative-pg-cluster".into(),
                min_ready: 1,
                container: Some("postgres".into()),
            },
            service: ServiceRef {
                name: "cloudnative-pg-cluster-rw".into(),
                port: Some(5432),
            },
            secret: DatabaseSecret::default(),
            name: "litellm".into(),
            sslmode: SslMode::default(),
            ca_secret: CaSecret::default(),
            ca_configmap: None,
            tables: CORE_TABLES.map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSecret {
    pub name: String,
    pub username: String,
    pub password: String,
}

impl Default for DatabaseSecret {
    fn default() -> Self {
        DatabaseSecret {
            name: "cloudnative-pg-cluster-litellm".into(),
            username: "username".into(),
            password: "password".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vllm {
    pub namespace: String,
    pub service: ServiceRef,
    /// vLLM's own key; `null` where the harness may not read it (the key coupling is then only
    /// proven behaviourally by the vLLM layer).
    #[serde(default)]
    pub secret: Option<VllmSecret>,
    /// vLLM's pods, when they should be checked on their own (the Service's endpoints already
    /// prove some are ready).
    #[serde(default)]
    pub pods: Option<Pods>,
    /// The context window the trimming checks size their oversized prompt from, when vLLM's
    /// `/v1/models` cannot be read from where smokecheck runs; `null` reads it from vLLM.
    #[serde(default)]
    pub max_model_len: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VllmSecret {
    pub name: String,
    pub api_key: String,
}

/// A Secret the suite reads: the keys the deployment needs in it, and whether it gets a
/// `kubernetes::secrets::*` check of its own. The one list the secrets checks, the redactor
/// (which scrubs every value of every Secret read, not only these keys) and `smokecheck rbac`
/// all follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub namespace: String,
    pub name: String,
    pub required: Vec<String>,
    /// Checked on its own (and its SealedSecret's `Synced` reported); otherwise only read.
    pub checked: bool,
}

impl Suite {
    /// Every Secret the suite reads, in report order.
    pub fn secrets(&self) -> Vec<SecretUse> {
        let ns = &self.namespace;
        let l = &self.litellm;
        let mut out = vec![SecretUse {
            namespace: ns.clone(),
            name: l.secret.name.clone(),
            required: vec![l.secret.master_key.clone(), l.secret.vllm_api_key.clone()],
            checked: true,
        }];
        if let Some(k) = &l.chat_key {
            out.push(SecretUse {
                namespace: ns.clone(),
                name: k.secret.clone(),
                required: vec![k.key.clone()],
                checked: false,
            });
        }
        if let Some(db) = &self.database {
            out.push(SecretUse {
                namespace: ns.clone(),
                name: db.secret.name.clone(),
                required: vec![db.secret.username.clone(), db.secret.password.clone()],
                checked: true,
            });
            // Read only where it verifies; a ConfigMap replaces it entirely.
            if db.sslmode.verifies()
                && let CaSource::Secret { name, key } = db.ca_source()
            {
                out.push(SecretUse {
                    namespace: ns.clone(),
                    name,
                    required: vec![key],
                    checked: false,
                });
            }
        }
        for v in &self.vllm {
            if let Some(sec) = &v.secret {
                out.push(SecretUse {
                    namespace: v.namespace.clone(),
                    name: sec.name.clone(),
                    required: vec![sec.api_key.clone()],
                    checked: true,
                });
            }
        }
        out
    }

    /// Checks what serde cannot: returns the dotted field and what is wrong with it.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.version != super::VERSION {
            return Err((
                "version".into(),
                format!(
                    "unsupported suite version {} (this smokecheck reads version {})",
                    self.version,
                    super::VERSION
                ),
            ));
        }
        check_name("namespace", &self.namespace)?;
        let l = &self.litellm;
        check_selector("litellm.pods.selector", &l.pods.selector)?;
        check_name("litellm.service.name", &l.service.name)?;
        check_name("litellm.secret.name", &l.secret.name)?;
        check_key("litellm.secret.master_key", &l.secret.master_key)?;
        check_key("litellm.secret.vllm_api_key", &l.secret.vllm_api_key)?;
        check_name("litellm.config.configmap", &l.config.configmap)?;
        check_key("litellm.config.key", &l.config.key)?;
        if let Some(job) = &l.migration_job {
            check_name("litellm.migration_job", job)?;
        }
        if let Some(g) = &l.guardrail {
            not_empty("litellm.guardrail.name", &g.name)?;
            check_name("litellm.guardrail.configmap", &g.configmap)?;
            if !g.workdir.starts_with('/') {
                return Err((
                    "litellm.guardrail.workdir".into(),
                    format!("must be an absolute path, got {:?}", g.workdir),
                ));
            }
            if !(1..=Guardrail::MAX_MAX_WINDOW).contains(&g.max_window) {
                return Err((
                    "litellm.guardrail.max_window".into(),
                    format!(
                        "must be 1 to {} tokens, got {}",
                        Guardrail::MAX_MAX_WINDOW,
                        g.max_window
                    ),
                ));
            }
        }
        for (i, a) in l.aliases.iter().flatten().enumerate() {
            if a.is_empty() || a.contains(char::is_whitespace) {
                return Err((
                    format!("litellm.aliases[{i}]"),
                    format!("{a:?} is not a model alias"),
                ));
            }
            if l.aliases.iter().flatten().take(i).any(|b| b == a) {
                return Err((
                    format!("litellm.aliases[{i}]"),
                    format!("{a:?} is listed twice"),
                ));
            }
        }
        if let Some(k) = &l.chat_key {
            check_name("litellm.chat_key.secret", &k.secret)?;
            check_key("litellm.chat_key.key", &k.key)?;
        }
        if let Some(db) = &self.database {
            check_name("database.cluster", &db.cluster)?;
            check_selector("database.pods.selector", &db.pods.selector)?;
            check_name("database.service.name", &db.service.name)?;
            check_name("database.secret.name", &db.secret.name)?;
            check_key("database.secret.username", &db.secret.username)?;
            check_key("database.secret.password", &db.secret.password)?;
            not_empty("database.name", &db.name)?;
            if let Some(name) = &db.ca_secret.name {
                check_name("database.ca_secret.name", name)?;
            }
            check_key("database.ca_secret.key", &db.ca_secret.key)?;
            if let Some(c) = &db.ca_configmap {
                check_name("database.ca_configmap.name", &c.name)?;
                check_key("database.ca_configmap.key", &c.key)?;
                if db.ca_secret.name.is_some() {
                    return Err((
                        "database.ca_configmap".into(),
                        "the CA is read from one place: set database.ca_configmap or database.ca_secret.name, not both".into(),
                    ));
                }
            }
            if db.tables.is_empty() {
                return Err((
                    "database.tables".into(),
                    "must name at least one table (the default is LiteLLM's core tables)".into(),
                ));
            }
            for (i, t) in db.tables.iter().enumerate() {
                let field = format!("database.tables[{i}]");
                not_empty(&field, t)?;
                if t.contains('"') || t.chars().any(char::is_control) || t.len() > 63 {
                    return Err((
                        field,
                        format!(
                            "{t:?} is not a table name (as created, without quotes; at most 63 bytes)"
                        ),
                    ));
                }
            }
        }
        let p = &self.platform;
        for (field, w) in [
            ("platform.cnpg_operator", &p.cnpg_operator),
            (
                "platform.sealed_secrets_controller",
                &p.sealed_secrets_controller,
            ),
        ] {
            if let Some(w) = w {
                check_name(&format!("{field}.namespace"), &w.namespace)?;
                check_name(&format!("{field}.deployment"), &w.deployment)?;
            }
        }
        if let Some(a) = &p.argocd {
            check_name("platform.argocd.namespace", &a.namespace)?;
            check_name("platform.argocd.application", &a.application)?;
        }
        for (i, v) in self.vllm.iter().enumerate() {
            if self.vllm[..i]
                .iter()
                .any(|w| w.namespace == v.namespace && w.service.name == v.service.name)
            {
                return Err((
                    format!("vllm[{i}]"),
                    format!("service {}/{} is listed twice", v.namespace, v.service.name),
                ));
            }
            check_name(&format!("vllm[{i}].namespace"), &v.namespace)?;
            check_name(&format!("vllm[{i}].service.name"), &v.service.name)?;
            if let Some(s) = &v.secret {
                check_name(&format!("vllm[{i}].secret.name"), &s.name)?;
                check_key(&format!("vllm[{i}].secret.api_key"), &s.api_key)?;
            }
            if let Some(p) = &v.pods {
                check_selector(&format!("vllm[{i}].pods.selector"), &p.selector)?;
            }
            if v.max_model_len == Some(0) {
                return Err((
                    format!("vllm[{i}].max_model_len"),
                    "must be a positive number of tokens".into(),
                ));
            }
        }
        Ok(())
    }
}

fn not_empty(field: &str, value: &str) -> Result<(), (String, String)> {
    if value.trim().is_empty() {
        return Err((field.into(), "must not be empty".into()));
    }
    Ok(())
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn check_name(field: &str, value: &str) -> Result<(), (String, String)> {
    not_empty(field, value)?;
    let ok = value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err((
            field.into(),
            format!(
                "{value:?} is not a valid Kubernetes name (lowercase letters, digits, '-', '.')"
            ),
        ));
    }
    Ok(())
}

/// A Secret or ConfigMap data key.
fn check_key(field: &str, value: &str) -> Result<(), (String, String)> {
    not_empty(field, value)?;
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        return Err((
            field.into(),
            format!("{value:?} is not a valid data key (letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(())
}

/// A label selector as the API server takes it; only its gross shape is checked here, the
/// server is the judge of the rest.
fn check_selector(field: &str, value: &str) -> Result<(), (String, String)> {
    not_empty(field, value)?;
    if value.contains(char::is_whitespace) && !value.contains('(') {
        return Err((
            field.into(),
            format!("{value:?} is not a label selector (write `key=value,key2=value2`)"),
        ));
    }
    Ok(())
}

mod defaults {
    pub fn namespace() -> String {
        "litellm".into()
    }
    pub fn ca_key() -> String {
        "ca.crt".into()
    }
    pub fn one() -> u32 {
        1
    }
    pub fn database() -> Option<super::Database> {
        Some(super::Database::default())
    }
    pub fn vllm() -> Vec<super::Vllm> {
        vec![super::Vllm {
            namespace: "vllm".into(),
            service: super::ServiceRef {
                name: "vllm".into(),
                port: Some(80),
            },
            secret: Some(super::VllmSecret {
                name: "vllm-secrets".into(),
                api_key: "VLLM_API_KEY".into(),
            }),
            pods: None,
            max_model_len: None,
        }]
    }
}
