//! How a named endpoint is reached: the suite's in-cluster address, `--endpoint NAME=URL`, or,
//! from a laptop where cluster DNS does not resolve, a port-forward through the API server to a
//! ready pod behind the Service (`--connect auto|direct|port-forward`, set up by
//! [`crate::portforward`]). Every address a check dials comes from here, so the output can say
//! where each endpoint was reached and why.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::plan::EndpointName;
use crate::portforward::{self, Forward, Lifetime};
use crate::suite::Suite;

/// Where an address came from, for the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The suite's in-cluster service address.
    Suite,
    /// `--endpoint` on the command line.
    Flag,
    /// A local port forwarded through the API server to a pod behind the Service.
    PortForward,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Suite => "in-cluster service address",
            Via::Flag => "--endpoint",
            Via::PortForward => "port-forward",
        })
    }
}

/// An HTTP endpoint: base URL without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    pub base: String,
    pub via: Via,
}

impl HttpEndpoint {
    /// `base` + `path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The database's rw endpoint: where to connect, and which name its certificate must carry
/// (the Service's, also when the connection goes to 127.0.0.1: libpq's host/hostaddr split).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEndpoint {
    pub host: String,
    pub port: u16,
    pub tls_name: String,
    pub via: Via,
}

/// A vLLM backend as the proxy config names it, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VllmTarget {
    pub namespace: String,
    pub service: String,
    /// The OpenAI base URL to call (`.../v1`), after any `--endpoint` override.
    pub endpoint: HttpEndpoint,
}

/// Every endpoint of a run.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub litellm: HttpEndpoint,
    pub database: Option<DbEndpoint>,
    suite_namespace: String,
    vllm_services: Vec<(String, String)>,
    overrides: BTreeMap<EndpointName, http::Uri>,
    /// Port-forwards in place, by (namespace, service).
    forwards: BTreeMap<(String, String), Forward>,
    /// Port-forwards that could not be set up, with why (for the output).
    pub forward_errors: Vec<String>,
    lifetime: Lifetime,
}

impl Endpoints {
    pub fn resolve(suite: &Suite, overrides: &BTreeMap<EndpointName, http::Uri>) -> Endpoints {
        let ns = &suite.namespace;
        let l = &suite.litellm.service;
        let litellm = match overrides.get(&EndpointName::Litellm) {
            Some(uri) => HttpEndpoint {
                base: uri.to_string().trim_end_matches('/').to_string(),
                via: Via::Flag,
            },
            None => HttpEndpoint {
                base: format!(
                    "http://{}.{ns}.svc.cluster.local:{}",
                    l.name,
                    l.port.unwrap_or(4000)
                ),
                via: Via::Suite,
            },
        };
        let database = suite.database.as_ref().map(|db| {
            let tls_name = format!("{}.{ns}.svc", db.service.name);
            let port = db.service.port.unwrap_or(5432);
            match overrides.get(&EndpointName::Database) {
                Some(uri) => DbEndpoint {
                    host: uri.host().unwrap_or("127.0.0.1").to_string(),
                    port: uri.port_u16().unwrap_or(5432),
                    tls_name,
                    via: Via::Flag,
                },
                None => DbEndpoint {
                    host: tls_name.clone(),
                    port,
                    tls_name,
                    via: Via::Suite,
                },
            }
        });
        Endpoints {
            litellm,
            database,
            suite_namespace: ns.clone(),
            vllm_services: suite
                .vllm
                .iter()
                .map(|v| (v.namespace.clone(), v.service.name.clone()))
                .collect(),
            overrides: overrides.clone(),
            forwards: BTreeMap::new(),
            forward_errors: Vec::new(),
            lifetime: Lifetime::default(),
        }
    }

    /// Where `--endpoint ingress:<host>=URL` reaches the external route for `host`: the URL's
    /// address (its host resolved here), with `host` kept for SNI and verification.
    pub fn ingress(&self, host: &str) -> Option<&http::Uri> {
        self.overrides
            .get(&EndpointName::Ingress(host.to_ascii_lowercase()))
    }

    /// The hosts `--endpoint ingress:<host>=URL` names.
    pub fn ingress_hosts(&self) -> Vec<String> {
        self.overrides
            .keys()
            .filter_map(|k| match k {
                EndpointName::Ingress(h) => Some(h.clone()),
                _ => None,
            })
            .collect()
    }

