//! How the harness talks to the Kubernetes API: which config (as kubectl picks it), the client
//! (every answer bounded, see [`answer`]), and one translation of API errors into check
//! failures, so a 403 always names the verb, the resource and the Role rule that is missing.
//! Every Secret comes through here, and every value of it is registered with the run's redactor
//! before anyone sees it.
//!
//! Per run: at most [`crate::destinations::Caps::api_server`] requests in flight (the client's
//! [`SlotLayer`]), and one GET per object and one LIST per kind, namespace and selector, shared
//! by every check and port-forward that reads it (concurrent readers wait for the one read; a
//! read that failed or found nothing is made again by the next reader). A `--wait` retry expects the cluster to change: before one, the
//! runner has the reads forgotten ([`Cluster::forget_reads`]), so a re-sealed Secret is seen.

pub mod answer;

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, LogParams};
use kube::client::ClientBuilder;
use kube::config::KubeConfigOptions;
use kube::core::ObjectList;
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

use self::answer::{
    CapLayer, LIST_PAGE, LOG_LIMIT, MAX_LIST, MAX_LIST_PAGES, Unreadable, unreadable,
};
use crate::destinations::{DEFAULT_CAPS, SlotLayer, Slots};
use crate::kube_auth::{self, KubeconfigFileError, PluginError};
use crate::once::ReadOnce;
use crate::outcome::{Cause, Failure};
use crate::plan::KubeSelection;
use crate::secret::{Redactor, SecretValue};
use crate::text::{error_chain, size};

/// Why no cluster could be reached at all; these end the run with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigFileError),
    #[error("loading kube config")]
    Config(#[source] kube::config::KubeconfigError),
    #[error(
        "no Kubernetes config: KUBECONFIG is unset, ~/.kube/config does not exist and this is not a pod (pass --kubeconfig)"
    )]
    NoConfig,
    #[error("loading in-cluster config")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    /// kube's auth error, described without its command's env values or output.
    #[error("building the Kubernetes client: {0}")]
    ClientAuth(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("obtaining credentials (the kubeconfig's exec credential plugin) did not finish within {}", humantime::format_duration(*.timeout))]
    Credentials { timeout: Duration },
    #[error("the API server at {url} rejected our credentials (401 Unauthorized): {message}")]
    Unauthorized { url: String, message: String },
    #[error("cannot reach the API server at {url} within {timeout}: {message}", timeout = humantime::format_duration(*.timeout))]
    Unreachable {
        url: String,
        timeout: Duration,
        message: String,
    },
    /// It answered, with what the client refuses to read (too large, not JSON).
    #[error("reading the API server at {url}")]
    Unreadable {
        url: String,
        #[source]
        source: Unreadable,
    },
    /// It answered, but not with the Kubernetes API's JSON.
    #[error("the API server at {url} did not answer as the Kubernetes API does")]
    NotTheApi {
        url: String,
        #[source]
        source: kube::Error,
    },
}

impl ClusterError {
    /// The stable cause of the run's one `smokecheck::setup` entry.
    pub fn cause(&self) -> Cause {
        match self {
            ClusterError::Unauthorized { .. }
            | ClusterError::Credentials { .. }
            | ClusterError::ClientAuth(_)
            | ClusterError::Plugin(_) => Cause::Unauthorized,
            ClusterError::Unreachable { .. } => Cause::ApiUnreachable,
            ClusterError::Unreadable { source, .. } => source.cause(),
            ClusterError::NotTheApi { .. } => Cause::BadResponse,
            ClusterError::Kubeconfig(_)
            | ClusterError::Config(_)
            | ClusterError::NoConfig
            | ClusterError::InCluster(_)
            | ClusterError::Client(_) => Cause::Setup,
        }
    }
}

/// A connected client and what it is connected to.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The kube context's name, or `in-cluster`.
    pub context: String,
    pub url: String,
    /// `group/version`s the API server serves (core is `v1`); `None` when discovery failed.
    pub served: Option<BTreeSet<String>>,
    /// Learns every value of every Secret read through [`Cluster::get`] and [`Cluster::list`]
    /// (the run's redactor, see [`Cluster::with_redactor`]).
    redactor: Redactor,
    /// The objects and lists read so far, shared by every check of the run.
    read: Arc<ReadOnce>,
}

