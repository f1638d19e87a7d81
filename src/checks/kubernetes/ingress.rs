//! The way users come in, as the cluster declares it: the Ingresses (`networking.k8s.io/v1`)
//! and Traefik IngressRoutes (`traefik.io`, and Traefik v2's `traefik.containo.us`) whose
//! backend is the LiteLLM Service (or that the suite names), found once per run
//! ([`discover`]), and `kubernetes::ingress::<name>` for each: the backend is a port of the
//! proxy's Service, the class exists, Traefik's TLS annotations agree with the TLS section, and
//! each TLS Secret exists, is `kubernetes.io/tls`, and holds a certificate that covers every
//! host and is not about to expire. A route whose certificate comes from an ACME resolver has
//! no Secret: that certificate is left to `e2e::ingress::<host>`.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

use crate::certificate::{self, CertFacts};
use crate::check::Check;
use crate::cluster::{Access, Cluster};
use crate::context::Context;
use crate::outcome::{Cause, Failure, Layer, Passed, ProbeResult, Verdict, Warning};
use crate::suite::{Ingress as IngressSuite, Suite, TRAEFIK_GROUPS};

use super::in_namespace;

const ROUTER_TLS: &str = "traefik.ingress.kubernetes.io/router.tls";
const ROUTER_ENTRYPOINTS: &str = "traefik.ingress.kubernetes.io/router.entrypoints";
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The most routes of one kind a run reads (a page; more is not a deployment's front).
const MAX_ROUTES: u32 = 200;

/// `kubernetes::ingress::<name>`.
pub fn ingress_name(route: &str) -> String {
    format!("kubernetes::ingress::{route}")
}

/// A route found in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None` for an Ingress; the CRD group for an IngressRoute.
    pub group: Option<&'static str>,
    pub name: String,
    pub hosts: Vec<String>,
}

impl Route {
    /// How a report names it: `Ingress litellm/x`, `IngressRoute litellm/x (traefik.io)`.
    fn describe(&self, ns: &str) -> String {
        match self.group {
            None => format!("Ingress {ns}/{}", self.name),
            Some(g) => format!("IngressRoute {ns}/{} ({g})", self.name),
        }
    }
}

/// What [`discover`] found: the routes to check, or why they could not be listed.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub routes: Vec<Route>,
    pub problem: Option<Failure>,
}

impl Discovered {
    /// The hosts to request end to end: the suite's, else every host of the routes.
    pub fn hosts(&self, suite: &IngressSuite) -> Vec<String> {
        match &suite.hosts {
            Some(h) => h.clone(),
            None => {
                let set: BTreeSet<String> =
                    self.routes.iter().flat_map(|r| r.hosts.clone()).collect();
                set.into_iter().collect()
            }
        }
    }
}

