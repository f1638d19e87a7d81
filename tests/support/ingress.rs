//! The way users come in: builders for Ingress-related objects, and a model of what Traefik
//! serves for a scenario.
//!
//! The builders make what the `ingress-*` and `ingressroute-*` scenario folders hold (the
//! chart's Ingress with the deployment's Traefik annotations, Traefik's IngressClass and
//! IngressRoute, a TLS Secret), for the variations a test needs on top of a loaded scenario:
//! another host or backend, a certificate expiring in N days (certs.rs), an IngressRoute of
//! either Traefik API group.
//!
//! [`traefik`] says, for every host a scenario's Ingresses and IngressRoutes name, what
//! Traefik's `websecure` entrypoint does with a request for it: which certificates its store
//! holds (it picks one by SNI, else presents its self-signed default) and where the request
//! goes (a Service port, or its own 404 when it built no router). The stack's TLS fronts serve
//! exactly that (stack.rs). What it follows, from Traefik's Kubernetes providers:
//! - an Ingress is Traefik's when its class (`spec.ingressClassName`, else the
//!   `kubernetes.io/ingress.class` annotation, else the default IngressClass) names an
//!   IngressClass whose controller is `traefik.io/ingress-controller`; others are ignored;
//! - its routers get TLS from a `tls:` section or the `router.tls: "true"` annotation, on the
//!   entrypoints the `router.entrypoints` annotation names (all when absent);
//! - a backend whose Service or port does not exist builds no router (Traefik logs "service
//!   port not found" and skips it);
//! - certificates come from the Secrets a `tls:` section names, read from `tls.crt`/`tls.key`
//!   whatever the Secret's type; a missing Secret only loses its certificate; an IngressRoute
//!   with a `certResolver` gets its certificate from ACME (here: signed by the bed's test CA,
//!   standing in for Let's Encrypt).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::certs::{self, CertSpec, Generated};
use super::fake_kube::{Scenario, identity, str_at};

/// The host the deployment's users reach LiteLLM at (a reserved test name: it resolves nowhere).
pub const HOST: &str = "litellm.example.test";
/// The host's old name, which `ingress-cert-wrong-host`'s certificate still carries.
pub const OLD_HOST: &str = "llm.example.test";
/// The TLS Secret the Ingress names.
pub const TLS_SECRET: &str = "litellm-tls";
/// Traefik's IngressClass controller name.
pub const TRAEFIK_CONTROLLER: &str = "traefik.io/ingress-controller";
/// The ACME certificate resolver the IngressRoute scenarios name.
pub const ACME_RESOLVER: &str = "letsencrypt";
/// Traefik v3's CRD group, and v2's.
pub const TRAEFIK_IO: &str = "traefik.io";
pub const TRAEFIK_CONTAINO_US: &str = "traefik.containo.us";

const ENTRYPOINTS: &str = "traefik.ingress.kubernetes.io/router.entrypoints";
const ROUTER_TLS: &str = "traefik.ingress.kubernetes.io/router.tls";

/// An Ingress as the LiteLLM chart renders it.
#[derive(Debug, Clone)]
pub struct IngressSpec {
    pub namespace: String,
    pub name: String,
    /// `spec.ingressClassName`.
    pub class: Option<String>,
    pub host: String,
    pub service: String,
    pub port: u16,
    /// The Secret of its `tls:` section (covering `host`); `None`: no `tls:` section.
    pub tls_secret: Option<String>,
    /// The deployment's Traefik annotations: `router.entrypoints: websecure`, `router.tls: "true"`.
    pub traefik_tls: bool,
}

impl IngressSpec {
    /// The deployment's Ingress, as `ingress-healthy` holds it.
    pub fn litellm() -> IngressSpec {
        IngressSpec {
            namespace: "litellm".into(),
            name: "litellm".into(),
            class: Some("traefik".into()),
            host: HOST.into(),
            service: "litellm".into(),
            port: 4000,
            tls_secret: Some(TLS_SECRET.into()),
            traefik_tls: true,
        }
    }
}