/// Loads the config as kubectl does: `--kubeconfig`, else `KUBECONFIG`/`~/.kube/config`, else
/// the pod's service account. `--context` picks a context from the kubeconfig.
pub async fn config(sel: &KubeSelection) -> Result<(Config, String), ClusterError> {
    let options = KubeConfigOptions {
        context: sel.context.clone(),
        ..KubeConfigOptions::default()
    };
    // Read here, not by kube: a syntax error is reported without the line (it may be a token).
    let kubeconfig = match &sel.kubeconfig {
        Some(path) => Some(kube_auth::read(path)?),
        None if kubeconfig_available() => Some(kube_auth::read_default()?),
        None => None,
    };
    match kubeconfig {
        Some(kc) => {
            let context = sel
                .context
                .clone()
                .or_else(|| kc.current_context.clone())
                .unwrap_or_default();
            let config = Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(ClusterError::Config)?;
            Ok((config, context))
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            let config = Config::incluster().map_err(ClusterError::InCluster)?;
            Ok((config, "in-cluster".to_string()))
        }
        None => Err(ClusterError::NoConfig),
    }
}

/// `localhost` or a loopback address.
fn is_local_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn kubeconfig_available() -> bool {
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    std::env::home_dir().is_some_and(|h| h.join(".kube").join("config").exists())
}

/// Connects and proves the API server answers and accepts us, within `timeout`.
pub async fn connect(sel: &KubeSelection, timeout: Duration) -> Result<Cluster, ClusterError> {
    let (mut config, context) = config(sel).await?;
    // kube sends API traffic through HTTPS_PROXY (minus NO_PROXY), as kubectl does; like Go's
    // ProxyFromEnvironment, never for an API server on this machine.
    if config.cluster_url.host().is_some_and(is_local_host) {
        config.proxy_url = None;
    }
    config.connect_timeout = Some(timeout.min(Duration::from_secs(10)));
    // A little above the check timeout, so a slow answer is reported by the runner as a
    // timeout with the check's last observed state rather than as a transport error.
    config.read_timeout = Some(timeout + Duration::from_secs(2));
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    // An exec credential plugin (EKS, GKE) runs here, not inside kube: bounded, killed when it
    // overstays, and its failure reported without its env values or output (kube_auth).
    if kube_auth::uses_exec(&config.auth_info) {
        tokio::time::timeout(timeout, kube_auth::resolve_exec(&mut config.auth_info))
            .await
            .map_err(|_| ClusterError::Credentials { timeout })??;
    }
    // A legacy auth-provider command would still run inside kube, synchronously: off the async
    // threads, and bounded.
    let built =
        tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || client(config))).await;
    let client = match built {
        Ok(Ok(Err(kube::Error::Auth(e)))) => {
            return Err(ClusterError::ClientAuth(kube_auth::describe_auth_error(&e)));
        }
        Ok(Ok(result)) => result.map_err(ClusterError::Client)?,
        Ok(Err(_)) | Err(_) => return Err(ClusterError::Credentials { timeout }),
    };
    let unreachable = |message: String| ClusterError::Unreachable {
        url: url.clone(),
        timeout,
        message,
    };
    // The version proves it is an API server that lets us in; what it serves (the API
    // groups, for the CRD checks) is asked at the same time.
    let (version, served) = tokio::join!(
        tokio::time::timeout(timeout, client.apiserver_version()),
        tokio::time::timeout(timeout, served_versions(&client)),
    );
    match version {
        Err(_) => return Err(unreachable("no answer".into())),
        Ok(Err(kube::Error::Api(s))) if s.code == 401 => {
            return Err(ClusterError::Unauthorized {
                url,
                message: s.message.clone(),
            });
        }
        Ok(Err(kube::Error::Auth(e))) => {
            return Err(ClusterError::Unauthorized {
                url,
                message: kube_auth::describe_auth_error(&e),
            });
        }
        Ok(Err(e)) => {
            if let Some(u) = unreadable(&e) {
                return Err(ClusterError::Unreadable {
                    url,
                    source: u.clone(),
                });
            }
            if matches!(e, kube::Error::SerdeError(_) | kube::Error::FromUtf8(_)) {
                return Err(ClusterError::NotTheApi { url, source: e });
            }
            return Err(unreachable(error_chain(&e)));
        }
        Ok(Ok(_)) => {}
    }
    let served = match served {
        Ok(Ok(served)) => Some(served),
        _ => None,
    };
    Ok(Cluster {
        client,
        context,
        url,
        served,
        redactor: Redactor::default(),
        read: Arc::default(),
    })
}

