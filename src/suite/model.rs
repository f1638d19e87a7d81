//! The suite's data model: its types, as serde reads them and the JSON Schema describes them,
//! and their defaults, which are the reference deployment (DESIGN.md). What serde cannot check
//! is in [`super::validate`].

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
    /// The way users come in: the Ingresses and Traefik IngressRoutes in front of the proxy,
    /// their certificates, and an HTTPS request through each host; `null` switches it off.
    pub ingress: Option<Ingress>,
}

/// Traefik's IngressRoute CRD groups (v1alpha1), newest first: v3's and v2's.
pub const TRAEFIK_GROUPS: [&str; 2] = ["traefik.io", "traefik.containo.us"];

/// The external route to the proxy. By default the checks find it: every Ingress
/// (`networking.k8s.io/v1`) and Traefik IngressRoute (`traefik.io`, `traefik.containo.us`) in
/// the namespace whose backend is the LiteLLM Service.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ingress {
    /// An Ingress or IngressRoute to check whatever its backend (the route users take, even
    /// when it no longer reaches LiteLLM); `null`: those whose backend is the LiteLLM Service.
    pub name: Option<String>,
    /// The hosts users reach the proxy at, each requested end to end
    /// (`https://<host>/health/liveliness`); `null`: every host of the routes found. A route
    /// naming one of them is checked whatever its backend.
    pub hosts: Option<Vec<String>>,
    /// A PEM file with the CA the route's certificate chains to, trusted instead of the
    /// system's roots (a private CA); `null`: the system's roots (`SSL_CERT_FILE` honoured).
    pub ca_file: Option<std::path::PathBuf>,
    /// The TLS Secrets the routes name (`spec.tls[].secretName`), the only Secrets of theirs
    /// `smokecheck rbac` grants a read of: a route naming another gets a 403 naming it.
    pub tls_secrets: Vec<String>,
    /// A certificate expiring within this many days is a warning.
    #[schemars(range(min = 1, max = 3650))]
    pub warn_days: u32,
    /// A certificate expiring within this many days is a failure.
    #[schemars(range(min = 0, max = 3650))]
    pub fail_days: u32,
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress {
            name: None,
            hosts: None,
            ca_file: None,
            tls_secrets: vec!["litellm-tls".into()],
            warn_days: 21,
            fail_days: 3,
        }
    }
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
            ingress: Some(Ingress::default()),
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