/// Lists the namespace's Ingresses, and its IngressRoutes where Traefik's CRDs are served, and
/// keeps those in front of LiteLLM: a backend that is the proxy's Service, or the suite's name
/// or one of its hosts.
pub async fn discover(cluster: &Cluster, suite: &Suite, ingress: &IngressSuite) -> Discovered {
    let ns = suite.namespace.clone();
    let service = suite.litellm.service.name.clone();
    let wanted = |name: &str, hosts: &[String], backends: &[(Option<String>, String)]| {
        ingress.name.as_deref() == Some(name)
            || ingress
                .hosts
                .iter()
                .flatten()
                .any(|h| hosts.iter().any(|x| x.eq_ignore_ascii_case(h)))
            || backends
                .iter()
                .any(|(bns, b)| *b == service && bns.as_deref().is_none_or(|n| n == ns))
    };
    let mut out = Discovered::default();
    match cluster.list::<Ingress>(&ns, None).await {
        Ok(list) => {
            for i in list {
                let name = i.metadata.name.clone().unwrap_or_default();
                let hosts = ingress_hosts(&i);
                let backends: Vec<_> = ingress_backends(&i)
                    .into_iter()
                    .map(|b| (None, b.service))
                    .collect();
                if wanted(&name, &hosts, &backends) {
                    out.routes.push(Route {
                        group: None,
                        name,
                        hosts,
                    });
                }
            }
        }
        Err(f) => {
            out.problem = Some(f);
            return out;
        }
    }
    for group in TRAEFIK_GROUPS {
        if cluster.serves(&format!("{group}/v1alpha1")) != Some(true) {
            continue;
        }
        let api = route_api(cluster, &ns, group);
        match api.list(&ListParams::default().limit(MAX_ROUTES)).await {
            Ok(list) => {
                for o in list.items {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    let spec = o.data.get("spec").cloned().unwrap_or(Value::Null);
                    let hosts = route_hosts(&spec);
                    let backends: Vec<_> = route_services(&spec)
                        .into_iter()
                        .map(|s| (s.namespace, s.name))
                        .collect();
                    if wanted(&name, &hosts, &backends) {
                        out.routes.push(Route {
                            group: Some(group),
                            name,
                            hosts,
                        });
                    }
                }
            }
            Err(e) => {
                out.problem = Some(
                    Access {
                        verb: "list",
                        resource: "ingressroutes",
                        group,
                        namespace: &ns,
                        name: None,
                    }
                    .failure(e),
                );
                return out;
            }
        }
    }
    out
}

fn route_api(cluster: &Cluster, ns: &str, group: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, "v1alpha1", "IngressRoute");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "ingressroutes");
    Api::namespaced_with(cluster.client.clone(), ns, &ar)
}

/// The checks for what [`discover`] found: one per route, or one saying why none could be
/// listed. Two routes of one name (an Ingress and an IngressRoute) are told apart by kind.
pub fn checks(discovered: &Discovered, suite: &IngressSuite, ns: &str) -> Vec<Check> {
    if let Some(problem) = &discovered.problem {
        let f = problem.clone();
        return vec![in_namespace(
            Check::new(
                "kubernetes::ingress",
                Layer::Kubernetes,
                move |_cx, _attempt| {
                    let f = f.clone();
                    async move { Err(f) }
                },
            ),
            ns,
        )];
    }
    let suite = Arc::new(suite.clone());
    discovered
        .routes
        .iter()
        .map(|route| {
            let twin = discovered
                .routes
                .iter()
                .filter(|r| r.name == route.name)
                .count()
                > 1;
            let label = match (twin, route.group) {
                (true, Some(_)) => format!("ingressroute/{}", route.name),
                _ => route.name.clone(),
            };
            let (route, suite) = (route.clone(), Arc::clone(&suite));
            in_namespace(
                Check::new(
                    ingress_name(&label),
                    Layer::Kubernetes,
                    move |cx, attempt| {
                        let (route, suite) = (route.clone(), Arc::clone(&suite));
                        async move {
                            let ns = cx.suite.namespace.clone();
                            attempt.observe(format!("reading {}", route.describe(&ns)));
                            match route.group {
                                None => judge_ingress(&cx, &suite, &route.name).await,
                                Some(group) => judge_route(&cx, &suite, group, &route.name).await,
                            }
                        }
                    },
                ),
                ns,
            )
        })
        .collect()
}

/// A backend as a route names it.
#[derive(Debug, Clone)]
struct Backend {
    /// Where in the object it is (`spec.rules[0].http.paths[0].backend.service`).
    field: String,
    service: String,
    /// The port by number or name.
    port: Option<PortRef>,
}

#[derive(Debug, Clone, PartialEq)]
enum PortRef {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => write!(f, "{n:?}"),
        }
    }
}

fn ingress_hosts(i: &Ingress) -> Vec<String> {
    let spec = i.spec.as_ref();
    let mut hosts: Vec<String> = spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.host.clone())
        .collect();
    for t in spec.and_then(|s| s.tls.as_ref()).into_iter().flatten() {
        hosts.extend(t.hosts.iter().flatten().cloned());
    }
    let mut seen = BTreeSet::new();
    hosts.retain(|h| seen.insert(h.to_ascii_lowercase()));
    hosts
}

