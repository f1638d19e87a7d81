//! How the harness talks to the Kubernetes API: which config (as kubectl picks it), the client,
//! and one translation of API errors into check failures, so a 403 always names the verb, the
//! resource and the Role rule that is missing.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams, LogParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

use crate::check::{Cause, Failure, Outcome};

/// Which cluster to talk to, as the user said it (kubectl's flags).
#[derive(Debug, Clone, Default)]
pub struct KubeSelection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// Why no cluster could be reached at all; these end the run with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading kubeconfig {}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
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
}

/// Loads the config as kubectl does: `--kubeconfig`, else `KUBECONFIG`/`~/.kube/config`, else
/// the pod's service account. `--context` picks a context from the kubeconfig.
pub async fn config(sel: &KubeSelection) -> Result<(Config, String), ClusterError> {
    let options = KubeConfigOptions {
        context: sel.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kubeconfig = match &sel.kubeconfig {
        Some(path) => {
            let read = refuse_odd_utf16(path).and_then(|()| Kubeconfig::read_from(path));
            Some(read.map_err(|source| ClusterError::ReadKubeconfig {
                path: path.clone(),
                source,
            })?)
        }
        None if kubeconfig_available() => {
            for path in default_kubeconfigs() {
                refuse_odd_utf16(&path).map_err(ClusterError::Config)?;
            }
            Some(Kubeconfig::read().map_err(ClusterError::Config)?)
        }
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

/// The files `Kubeconfig::read` reads: those `KUBECONFIG` lists, else `~/.kube/config`.
fn default_kubeconfigs() -> Vec<PathBuf> {
    let listed: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        std::env::home_dir()
            .map(|h| h.join(".kube").join("config"))
            .into_iter()
            .collect()
    } else {
        listed
    }
}

/// kube 5 decodes a kubeconfig that starts with a UTF-16 byte-order mark two bytes at a time
/// and panics on an odd count (a UTF-16 file, as PowerShell's `>` writes one, cut short). Such
/// a file is refused before kube reads it, as kube refuses other invalid UTF-16. Only regular
/// files are looked at: reading from a pipe (`--kubeconfig <(...)`) would consume it.
fn refuse_odd_utf16(path: &Path) -> Result<(), kube::config::KubeconfigError> {
    let odd = || -> std::io::Result<bool> {
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        let mut bom = [0u8; 2];
        Ok(meta.is_file()
            && meta.len() % 2 == 1
            && file.read_exact(&mut bom).is_ok()
            && matches!(bom, [0xFF, 0xFE] | [0xFE, 0xFF]))
    };
    // A file that cannot be opened or read is kube's to report.
    if odd().unwrap_or(false) {
        return Err(kube::config::KubeconfigError::ReadConfig(
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid UTF-16: an odd number of bytes after the byte-order mark",
            ),
            path.to_path_buf(),
        ));
    }
    Ok(())
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
    config.connect_timeout = Some(timeout.min(Duration::from_secs(10)));
    // A little above the check timeout, so a slow answer is reported by the runner as a
    // timeout with the check's last observed state rather than as a transport error.
    config.read_timeout = Some(timeout + Duration::from_secs(2));
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    // Building the client runs an exec credential plugin (EKS, GKE) synchronously: off the
    // async threads, and bounded, so a plugin stuck on SSO cannot hang the run.
    let built = tokio::time::timeout(
        timeout,
        tokio::task::spawn_blocking(move || Client::try_from(config)),
    )
    .await;
    let client = match built {
        Ok(Ok(result)) => result.map_err(ClusterError::Client)?,
        Ok(Err(_)) | Err(_) => return Err(ClusterError::Credentials { timeout }),
    };
    let unreachable = |message: String| ClusterError::Unreachable {
        url: url.clone(),
        timeout,
        message,
    };
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Err(_) => return Err(unreachable("no answer".into())),
        Ok(Err(kube::Error::Api(s))) if s.code == 401 => {
            return Err(ClusterError::Unauthorized {
                url,
                message: s.message.clone(),
            });
        }
        Ok(Err(e @ kube::Error::Auth(_))) => {
            return Err(ClusterError::Unauthorized {
                url,
                message: error_chain(&e),
            });
        }
        Ok(Err(e)) => return Err(unreachable(error_chain(&e))),
        Ok(Ok(_)) => {}
    }
    let served = match tokio::time::timeout(timeout, served_versions(&client)).await {
        Ok(Ok(served)) => Some(served),
        _ => None,
    };
    Ok(Cluster {
        client,
        context,
        url,
        served,
    })
}