/// A made-up but stable uid for a built object.
fn uid(kind: &str, namespace: &str, name: &str) -> String {
    // FNV-1a: the same object gets the same uid in every run.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{kind}/{namespace}/{name}").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let g = h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    format!(
        "{:08x}-{:04x}-5{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        g >> 52,
        g & 0xffff_ffff_ffff
    )
}

/// The Ingress `spec` describes, as the chart renders it and the apiserver stores it.
pub fn ingress(spec: &IngressSpec) -> Value {
    let mut annotations = json!({
        "argocd.argoproj.io/tracking-id":
            format!("litellm:networking.k8s.io/Ingress:{}/{}", spec.namespace, spec.name),
    });
    if spec.traefik_tls {
        annotations[ENTRYPOINTS] = json!("websecure");
        annotations[ROUTER_TLS] = json!("true");
    }
    let mut object = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "annotations": annotations,
            "creationTimestamp": "2026-10-02T14:20:11Z",
            "generation": 1,
            "labels": {
                "app.kubernetes.io/instance": "litellm",
                "app.kubernetes.io/managed-by": "Helm",
                "app.kubernetes.io/name": "litellm",
                "app.kubernetes.io/version": "v1.106.12",
                "helm.sh/chart": "litellm-helm-0.1.810",
            },
            "name": spec.name,
            "namespace": spec.namespace,
            "resourceVersion": "887944",
            "uid": uid("Ingress", &spec.namespace, &spec.name),
        },
        "spec": {
            "rules": [{
                "host": spec.host,
                "http": {"paths": [{
                    "backend": {"service": {"name": spec.service, "port": {"number": spec.port}}},
                    "path": "/",
                    "pathType": "Prefix",
                }]},
            }],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.40"}]}},
    });
    if let Some(class) = &spec.class {
        object["spec"]["ingressClassName"] = json!(class);
    }
    if let Some(secret) = &spec.tls_secret {
        object["spec"]["tls"] = json!([{"hosts": [spec.host], "secretName": secret}]);
    }
    object
}

/// Traefik's IngressClass, the cluster's default, as its Helm chart installs it.
pub fn ingress_class_traefik() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "annotations": {
                "ingressclass.kubernetes.io/is-default-class": "true",
                "meta.helm.sh/release-name": "traefik",
                "meta.helm.sh/release-namespace": "traefik",
            },
            "creationTimestamp": "2026-09-14T10:02:41Z",
            "generation": 1,
            "labels": {
                "app.kubernetes.io/instance": "traefik-traefik",
                "app.kubernetes.io/managed-by": "Helm",
                "app.kubernetes.io/name": "traefik",
                "helm.sh/chart": "traefik-37.1.1",
            },
            "name": "traefik",
            "resourceVersion": "412907",
            "uid": uid("IngressClass", "", "traefik"),
        },
        "spec": {"controller": TRAEFIK_CONTROLLER},
    })
}

/// A Secret holding `cert` in `tls.crt` and `tls.key`, of `type_` (`kubernetes.io/tls`, or
/// `Opaque` for one made with `kubectl create secret generic`).
pub fn tls_secret(namespace: &str, name: &str, type_: &str, cert: &Generated) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1",
        "data": {"tls.crt": b64(&cert.cert_pem), "tls.key": b64(&cert.key_pem)},
        "kind": "Secret",
        "metadata": {
            "annotations": {
                "argocd.argoproj.io/tracking-id": format!("litellm:/Secret:{namespace}/{name}"),
            },
            "creationTimestamp": "2026-10-02T14:20:05Z",
            "name": name,
            "namespace": namespace,
            "resourceVersion": "885822",
            "uid": uid("Secret", namespace, name),
        },
        "type": type_,
    })
}

/// Where an IngressRoute gets its certificate.
#[derive(Debug, Clone)]
pub enum RouteTls {
    /// `tls.secretName`.
    Secret(String),
    /// `tls.certResolver`: Traefik's ACME, no Secret in the namespace.
    Resolver(String),
}