fn ingress_backends(i: &Ingress) -> Vec<Backend> {
    let Some(spec) = i.spec.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let port = |p: Option<&k8s_openapi::api::networking::v1::ServiceBackendPort>| {
        p.and_then(|p| match (&p.name, p.number) {
            (Some(n), _) if !n.is_empty() => Some(PortRef::Name(n.clone())),
            (_, Some(n)) => Some(PortRef::Number(n)),
            _ => None,
        })
    };
    if let Some(s) = spec
        .default_backend
        .as_ref()
        .and_then(|b| b.service.as_ref())
    {
        out.push(Backend {
            field: "spec.defaultBackend.service".into(),
            service: s.name.clone(),
            port: port(s.port.as_ref()),
        });
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        for (p, path) in rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(s) = path.backend.service.as_ref() {
                out.push(Backend {
                    field: format!("spec.rules[{r}].http.paths[{p}].backend.service"),
                    service: s.name.clone(),
                    port: port(s.port.as_ref()),
                });
            }
        }
    }
    out
}

/// A Service an IngressRoute routes to.
#[derive(Debug, Clone)]
struct RouteService {
    field: String,
    namespace: Option<String>,
    name: String,
    port: Option<PortRef>,
}

fn route_services(spec: &Value) -> Vec<RouteService> {
    let mut out = Vec::new();
    for (r, route) in spec["routes"].as_array().into_iter().flatten().enumerate() {
        for (s, svc) in route["services"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            // TraefikService objects (weighted, mirrored) are not Services.
            if svc["kind"].as_str().is_some_and(|k| k != "Service") {
                continue;
            }
            let port = match &svc["port"] {
                Value::Number(n) => n.as_i64().map(|n| PortRef::Number(n as i32)),
                Value::String(s) => Some(match s.parse::<i32>() {
                    Ok(n) => PortRef::Number(n),
                    Err(_) => PortRef::Name(s.clone()),
                }),
                _ => None,
            };
            out.push(RouteService {
                field: format!("spec.routes[{r}].services[{s}]"),
                namespace: svc["namespace"].as_str().map(str::to_string),
                name: svc["name"].as_str().unwrap_or_default().to_string(),
                port,
            });
        }
    }
    out
}

/// The hosts of an IngressRoute's ``Host(`a`, `b`)`` matchers.
fn route_hosts(spec: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for route in spec["routes"].as_array().into_iter().flatten() {
        let rule = route["match"].as_str().unwrap_or_default();
        let mut rest = rule;
        while let Some(at) = rest.find("Host(") {
            // `HostSNI(` and `HostRegexp(` are other matchers.
            let before = &rest[..at];
            rest = &rest[at + "Host(".len()..];
            if before.ends_with(|c: char| c.is_ascii_alphanumeric()) {
                continue;
            }
            let args = rest.split(')').next().unwrap_or_default();
            for h in args.split('`').skip(1).step_by(2) {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(h)) {
                    out.push(h.to_string());
                }
            }
        }
    }
    out
}

/// A Service port `port` names: by number (`port`) or by name.
fn has_port(svc: &Service, port: &PortRef) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .any(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
        })
}

fn ports_of(svc: &Service) -> String {
    let ports: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| match &p.name {
            Some(n) => format!("{} ({n})", p.port),
            None => p.port.to_string(),
        })
        .collect();
    if ports.is_empty() {
        "none".into()
    } else {
        ports.join(", ")
    }
}