async fn served_versions(client: &Client) -> Result<BTreeSet<String>, kube::Error> {
    let mut served: BTreeSet<String> = client
        .list_core_api_versions()
        .await?
        .versions
        .into_iter()
        .collect();
    for group in client.list_api_groups().await?.groups {
        served.extend(group.versions.into_iter().map(|v| v.group_version));
    }
    Ok(served)
}

/// The error and its sources on one line, without repeating a cause a wrapper already printed.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
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
        match err {
            kube::Error::Api(status) if status.code == 403 => {
                let names = match (self.verb, self.name) {
                    ("get", Some(name)) => format!(", resourceNames: [\"{name}\"]"),
                    _ => String::new(),
                };
                Outcome::fail(Cause::Forbidden, format!("forbidden: cannot {}", self.what()))
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
            kube::Error::Api(status) if status.code == 401 => Outcome::fail(
                Cause::Unauthorized,
                format!(
                    "unauthorized: the API server rejected our credentials to {}",
                    self.what()
                ),
            )
            .details(status.message.clone())
            .hint("refresh the kube credentials (token expired?) and rerun"),
            kube::Error::Api(status) => Outcome::fail(
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
            kube::Error::Auth(e) => Outcome::fail(
                Cause::Unauthorized,
                format!("cannot {}: obtaining credentials failed", self.what()),
            )
            .details(error_chain(&e))
            .hint("run the kubeconfig's credential plugin by hand to see why it fails"),
            other => Outcome::fail(
                Cause::ApiUnreachable,
                format!("cannot {}: the API server did not answer", self.what()),
            )
            .details(error_chain(&other)),
        }
    }
}

/// Plural name and group of a typed resource, for [`Access`].
fn names<K: Resource<DynamicType = ()>>() -> (String, String) {
    (K::plural(&()).into_owned(), K::group(&()).into_owned())
}

impl Cluster {
    pub fn serves(&self, group_version: &str) -> Option<bool> {
        self.served.as_ref().map(|s| s.contains(group_version))
    }

    /// Gets one namespaced object; `None` when it does not exist.
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, Failure>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let (resource, group) = names::<K>();
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(|e| {
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

    /// Lists namespaced objects matching a label selector (all when `None`).
    pub async fn list<K>(&self, namespace: &str, selector: Option<&str>) -> Result<Vec<K>, Failure>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let (resource, group) = names::<K>();
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let mut params = ListParams::default();
        if let Some(sel) = selector {
            params = params.labels(sel);
        }
        api.list(&params).await.map(|l| l.items).map_err(|e| {
            Access {
                verb: "list",
                resource: &resource,
                group: &group,
                namespace,
                name: None,
            }
            .failure(e)
        })
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

    /// The last `lines` lines of a container's log (`previous`: of its last terminated run).
    pub async fn log_tail(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
        lines: i64,
    ) -> Result<String, Failure> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), namespace);
        let params = LogParams {
            container: Some(container.to_string()),
            previous,
            tail_lines: Some(lines),
            ..LogParams::default()
        };
        api.logs(pod, &params).await.map_err(|e| {
            Access {
                verb: "get",
                resource: "pods/log",
                group: "",
                namespace,
                name: Some(pod),
            }
            .failure(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_utf16_kubeconfig_with_an_odd_byte_count_is_an_error_not_a_panic() {
        // Found by fuzzing (fuzz/corpus/kubeconfig/utf16-odd-byte-count): kube reads the bytes
        // after a UTF-16 byte-order mark in pairs and indexes past the last one.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        for bom in [[0xFF, 0xFE], [0xFE, 0xFF]] {
            let mut bytes = bom.to_vec();
            bytes.extend(b"apiVersion: v1\n");
            std::fs::write(&path, &bytes).expect("writing the kubeconfig");
            let selection = KubeSelection {
                kubeconfig: Some(path.clone()),
                context: None,
            };
            let Err(err) = config(&selection).await else {
                panic!("a kubeconfig cut inside a UTF-16 character loaded");
            };
            let message = error_chain(&err);
            assert!(
                matches!(err, ClusterError::ReadKubeconfig { .. }),
                "{message}"
            );
            assert!(message.contains("invalid UTF-16"), "{message}");
        }
    }
}