    /// The port-forwards in place.
    pub fn forwards(&self) -> impl Iterator<Item = &Forward> {
        self.forwards.values()
    }

    /// The run's hold on the port-forwards, to [`Lifetime::close`] them when it ends.
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime.clone()
    }

    /// Every name a forwarded Service answers to (`svc.ns.svc.cluster.local`, `svc.ns.svc`,
    /// `svc.ns`, and `svc` in the suite's namespace), with its local port: an `https://` URL
    /// keeps the Service's name (SNI, certificate) and the HTTP client connects it here.
    pub fn local_names(&self) -> Vec<(String, SocketAddr)> {
        self.forwards
            .values()
            .flat_map(|f| {
                let (svc, ns) = (&f.service, &f.namespace);
                let mut names = vec![
                    format!("{svc}.{ns}.svc.cluster.local"),
                    format!("{svc}.{ns}.svc"),
                    format!("{svc}.{ns}"),
                ];
                if *ns == self.suite_namespace {
                    names.push(svc.clone());
                }
                names.into_iter().map(move |n| (n, f.local))
            })
            .collect()
    }

    /// The in-cluster Services this run reaches, with their ports: (name, namespace, service,
    /// port), leaving out those given with `--endpoint`.
    fn services(&self, suite: &Suite) -> Vec<(EndpointName, String, String, u16)> {
        let ns = &suite.namespace;
        let mut out = Vec::new();
        if !self.overrides.contains_key(&EndpointName::Litellm) {
            let l = &suite.litellm.service;
            out.push((
                EndpointName::Litellm,
                ns.clone(),
                l.name.clone(),
                l.port.unwrap_or(4000),
            ));
        }
        if let Some(db) = &suite.database
            && !self.overrides.contains_key(&EndpointName::Database)
        {
            out.push((
                EndpointName::Database,
                ns.clone(),
                db.service.name.clone(),
                db.service.port.unwrap_or(5432),
            ));
        }
        let single = suite.vllm.len() == 1;
        for v in &suite.vllm {
            let name = if single {
                EndpointName::Vllm(None)
            } else {
                EndpointName::Vllm(Some((v.namespace.clone(), v.service.name.clone())))
            };
            let qualified = EndpointName::Vllm(Some((v.namespace.clone(), v.service.name.clone())));
            if !self.overrides.contains_key(&name) && !self.overrides.contains_key(&qualified) {
                out.push((
                    name,
                    v.namespace.clone(),
                    v.service.name.clone(),
                    v.service.port.unwrap_or(80),
                ));
            }
        }
        out
    }

    /// Whether the suite's in-cluster names resolve here (they do not on a laptop). Probes the
    /// first Service not given with `--endpoint`; with all of them given, there is nothing to
    /// forward.
    pub async fn cluster_dns_resolves(&self, suite: &Suite, timeout: std::time::Duration) -> bool {
        let Some((_, namespace, service, port)) = self.services(suite).into_iter().next() else {
            return true;
        };
        let host = format!("{service}.{namespace}.svc.cluster.local:{port}");
        match tokio::time::timeout(timeout, tokio::net::lookup_host(host)).await {
            Ok(Ok(mut addrs)) => addrs.next().is_some(),
            _ => false,
        }
    }

    /// Replaces every in-cluster address (not given with `--endpoint`) by a local port
    /// forwarded through the API server to a ready pod behind its Service. Finding the pods
    /// takes API reads, all of them within `timeout`; a Service not set up by then keeps its
    /// address, with the reason among the errors.
    pub async fn port_forward(&mut self, cluster: &Cluster, suite: &Suite, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let services = self.services(suite);
        // Each takes a few API round trips (the Service, its ready pod): all at once.
        let lifetime = &self.lifetime;
        let opened = futures::future::join_all(services.iter().map(
            |(_, namespace, service, port)| async move {
                tokio::time::timeout_at(
                    deadline,
                    portforward::open(cluster, namespace, service, *port, lifetime),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer from the API server within {}",
                        humantime::format_duration(timeout)
                    ))
                })
            },
        ))
        .await;
        for ((name, namespace, service, _), set_up) in services.into_iter().zip(opened) {
            match set_up {
                Ok(fwd) => {
                    let local = fwd.local;
                    match &name {
                        EndpointName::Litellm => {
                            self.litellm = HttpEndpoint {
                                base: format!("http://{local}"),
                                via: Via::PortForward,
                            };
                        }
                        EndpointName::Database => {
                            if let Some(db) = &mut self.database {
                                db.host = local.ip().to_string();
                                db.port = local.port();
                                db.via = Via::PortForward;
                            }
                        }
                        EndpointName::Vllm(_) | EndpointName::Ingress(_) => {}
                    }
                    self.forwards.insert((namespace, service), fwd);
                }
                Err(why) => self.forward_errors.push(format!(
                    "{name}: cannot port-forward to service {namespace}/{service}: {why}"
                )),
            }
        }
    }

    /// Resolves an `api_base` of the proxy config (`http://vllm.vllm.svc.cluster.local/v1`) to
    /// the suite's vLLM service it names, and the URL to call it at. Errors say why in one line.
    pub fn vllm(&self, api_base: &str) -> Result<VllmTarget, String> {
        let uri: http::Uri = api_base
            .parse()
            .map_err(|e| format!("api_base {api_base:?} is not a URL ({e})"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("api_base {api_base:?} has no host"))?;
        let (service, namespace) = service_of(host, &self.suite_namespace);
        if !self
            .vllm_services
            .iter()
            .any(|(ns, svc)| ns == &namespace && svc == &service)
        {
            let known = self
                .vllm_services
                .iter()
                .map(|(ns, svc)| format!("{ns}/{svc}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "api_base {api_base} points at service {namespace}/{service}, which is not one of the suite's vLLM services ({})",
                if known.is_empty() { "none" } else { &known }
            ));
        }
        // `vllm:<ns>/<svc>=URL` names the service even when the suite has only one, and the
        // CLI accepts it then: look for the qualified name first, then the short one.
        let qualified = EndpointName::Vllm(Some((namespace.clone(), service.clone())));
        let short = (self.vllm_services.len() == 1).then_some(EndpointName::Vllm(None));
        let chosen = self
            .overrides
            .get(&qualified)
            .or_else(|| short.and_then(|k| self.overrides.get(&k)));
        let path = uri.path().trim_end_matches('/').to_string();
        let forwarded = self.forwards.get(&(namespace.clone(), service.clone()));
        let endpoint = match (chosen, forwarded) {
            (Some(o), _) => {
                let o_path = o.path().trim_end_matches('/');
                let path = if o_path.is_empty() {
                    path.as_str()
                } else {
                    o_path
                };
                HttpEndpoint {
                    base: format!(
                        "{}://{}{path}",
                        o.scheme_str().unwrap_or("http"),
                        o.authority().map(|a| a.as_str()).unwrap_or_default()
                    ),
                    via: Via::Flag,
                }
            }
            // https keeps the Service's name for SNI and the certificate, at the local port (the
            // HTTP client connects that name to it: `local_names`); http goes to the address.
            (None, Some(fwd)) if uri.scheme_str() == Some("https") => HttpEndpoint {
                base: format!("https://{host}:{}{path}", fwd.local.port()),
                via: Via::PortForward,
            },
            (None, Some(fwd)) => HttpEndpoint {
                base: format!("http://{}{path}", fwd.local),
                via: Via::PortForward,
            },
            (None, None) => HttpEndpoint {
                base: api_base.trim_end_matches('/').to_string(),
                via: Via::Suite,
            },
        };
        Ok(VllmTarget {
            namespace,
            service,
            endpoint,
        })
    }
}