/// Checks that `backend` is a port of the LiteLLM Service (read once into `service`).
fn judge_backend(
    what: &str,
    ns: &str,
    litellm: &str,
    service: &Service,
    field: &str,
    name: &str,
    port: Option<&PortRef>,
) -> Result<(), Failure> {
    if name != litellm {
        return Err(Failure::new(
            Cause::WrongBackend,
            format!("{what} routes to Service {name}, not to the LiteLLM Service {ns}/{litellm}"),
        )
        .hint(format!(
            "set {field} of {what} to the Service {litellm} (the suite's litellm.service.name)"
        )));
    }
    match port {
        Some(p) if !has_port(service, p) => Err(Failure::new(
            Cause::ServicePort,
            format!("{what}: {field}.port {p} names no port of Service {ns}/{litellm}"),
        )
        .details(format!("Service {ns}/{litellm} exposes: {}", ports_of(service)))
        .hint(format!(
            "set {field}.port of {what} to a port Service {litellm} exposes ({}): the route answers 404 until it does",
            ports_of(service)
        ))),
        _ => Ok(()),
    }
}

/// What a TLS Secret holds, judged for `hosts`: its certificate's days left; adds to
/// `passed` its note or warning.
async fn judge_secret(
    cx: &Context,
    suite: &IngressSuite,
    what: &str,
    field: &str,
    secret: &str,
    hosts: &[String],
    passed: &mut Passed,
) -> Result<i64, Failure> {
    let ns = &cx.suite.namespace;
    let found = cx.cluster.get::<Secret>(ns, secret).await?;
    let Some(found) = found else {
        return Err(Failure::new(
            Cause::NotFound,
            format!("{what}: the Secret {ns}/{secret} that {field} names does not exist"),
        )
        .hint(format!(
            "create the TLS Secret {ns}/{secret} (cert-manager's Certificate or a SealedSecret), or fix {field} of {what}: until then Traefik serves its own default certificate"
        )));
    };
    let type_ = found.type_.clone().unwrap_or_else(|| "Opaque".into());
    if type_ != "kubernetes.io/tls" {
        return Err(Failure::new(
            Cause::TlsSecretInvalid,
            format!("{what}: Secret {ns}/{secret} ({field}) is of type {type_}, not kubernetes.io/tls"),
        )
        .hint(format!(
            "recreate Secret {ns}/{secret} as type kubernetes.io/tls (kubectl create secret tls): ingress controllers may ignore other types"
        )));
    }
    let pem = found
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let cert = certificate::from_pem(&pem).map_err(|why| {
        Failure::new(
            Cause::TlsSecretInvalid,
            format!("{what}: Secret {ns}/{secret} tls.crt holds no certificate: {why}"),
        )
        .hint(format!(
            "put the PEM certificate chain in tls.crt of Secret {ns}/{secret}"
        ))
    })?;
    let uncovered: Vec<&str> = hosts
        .iter()
        .filter(|h| !cert.covers(h))
        .map(String::as_str)
        .collect();
    if !uncovered.is_empty() {
        return Err(Failure::new(
            Cause::TlsNameMismatch,
            format!(
                "{what}: the certificate in Secret {ns}/{secret} does not cover {}",
                uncovered.join(", ")
            ),
        )
        .details(format!("it names: {}", cert.names.join(", ")))
        .hint(format!(
            "issue the certificate in Secret {ns}/{secret} for every host of {field}'s entry (its dnsNames), or name the Secret that has one"
        )));
    }
    let days = expiry(
        suite,
        &cert,
        &format!("the certificate in Secret {ns}/{secret}"),
        what,
    )?;
    if let Some(w) = days.1 {
        passed.warnings.push(w);
    }
    if cert.self_signed {
        passed.notes.push(format!(
            "the certificate in Secret {ns}/{secret} is self-signed: only clients that trust it by hand accept it (e2e::ingress shows whether yours do)"
        ));
    }
    Ok(days.0)
}