/// kube's default client with every answer bounded ([`answer::CapLayer`]) and the API
/// server's cap of requests in flight ([`SlotLayer`]), per client: a client is one run's.
fn client(config: Config) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CapLayer)
        .with_layer(&SlotLayer(Slots::new(DEFAULT_CAPS.api_server)))
        .build())
}

async fn served_versions(client: &Client) -> Result<BTreeSet<String>, kube::Error> {
    let (core, groups) =
        tokio::try_join!(client.list_core_api_versions(), client.list_api_groups())?;
    let mut served: BTreeSet<String> = core.versions.into_iter().collect();
    for group in groups.groups {
        served.extend(group.versions.into_iter().map(|v| v.group_version));
    }
    Ok(served)
}

/// What a request tried to do, for error messages and RBAC hints.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    pub verb: &'static str,
    /// Plural resource name, e.g. `pods`, `pods/log`, `clusters`.
    pub resource: &'a str,
    /// API group; empty for core.
    pub group: &'a str,
    /// Empty for a cluster-scoped resource (Namespaces).
    pub namespace: &'a str,
    pub name: Option<&'a str>,
}

impl Access<'_> {
    fn what(&self) -> String {
        let resource = if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        match (self.name, self.namespace.is_empty()) {
            (Some(name), true) => format!("{} {resource}/{name}", self.verb),
            (Some(name), false) => format!("{} {resource} {}/{name}", self.verb, self.namespace),
            (None, true) => format!("{} {resource} at cluster scope", self.verb),
            (None, false) => format!("{} {resource} in namespace {}", self.verb, self.namespace),
        }
    }

    /// Translates an API error into a failure of the check that made the request.
    pub fn failure(&self, err: kube::Error) -> Failure {
        if let Some(u) = unreadable(&err) {
            return self.unreadable(u);
        }
        match err {
            kube::Error::Api(status) if status.code == 403 => {
                let names = match (self.verb, self.name) {
                    ("get", Some(name)) => format!(", resourceNames: [\"{name}\"]"),
                    _ => String::new(),
                };
                Failure::new(Cause::Forbidden, format!("forbidden: cannot {}", self.what()))
                    .details(status.message.clone())
                    .hint({
                        let rule = format!(
                            "{{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [\"{}\"]{names}}}",
                            self.group, self.resource, self.verb
                        );
                        if self.namespace.is_empty() {
                            format!("the identity smokecheck runs as lacks a ClusterRole rule (bound by a ClusterRoleBinding): {rule}")
                        } else {
                            format!("the identity smokecheck runs as lacks a Role rule in namespace {}: {rule}", self.namespace)
                        }
                    })
            }
            kube::Error::Api(status) if status.code == 401 => Failure::new(
                Cause::Unauthorized,
                format!(
                    "unauthorized: the API server rejected our credentials to {}",
                    self.what()
                ),
            )
            .details(status.message.clone())
            .hint("refresh the kube credentials (token expired?) and rerun"),
            kube::Error::Api(status) => Failure::new(
                Cause::ApiError,
                format!(
                    "cannot {}: HTTP {} {}",
                    self.what(),
                    status.code,
                    if status.reason.is_empty() {
                        "error"
                    } else {
                        &status.reason
                    }
                ),
            )
            .details(status.message.clone()),
            kube::Error::Auth(e) => Failure::new(
                Cause::Unauthorized,
                format!("cannot {}: obtaining credentials failed", self.what()),
            )
            .details(kube_auth::describe_auth_error(&e))
            .hint("run the kubeconfig's credential plugin by hand to see why it fails"),
            // It answered: with something that is not the API's JSON.
            e @ (kube::Error::SerdeError(_) | kube::Error::FromUtf8(_)) => Failure::new(
                Cause::BadResponse,
                format!(
                    "cannot {}: the API server's answer is not the API's JSON",
                    self.what()
                ),
            )
            .details(error_chain(&e)),
            other => Failure::new(
                Cause::ApiUnreachable,
                format!("cannot {}: the API server did not answer", self.what()),
            )
            .details(error_chain(&other)),
        }
    }

    /// A LIST whose pages together are more than the run holds.
    fn over_budget(&self, why: String) -> Failure {
        Failure::new(Cause::BodyTooLarge, format!("cannot {}: {why}", self.what())).hint(
            "the selector matches far more objects than a LiteLLM deployment has: check the suite's selector",
        )
    }

    /// An answer refused unread or cut at its cap.
    fn unreadable(&self, u: &Unreadable) -> Failure {
        let f = Failure::new(u.cause(), format!("cannot {}: {u}", self.what()));
        match u {
            Unreadable::TooLarge { .. } => f.hint(
                "an honest API server never answers this much: look for a proxy or gateway in front of it, or a runaway object",
            ),
            Unreadable::NotJson { .. } => f.hint(
                "the kubeconfig's server address may point at a proxy or SSO gateway rather than the API server",
            ),
        }
    }

    /// A failure while reading an answer's body as a stream (logs).
    fn read_failure(&self, err: &std::io::Error) -> Failure {
        if let Some(u) = unreadable(err) {
            return self.unreadable(u);
        }
        Failure::new(
            Cause::ApiUnreachable,
            format!(
                "cannot {}: the API server did not finish its answer",
                self.what()
            ),
        )
        .details(error_chain(err))
    }
}