/// `svc.ns.svc.cluster.local`, `svc.ns.svc`, `svc.ns` or `svc` → (service, namespace).
fn service_of(host: &str, default_ns: &str) -> (String, String) {
    let trimmed = host
        .trim_end_matches('.')
        .trim_end_matches(".cluster.local")
        .trim_end_matches(".svc");
    match trimmed.split_once('.') {
        Some((svc, ns)) if !ns.contains('.') => (svc.to_string(), ns.to_string()),
        Some(_) => (host.to_string(), default_ns.to_string()),
        None => (trimmed.to_string(), default_ns.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite;

    fn suite() -> Suite {
        suite::parse(crate::suite::BUILTIN_SUITE, "builtin").expect("suite")
    }

    #[test]
    fn in_cluster_addresses_by_default() {
        let e = Endpoints::resolve(&suite(), &BTreeMap::new());
        assert_eq!(
            e.litellm.base,
            "http://litellm.litellm.svc.cluster.local:4000"
        );
        let db = e.database.clone().expect("db");
        assert_eq!(db.host, "cloudnative-pg-cluster-rw.litellm.svc");
        assert_eq!(db.tls_name, "cloudnative-pg-cluster-rw.litellm.svc");
        let v = e
            .vllm("http://vllm.vllm.svc.cluster.local/v1")
            .expect("vllm");
        assert_eq!((v.namespace.as_str(), v.service.as_str()), ("vllm", "vllm"));
        assert_eq!(v.endpoint.base, "http://vllm.vllm.svc.cluster.local/v1");
    }

    #[test]
    fn overrides_keep_the_service_name_for_tls_and_the_api_path() {
        let mut o = BTreeMap::new();
        o.insert(
            EndpointName::Database,
            "postgresql://127.0.0.1:6543".parse().unwrap(),
        );
        o.insert(
            EndpointName::Vllm(None),
            "http://127.0.0.1:8000".parse().unwrap(),
        );
        o.insert(
            EndpointName::Litellm,
            "http://127.0.0.1:4000/".parse().unwrap(),
        );
        let e = Endpoints::resolve(&suite(), &o);
        assert_eq!(e.litellm.url("/health"), "http://127.0.0.1:4000/health");
        let db = e.database.clone().expect("db");
        assert_eq!((db.host.as_str(), db.port), ("127.0.0.1", 6543));
        assert_eq!(db.tls_name, "cloudnative-pg-cluster-rw.litellm.svc");
        let v = e
            .vllm("http://vllm.vllm.svc.cluster.local/v1")
            .expect("vllm");
        assert_eq!(v.endpoint.base, "http://127.0.0.1:8000/v1");
        assert_eq!(v.endpoint.via, Via::Flag);
    }

    #[test]
    fn a_qualified_vllm_override_applies_with_a_single_backend_too() {
        let mut o = BTreeMap::new();
        o.insert(
            EndpointName::Vllm(Some(("vllm".into(), "vllm".into()))),
            "http://127.0.0.1:8001".parse().unwrap(),
        );
        let e = Endpoints::resolve(&suite(), &o);
        let v = e
            .vllm("http://vllm.vllm.svc.cluster.local/v1")
            .expect("vllm");
        assert_eq!(v.endpoint.base, "http://127.0.0.1:8001/v1");
    }

    #[test]
    fn an_https_api_base_through_a_port_forward_keeps_https_and_the_service_name() {
        let mut e = Endpoints::resolve(&suite(), &BTreeMap::new());
        let local: std::net::SocketAddr = "127.0.0.1:41234".parse().unwrap();
        e.forwards.insert(
            ("vllm".into(), "vllm".into()),
            Forward {
                namespace: "vllm".into(),
                service: "vllm".into(),
                pod: "vllm-0".into(),
                pod_port: 8000,
                local,
            },
        );
        let v = e
            .vllm("https://vllm.vllm.svc.cluster.local/v1")
            .expect("vllm");
        assert_eq!(
            v.endpoint.base,
            "https://vllm.vllm.svc.cluster.local:41234/v1"
        );
        let plain = e.vllm("http://vllm.vllm.svc/v1").expect("vllm");
        assert_eq!(plain.endpoint.base, "http://127.0.0.1:41234/v1");
        let names = e.local_names();
        for name in ["vllm.vllm.svc.cluster.local", "vllm.vllm.svc", "vllm.vllm"] {
            assert!(names.contains(&(name.to_string(), local)), "{names:?}");
        }
        // Only the suite's own namespace answers to the bare service name.
        assert!(!names.iter().any(|(n, _)| n == "vllm"), "{names:?}");
    }

    #[test]
    fn api_base_outside_the_suite_is_refused_with_reason() {
        let e = Endpoints::resolve(&suite(), &BTreeMap::new());
        let err = e
            .vllm("http://other.models.svc.cluster.local:8000/v1")
            .unwrap_err();
        assert!(
            err.contains(
                "service models/other, which is not one of the suite's vLLM services (vllm/vllm)"
            ),
            "{err}"
        );
    }
}