/// Judges `cert`'s expiry against the suite's thresholds: days left, and a warning under
/// `warn_days`; a failure under `fail_days` or once expired.
pub(crate) fn expiry(
    suite: &IngressSuite,
    cert: &CertFacts,
    which: &str,
    whose: &str,
) -> Result<(i64, Option<Warning>), Failure> {
    let now = certificate::unix_now();
    let days = cert.days_left(now);
    let renew = format!(
        "renew {which} (cert-manager: kubectl describe certificate; ACME: the resolver's logs) before it expires: every client of {whose} fails then"
    );
    if cert.not_after <= now {
        // Whole days since: expired 5 days and an hour ago is "5 days ago".
        let ago = (now - cert.not_after) / 86_400;
        return Err(
            Failure::new(Cause::TlsExpired, format!("{which} expired {ago} days ago")).hint(renew),
        );
    }
    if days < i64::from(suite.fail_days) {
        return Err(Failure::new(
            Cause::TlsExpiring,
            format!(
                "{which} expires in {days} days (under litellm.ingress.fail_days, {})",
                suite.fail_days
            ),
        )
        .hint(renew));
    }
    let warning = (days < i64::from(suite.warn_days)).then(|| {
        Warning::new(
            format!(
                "{which} expires in {days} days (under litellm.ingress.warn_days, {})",
                suite.warn_days
            ),
            renew,
        )
    });
    Ok((days, warning))
}

/// Whether the class an object names exists; `Ok(None)` when it names none (the cluster's
/// default class serves it).
async fn class_exists(cx: &Context, class: Option<&str>) -> Result<Option<bool>, Failure> {
    let Some(class) = class else { return Ok(None) };
    let api: Api<IngressClass> = Api::all(cx.cluster.client.clone());
    match api.get_opt(class).await {
        Ok(found) => Ok(Some(found.is_some())),
        Err(e) => Err(Access {
            verb: "get",
            resource: "ingressclasses",
            group: "networking.k8s.io",
            namespace: "",
            name: Some(class),
        }
        .failure(e)),
    }
}

async fn litellm_service(cx: &Context, what: &str) -> Result<Service, Failure> {
    let ns = &cx.suite.namespace;
    let svc = &cx.suite.litellm.service.name;
    cx.cluster.get::<Service>(ns, svc).await?.ok_or_else(|| {
        Failure::new(
            Cause::NotFound,
            format!("{what} routes to Service {ns}/{svc}, which does not exist"),
        )
        .hint(format!("see kubernetes::services::{svc}"))
    })
}

fn class_missing(what: &str, class: &str, field: &str) -> Failure {
    Failure::new(
        Cause::IngressClassMissing,
        format!("{what}: IngressClass {class} ({field}) does not exist: no controller serves it"),
    )
    .hint(format!(
        "set {field} of {what} to an installed class (kubectl get ingressclass), e.g. traefik"
    ))
}