/// Plural name and group of a typed resource, for [`Access`].
/// A namespaced Kubernetes object as the cluster reads it: typed, decoded from JSON, and kept
/// for the run's other readers (so shared across tasks).
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

fn names<K: Resource<DynamicType = ()>>() -> (String, String) {
    (K::plural(&()).into_owned(), K::group(&()).into_owned())
}

impl Cluster {
    /// Registers the values of every Secret this client reads with `redactor`.
    pub fn with_redactor(mut self, redactor: Redactor) -> Cluster {
        self.redactor = redactor;
        self
    }

    /// The redactor the Secrets it reads are registered with.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The one place Secrets enter the run: whichever check reads one, and whether or not an
    /// earlier read of it failed, all its values (not only the keys the suite names) are
    /// scrubbed from every later text.
    fn learn<K: Any>(&self, object: &K) {
        if let Some(secret) = (object as &dyn Any).downcast_ref::<Secret>() {
            let values: Vec<SecretValue> = secret
                .data
                .iter()
                .flatten()
                .map(|(_, v)| SecretValue::new(v.0.clone()))
                .chain(
                    secret
                        .string_data
                        .iter()
                        .flatten()
                        .map(|(_, v)| SecretValue::new(v.clone().into_bytes())),
                )
                .collect();
            self.redactor.register_all(&values);
        }
    }

    /// Forgets every object read so far: the next reader of each reads it again.
    pub fn forget_reads(&self) {
        self.read.forget();
    }

    pub fn serves(&self, group_version: &str) -> Option<bool> {
        self.served.as_ref().map(|s| s.contains(group_version))
    }

    /// Gets one namespaced object; `None` when it does not exist. Read once per run (see the
    /// module header).
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, Failure>
    where
        K: Object,
    {
        let key = format!("{}/{namespace}/{name}", std::any::type_name::<K>());
        // Not found is no answer to keep: the next reader asks again.
        let got = self
            .read
            .get_or_read(&key, || async {
                match self.fetch::<K>(namespace, name).await {
                    Ok(Some(object)) => Ok(object),
                    other => Err(other),
                }
            })
            .await;
        match got {
            Ok(object) => Ok(Some(object)),
            Err(other) => other,
        }
    }