/// A Traefik IngressRoute for one host on `websecure`.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// [`TRAEFIK_IO`] or [`TRAEFIK_CONTAINO_US`].
    pub group: String,
    pub namespace: String,
    pub name: String,
    pub host: String,
    /// The Service's namespace when it is not the route's (Traefik's cross-namespace services).
    pub service_namespace: Option<String>,
    pub service: String,
    pub port: u16,
    pub tls: RouteTls,
}

impl RouteSpec {
    /// The deployment's route as `ingressroute-acme` holds it.
    pub fn litellm() -> RouteSpec {
        RouteSpec {
            group: TRAEFIK_IO.into(),
            namespace: "litellm".into(),
            name: "litellm".into(),
            host: HOST.into(),
            service_namespace: None,
            service: "litellm".into(),
            port: 4000,
            tls: RouteTls::Resolver(ACME_RESOLVER.into()),
        }
    }
}

/// The IngressRoute `spec` describes (Traefik's CRDs declare no status).
pub fn ingress_route(spec: &RouteSpec) -> Value {
    let mut service = json!({"kind": "Service", "name": spec.service, "port": spec.port});
    if let Some(ns) = &spec.service_namespace {
        service["namespace"] = json!(ns);
    }
    let tls = match &spec.tls {
        RouteTls::Secret(name) => json!({"secretName": name}),
        RouteTls::Resolver(name) => json!({"certResolver": name}),
    };
    json!({
        "apiVersion": format!("{}/v1alpha1", spec.group),
        "kind": "IngressRoute",
        "metadata": {
            "annotations": {
                "argocd.argoproj.io/tracking-id":
                    format!("litellm:{}/IngressRoute:{}/{}", spec.group, spec.namespace, spec.name),
            },
            "creationTimestamp": "2026-10-02T14:20:11Z",
            "generation": 1,
            "name": spec.name,
            "namespace": spec.namespace,
            "resourceVersion": "887951",
            "uid": uid("IngressRoute", &spec.namespace, &spec.name),
        },
        "spec": {
            "entryPoints": ["websecure"],
            "routes": [{
                "kind": "Rule",
                "match": format!("Host(`{}`)", spec.host),
                "services": [service],
            }],
            "tls": tls,
        },
    })
}

/// Adds `object` to the scenario, replacing the object of the same identity (apiVersion, kind,
/// namespace, name) if there is one, as a scenario folder's overlay does.
pub fn put(scenario: &mut Scenario, object: Value) {
    let key = identity(&object);
    match scenario.objects.iter_mut().find(|o| identity(o) == key) {
        Some(existing) => *existing = object,
        None => scenario.objects.push(object),
    }
}

/// Where Traefik sends a request for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A port of a Service, as the Service declares it.
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
    /// No router for the host on `websecure`: Traefik's `404 page not found`.
    NotFound,
}

/// One host of the scenario, as Traefik's `websecure` entrypoint serves it.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: String,
    /// The objects naming the host (`Ingress litellm/litellm`), routed or not.
    pub via: Vec<String>,
    pub backend: Backend,
}

/// What Traefik serves for a scenario.
#[derive(Debug, Clone, Default)]
pub struct Traefik {
    /// One per host any Ingress or IngressRoute names, in the order first named.
    pub routes: Vec<Route>,
    /// The certificates in Traefik's store (chosen by SNI; its default when none covers it).
    pub store: Vec<Arc<Generated>>,
}