async fn judge_ingress(cx: &Context, suite: &IngressSuite, name: &str) -> ProbeResult {
    let ns = cx.suite.namespace.clone();
    let what = format!("Ingress {ns}/{name}");
    let Some(ingress) = cx.cluster.get::<Ingress>(&ns, name).await? else {
        return Ok(Verdict::skip(format!("{what} no longer exists")));
    };
    let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
    let spec = ingress.spec.clone().unwrap_or_default();

    let (class, class_field) = match (&spec.ingress_class_name, annotations.get(CLASS_ANNOTATION)) {
        (Some(c), _) => (Some(c.as_str()), "spec.ingressClassName".to_string()),
        (None, Some(c)) => (
            Some(c.as_str()),
            format!("metadata.annotations[{CLASS_ANNOTATION}]"),
        ),
        (None, None) => (None, String::new()),
    };
    if class_exists(cx, class).await? == Some(false) {
        return Err(class_missing(
            &what,
            class.unwrap_or_default(),
            &class_field,
        ));
    }

    let service = litellm_service(cx, &what).await?;
    let litellm = &cx.suite.litellm.service.name;
    let backends = ingress_backends(&ingress);
    if backends.is_empty() {
        return Err(Failure::new(
            Cause::WrongBackend,
            format!("{what} has no Service backend"),
        )
        .hint(format!(
            "route {what} to the Service {litellm} (spec.rules[].http.paths[].backend.service)"
        )));
    }
    for b in &backends {
        judge_backend(
            &what,
            &ns,
            litellm,
            &service,
            &b.field,
            &b.service,
            b.port.as_ref(),
        )?;
    }

    let tls = spec.tls.clone().unwrap_or_default();
    let router_tls = annotations
        .get(ROUTER_TLS)
        .map(|v| v.trim().to_ascii_lowercase());
    let entrypoints = annotations
        .get(ROUTER_ENTRYPOINTS)
        .cloned()
        .unwrap_or_default();
    let websecure = entrypoints.split(',').any(|e| e.trim() == "websecure");
    if tls.is_empty() && (router_tls.as_deref() == Some("true") || websecure) {
        let asks = if router_tls.as_deref() == Some("true") {
            format!("{ROUTER_TLS}: \"true\"")
        } else {
            format!("{ROUTER_ENTRYPOINTS}: {entrypoints}")
        };
        return Err(Failure::new(
            Cause::IngressTlsMismatch,
            format!("{what}: {asks} asks for TLS, but spec.tls names no certificate"),
        )
        .hint(format!(
            "add spec.tls to {what} with the hosts and the secretName of its certificate: without it Traefik serves its own default certificate, which no client trusts"
        )));
    }
    if !tls.is_empty() && router_tls.as_deref() == Some("false") {
        return Err(Failure::new(
            Cause::IngressTlsMismatch,
            format!("{what}: spec.tls names a certificate, but {ROUTER_TLS} is \"false\""),
        )
        .hint(format!(
            "set {ROUTER_TLS}: \"true\" on {what} (or drop spec.tls)"
        )));
    }

    let rule_hosts: Vec<String> = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| r.host.clone())
        .collect();
    let mut passed = Passed::default();
    let mut days_left = None;
    let mut secrets = Vec::new();
    for (i, entry) in tls.iter().enumerate() {
        let field = format!("spec.tls[{i}].secretName");
        let hosts: Vec<String> = match &entry.hosts {
            Some(h) if !h.is_empty() => h.clone(),
            _ => rule_hosts.clone(),
        };
        match &entry.secret_name {
            Some(secret) if !secret.is_empty() => {
                let days = judge_secret(cx, suite, &what, &field, secret, &hosts, &mut passed).await?;
                days_left = Some(days_left.map_or(days, |d: i64| d.min(days)));
                secrets.push(secret.clone());
            }
            _ => passed.notes.push(format!(
                "spec.tls[{i}] names no secretName: the controller's default certificate serves {} (left to e2e::ingress)",
                hosts.join(", ")
            )),
        }
    }
    passed.summary = summary(&what, &rule_hosts, litellm, &secrets, days_left);
    if let Some(d) = days_left {
        passed.metrics.count("cert_days_left", d.max(0) as u64);
    }
    Ok(passed.into())
}

fn summary(
    what: &str,
    hosts: &[String],
    service: &str,
    secrets: &[String],
    days_left: Option<i64>,
) -> String {
    let hosts = if hosts.is_empty() {
        "any host".to_string()
    } else {
        hosts.join(", ")
    };
    let tls = match days_left {
        Some(d) => format!("; TLS from Secret {} ({d} days left)", secrets.join(", ")),
        None => String::new(),
    };
    format!("{what}: {hosts} → Service {service}{tls}")
}