    /// One GET of one namespaced object.
    async fn fetch<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, Failure>
    where
        K: Object,
    {
        let (resource, group) = names::<K>();
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let got = api.get_opt(name).await;
        if let Ok(Some(object)) = &got {
            self.learn(object);
        }
        got.map_err(|e| {
            Access {
                verb: "get",
                resource: &resource,
                group: &group,
                namespace,
                name: Some(name),
            }
            .failure(e)
        })
    }

    /// Lists namespaced objects matching a label selector (all when `None`), in pages of
    /// [`LIST_PAGE`], within [`MAX_LIST`] bytes for all pages together. Listed once per run (see
    /// the module header).
    pub async fn list<K>(&self, namespace: &str, selector: Option<&str>) -> Result<Vec<K>, Failure>
    where
        K: Object,
    {
        let key = format!(
            "{}/{namespace}?{}",
            std::any::type_name::<K>(),
            selector.unwrap_or_default()
        );
        self.read
            .get_or_read(&key, || self.list_pages(namespace, selector))
            .await
    }

    /// One LIST, page by page.
    async fn list_pages<K>(
        &self,
        namespace: &str,
        selector: Option<&str>,
    ) -> Result<Vec<K>, Failure>
    where
        K: Object,
    {
        let (resource, group) = names::<K>();
        let access = Access {
            verb: "list",
            resource: &resource,
            group: &group,
            namespace,
            name: None,
        };
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let mut params = ListParams::default().limit(LIST_PAGE);
        if let Some(sel) = selector {
            params = params.labels(sel);
        }
        let mut items = Vec::new();
        let mut read = 0u64;
        for page in 1..=MAX_LIST_PAGES {
            let request = kube::core::Request::new(api.resource_url())
                .list(&params)
                .map_err(|e| access.failure(kube::Error::BuildRequest(e)))?;
            // As text first, so the pages' sizes add up to a bound on what the list holds.
            let text = self
                .client
                .request_text(request)
                .await
                .map_err(|e| access.failure(e))?;
            read += text.len() as u64;
            if read > MAX_LIST {
                return Err(access.over_budget(format!(
                    "its pages are over {} together (read {} in {page} pages, then stopped)",
                    size(MAX_LIST),
                    size(read)
                )));
            }
            let list: ObjectList<K> = serde_json::from_str(&text)
                .map_err(|e| access.failure(kube::Error::SerdeError(e)))?;
            for object in &list.items {
                self.learn(object);
            }
            items.extend(list.items);
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(items),
            }
        }
        Err(access.over_budget(format!(
            "the API server was still paging after {MAX_LIST_PAGES} pages of {LIST_PAGE} (stopped there)"
        )))
    }

    /// The EndpointSlices of a Service (by the label the EndpointSlice controller sets).
    pub async fn endpoint_slices(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<Vec<k8s_openapi::api::discovery::v1::EndpointSlice>, Failure> {
        let selector = format!("kubernetes.io/service-name={service}");
        self.list(namespace, Some(&selector)).await
    }

    /// The last `lines` lines of a container's log (`previous`: of its last terminated run),
    /// at most [`LOG_LIMIT`] bytes of them. A log is bytes, not always UTF-8 (an application's
    /// Latin-1, a character the byte limit cut in two): it is decoded lossily.
    pub async fn log_tail(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
        lines: i64,
    ) -> Result<String, Failure> {
        use futures::AsyncReadExt as _;

        let access = Access {
            verb: "get",
            resource: "pods/log",
            group: "",
            namespace,
            name: Some(pod),
        };
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), namespace);
        let params = LogParams {
            container: Some(container.to_string()),
            previous,
            tail_lines: Some(lines),
            limit_bytes: i64::try_from(LOG_LIMIT).ok(),
            ..LogParams::default()
        };
        let stream = api
            .log_stream(pod, &params)
            .await
            .map_err(|e| access.failure(e))?;
        let mut bytes = Vec::new();
        std::pin::pin!(stream)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| access.read_failure(&e))?;
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        // The kubelet keeps the tail's first bytes: say so, or the lines after the cut seem
        // never to have been written.
        if bytes.len() as u64 >= LOG_LIMIT {
            text.push_str(&format!(
                "\n[log cut at {} (limitBytes): the lines after this were not read]",
                size(LOG_LIMIT)
            ));
        }
        Ok(text)
    }
}