impl Traefik {
    pub fn route(&self, host: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.host == host)
    }

    fn name_host(&mut self, host: &str, via: &str) -> &mut Route {
        let at = match self.routes.iter().position(|r| r.host == host) {
            Some(at) => at,
            None => {
                self.routes.push(Route {
                    host: host.to_string(),
                    via: Vec::new(),
                    backend: Backend::NotFound,
                });
                self.routes.len() - 1
            }
        };
        let route = &mut self.routes[at];
        if !route.via.iter().any(|v| v == via) {
            route.via.push(via.to_string());
        }
        route
    }

    /// Routes `host` to `backend` unless an earlier router already does.
    fn route_to(&mut self, host: &str, via: &str, backend: Backend) {
        let route = self.name_host(host, via);
        if route.backend == Backend::NotFound {
            route.backend = backend;
        }
    }

    fn add_certificate(&mut self, cert: Arc<Generated>) {
        if !self.store.iter().any(|c| Arc::ptr_eq(c, &cert)) {
            self.store.push(cert);
        }
    }

    /// The certificate Traefik presents to a client asking for `server_name`.
    pub fn certificate_for(&self, server_name: &str) -> Arc<Generated> {
        self.store
            .iter()
            .find(|c| c.covers(server_name))
            .cloned()
            .unwrap_or_else(certs::traefik_default)
    }
}