async fn judge_route(cx: &Context, suite: &IngressSuite, group: &str, name: &str) -> ProbeResult {
    let ns = cx.suite.namespace.clone();
    let what = format!("IngressRoute {ns}/{name}");
    let api = route_api(&cx.cluster, &ns, group);
    let found = api.get_opt(name).await.map_err(|e| {
        Access {
            verb: "get",
            resource: "ingressroutes",
            group,
            namespace: &ns,
            name: Some(name),
        }
        .failure(e)
    })?;
    let Some(route) = found else {
        return Ok(Verdict::skip(format!("{what} no longer exists")));
    };
    let annotations = route.metadata.annotations.clone().unwrap_or_default();
    if let Some(class) = annotations.get(CLASS_ANNOTATION)
        && class_exists(cx, Some(class)).await? == Some(false)
    {
        return Err(class_missing(
            &what,
            class,
            &format!("metadata.annotations[{CLASS_ANNOTATION}]"),
        ));
    }
    let spec = route.data.get("spec").cloned().unwrap_or(Value::Null);
    let service = litellm_service(cx, &what).await?;
    let litellm = &cx.suite.litellm.service.name;
    let services = route_services(&spec);
    if services.is_empty() {
        return Err(
            Failure::new(Cause::WrongBackend, format!("{what} routes to no Service")).hint(
                format!("add spec.routes[].services with the Service {litellm}"),
            ),
        );
    }
    for s in &services {
        let name = match s.namespace.as_deref() {
            Some(other) if other != ns => format!("{other}/{}", s.name),
            _ => s.name.clone(),
        };
        judge_backend(
            &what,
            &ns,
            litellm,
            &service,
            &s.field,
            &name,
            s.port.as_ref(),
        )?;
    }
    let hosts = route_hosts(&spec);
    let tls = &spec["tls"];
    let websecure = spec["entryPoints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e.as_str() == Some("websecure"));
    if tls.is_null() && websecure {
        return Err(Failure::new(
            Cause::IngressTlsMismatch,
            format!("{what}: spec.entryPoints has websecure, but spec.tls is absent"),
        )
        .hint(format!(
            "add spec.tls to {what} (secretName, or certResolver for ACME): without it the websecure router does no TLS"
        )));
    }
    let mut passed = Passed::default();
    let mut days_left = None;
    let mut secrets = Vec::new();
    if let Some(secret) = tls["secretName"].as_str() {
        let days = judge_secret(
            cx,
            suite,
            &what,
            "spec.tls.secretName",
            secret,
            &hosts,
            &mut passed,
        )
        .await?;
        days_left = Some(days);
        secrets.push(secret.to_string());
    } else if let Some(resolver) = tls["certResolver"].as_str() {
        passed.notes.push(format!(
            "the certificate comes from Traefik's ACME resolver {resolver} (spec.tls.certResolver): no Secret to read; e2e::ingress checks the one served"
        ));
    } else if !tls.is_null() {
        passed.notes.push(
            "spec.tls names neither secretName nor certResolver: Traefik's default TLS store serves it (left to e2e::ingress)".into(),
        );
    }
    passed.summary = summary(&what, &hosts, litellm, &secrets, days_left);
    if let Some(resolver) = tls["certResolver"].as_str() {
        passed
            .summary
            .push_str(&format!("; TLS from ACME resolver {resolver}"));
    }
    if let Some(d) = days_left {
        passed.metrics.count("cert_days_left", d.max(0) as u64);
    }
    Ok(passed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matchers_are_read_and_others_ignored() {
        let spec = serde_json::json!({"routes": [
            {"match": "Host(`a.example.test`) && PathPrefix(`/`)"},
            {"match": "Host(`b.example.test`, `c.example.test`) || HostSNI(`d.example.test`)"},
            {"match": "HostRegexp(`{x:.+}`)"},
        ]});
        assert_eq!(
            route_hosts(&spec),
            ["a.example.test", "b.example.test", "c.example.test"]
        );
    }

    #[test]
    fn route_services_read_ports_by_number_or_name_and_skip_traefik_services() {
        let spec = serde_json::json!({"routes": [{"services": [
            {"name": "litellm", "port": 4000},
            {"name": "litellm", "port": "http"},
            {"name": "weighted", "kind": "TraefikService"},
        ]}]});
        let s = route_services(&spec);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].port, Some(PortRef::Number(4000)));
        assert_eq!(s[1].port, Some(PortRef::Name("http".into())));
    }
}