/// What Traefik's `websecure` entrypoint serves for `scenario`'s Ingresses and IngressRoutes.
pub fn traefik(scenario: &Scenario) -> Traefik {
    let mut out = Traefik::default();
    let classes: Vec<&Value> = scenario
        .of_kind("IngressClass")
        .filter(|c| str_at(c, "/spec/controller") == Some(TRAEFIK_CONTROLLER))
        .collect();
    let default_class = classes
        .iter()
        .find(|c| {
            str_at(
                c,
                "/metadata/annotations/ingressclass.kubernetes.io~1is-default-class",
            ) == Some("true")
        })
        .and_then(|c| str_at(c, "/metadata/name"));
    for ing in scenario.objects.iter().filter(|o| {
        str_at(o, "/apiVersion") == Some("networking.k8s.io/v1")
            && str_at(o, "/kind") == Some("Ingress")
    }) {
        let ns = str_at(ing, "/metadata/namespace").unwrap_or_default();
        let via = format!(
            "Ingress {ns}/{}",
            str_at(ing, "/metadata/name").unwrap_or_default()
        );
        let class = str_at(ing, "/spec/ingressClassName")
            .or_else(|| str_at(ing, "/metadata/annotations/kubernetes.io~1ingress.class"))
            .or(default_class);
        let ours = class.is_some_and(|c| {
            classes
                .iter()
                .any(|k| str_at(k, "/metadata/name") == Some(c))
        });
        let annotation = |key: &str| {
            str_at(
                ing,
                &format!("/metadata/annotations/{}", key.replace('/', "~1")),
            )
        };
        let tls_sections = ing
            .pointer("/spec/tls")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let tls = !tls_sections.is_empty() || annotation(ROUTER_TLS) == Some("true");
        let on_websecure = annotation(ENTRYPOINTS)
            .is_none_or(|eps| eps.split(',').any(|e| e.trim() == "websecure"));
        let rules = ing
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for section in &tls_sections {
            for host in strings(section.get("hosts")) {
                out.name_host(&host, &via);
            }
            if ours
                && let Some(secret) = str_at(section, "/secretName")
                && let Some(cert) = secret_certificate(scenario, ns, secret)
            {
                out.add_certificate(cert);
            }
        }
        for rule in &rules {
            let Some(host) = str_at(rule, "/host") else {
                continue;
            };
            out.name_host(host, &via);
            if !(ours && tls && on_websecure) {
                continue;
            }
            let backend = rule
                .pointer("/http/paths/0/backend/service")
                .and_then(|svc| {
                    let name = str_at(svc, "/name")?;
                    let port = match svc.pointer("/port/number").and_then(Value::as_u64) {
                        Some(n) => PortRef::Number(n),
                        None => PortRef::Name(str_at(svc, "/port/name")?.to_string()),
                    };
                    resolve(scenario, ns, name, &port)
                })
                .unwrap_or(Backend::NotFound);
            out.route_to(host, &via, backend);
        }
    }
    let host_rule = regex::Regex::new(r"Host\(([^)]*)\)").expect("pattern");
    let quoted = regex::Regex::new(r"`([^`]+)`").expect("pattern");
    for route in scenario.of_kind("IngressRoute").filter(|o| {
        [TRAEFIK_IO, TRAEFIK_CONTAINO_US]
            .iter()
            .any(|g| str_at(o, "/apiVersion") == Some(&format!("{g}/v1alpha1")))
    }) {
        let ns = str_at(route, "/metadata/namespace").unwrap_or_default();
        let via = format!(
            "IngressRoute {ns}/{}",
            str_at(route, "/metadata/name").unwrap_or_default()
        );
        let entrypoints = strings(route.pointer("/spec/entryPoints"));
        let on_websecure = entrypoints.is_empty() || entrypoints.iter().any(|e| e == "websecure");
        let tls = route.pointer("/spec/tls").filter(|t| t.is_object());
        let mut hosts_of_route = Vec::new();
        for r in route
            .pointer("/spec/routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let rule = str_at(r, "/match").unwrap_or_default();
            let hosts: Vec<String> = host_rule
                .captures_iter(rule)
                .flat_map(|c| {
                    quoted
                        .captures_iter(c.get(1).map_or("", |m| m.as_str()))
                        .map(|q| q[1].to_string())
                        .collect::<Vec<_>>()
                })
                .collect();
            let backend = r
                .pointer("/services/0")
                .filter(|s| str_at(s, "/kind").is_none_or(|k| k == "Service"))
                .and_then(|svc| {
                    let name = str_at(svc, "/name")?;
                    let svc_ns = str_at(svc, "/namespace").unwrap_or(ns);
                    let port = match svc.get("port")? {
                        Value::Number(n) => PortRef::Number(n.as_u64()?),
                        Value::String(s) => PortRef::Name(s.clone()),
                        _ => return None,
                    };
                    resolve(scenario, svc_ns, name, &port)
                })
                .unwrap_or(Backend::NotFound);
            for host in &hosts {
                out.name_host(host, &via);
                if on_websecure && tls.is_some() {
                    out.route_to(host, &via, backend.clone());
                }
            }
            hosts_of_route.extend(hosts);
        }
        if let Some(tls) = tls {
            if let Some(secret) = str_at(tls, "/secretName") {
                if let Some(cert) = secret_certificate(scenario, ns, secret) {
                    out.add_certificate(cert);
                }
            } else if str_at(tls, "/certResolver").is_some() && !hosts_of_route.is_empty() {
                let hosts: Vec<&str> = hosts_of_route.iter().map(String::as_str).collect();
                out.add_certificate(certs::generate(&CertSpec::valid(&hosts)));
            }
        }
    }
    out
}

enum PortRef {
    Number(u64),
    Name(String),
}

/// The Service port `port` names, if the Service exists and declares it.
fn resolve(scenario: &Scenario, namespace: &str, service: &str, port: &PortRef) -> Option<Backend> {
    let svc = scenario.get("Service", Some(namespace), service)?;
    let declared = svc.pointer("/spec/ports").and_then(Value::as_array)?;
    let found = declared.iter().find(|p| match port {
        PortRef::Number(n) => p.get("port").and_then(Value::as_u64) == Some(*n),
        PortRef::Name(name) => str_at(p, "/name") == Some(name.as_str()),
    })?;
    Some(Backend::Service {
        namespace: namespace.to_string(),
        name: service.to_string(),
        port: u16::try_from(found.get("port")?.as_u64()?).ok()?,
    })
}

/// The bed certificate in a Secret's `tls.crt`, as Traefik loads it (whatever the Secret's type).
fn secret_certificate(scenario: &Scenario, namespace: &str, name: &str) -> Option<Arc<Generated>> {
    let pem = scenario.secret_value(namespace, name, "tls.crt")?;
    scenario.secret_value(namespace, name, "tls.key")?;
    certs::find_by_pem(&pem)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}
