//! Answers one request the way kube-apiserver v1.33 would: authentication, discovery, get, list,
//! pod logs, and `Status` bodies for every error. Paths are routed by hand (one fallback handler)
//! because the API's path grammar is regular and a router table would hide it; new endpoints
//! (port-forward, access reviews) are new arms of `route`.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::{self, ResourceType};
use super::scenario::{Scenario, str_at};
use super::select;
use crate::support::latency::Latency;

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string, "" when none.
    pub query: String,
}

impl RecordedRequest {
    /// The decoded value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        let uri: Uri = format!("/?{}", self.query).parse().ok()?;
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri).ok()?;
        pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// What every request handler shares.
pub struct Shared {
    pub scenario: Scenario,
    pub token: String,
    pub resources: Vec<ResourceType>,
    pub requests: Mutex<Vec<RecordedRequest>>,
    /// Requests whose path contains the first part are answered only after the second (a slow
    /// API server, for timeout, deadline and signal tests).
    /// (path part, pause, how many more requests to delay; None: all).
    pub delay: Mutex<Option<(String, std::time::Duration, Option<u32>)>>,
    /// Requests whose path contains the first part are answered with the status (a `Status`
    /// body), as many more times as the count says: an API server that fails, then recovers.
    pub fail: Mutex<Option<(String, StatusCode, u32)>>,
    /// When set, every resource request must be allowed by these RBAC objects.
    pub rbac: Mutex<Option<super::rbac::Rbac>>,
    /// Where a port-forward to (namespace, pod, port) really goes.
    pub forwards: Mutex<std::collections::BTreeMap<(String, String, u16), std::net::SocketAddr>>,
    /// Paths answered by a hostile behaviour instead of the API (see `FakeKube::misbehave`).
    pub misbehave: Mutex<Vec<(String, crate::support::hostile::Behaviour)>>,
    /// Every port-forward stream served, open or ended, in the order they were opened.
    pub streams: Mutex<Vec<ForwardStream>>,
    /// Added before every request is answered, port-forward upgrades included: a real API
    /// server's round trip, for benchmarks (`FakeKube::set_latency`).
    pub latency: Mutex<Latency>,
    /// Added to each port-forward stream's setup (the API server reaching the kubelet, the
    /// kubelet the pod), and to each round trip through an open stream.
    pub forward_latency: Mutex<ForwardLatency>,
    /// Requests being answered (a port-forward until its upgrade is answered).
    pub in_flight: crate::support::in_flight::InFlight,
}

/// What a port-forward stream costs beyond the API request that opens it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardLatency {
    /// Once per stream, before its first byte goes either way.
    pub setup: Latency,
    /// Per round trip: every byte is delayed by half of a draw each way, pipelined (bytes
    /// sent back to back arrive back to back), as on a network link.
    pub round_trip: Latency,
}

/// Waits the API server's latency, then lets the request through (a layer over every route).
pub async fn latency(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let _counted = shared.in_flight.enter(request.uri().path());
    let pause = shared
        .latency
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .sample();
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    next.run(request).await
}

/// One port-forward stream (a WebSocket) as the fake served it: when it opened, when and how it
/// ended, so tests can tell a stream the client closed from one left open until its process died.
#[derive(Debug, Clone)]
pub struct ForwardStream {
    pub pod: String,
    pub port: u16,
    pub opened: std::time::Instant,
    /// `None` while the stream is open.
    pub ended: Option<(std::time::Instant, StreamEnd)>,
}

/// Who ended a port-forward stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The client sent a WebSocket Close frame: it closed the stream on purpose.
    ClientClosed,
    /// The client's connection went away without a Close frame (its process ended, say).
    ClientVanished,
    /// The pod side (the server the test maps the pod port to) closed its connection.
    PodClosed,
}

impl Shared {
    /// The hostile behaviour for requests to `path`, if one is set.
    pub fn behaviour_for(&self, path: &str) -> Option<crate::support::hostile::Behaviour> {
        self.misbehave
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
    }

    pub fn record(&self, method: &str, path: &str, query: &str) {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(RecordedRequest {
                method: method.to_string(),
                path: path.to_string(),
                query: query.to_string(),
            });
    }
}

pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    shared
        .requests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or_default().to_string(),
        });
    let pause = {
        let mut delay = shared
            .delay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match delay.as_mut() {
            Some((part, pause, left)) if uri.path().contains(part.as_str()) => match left {
                Some(0) => None,
                Some(n) => {
                    *n -= 1;
                    Some(*pause)
                }
                None => Some(*pause),
            },
            _ => None,
        }
    };
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    let failure = {
        let mut fail = shared
            .fail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match fail.as_mut() {
            Some((part, code, left)) if *left > 0 && uri.path().contains(part.as_str()) => {
                *left -= 1;
                Some(*code)
            }
            _ => None,
        }
    };
    if let Some(code) = failure {
        let reason = code.canonical_reason().unwrap_or("Error");
        return status(code, reason, "injected failure (fake API server)", None);
    }
    let expected = format!("Bearer {}", shared.token);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
    }
    let params: Vec<(String, String)> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let req = Request {
        shared: &shared,
        method: &method,
        params: &params,
    };
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    req.route(&segments)
}

struct Request<'a> {
    shared: &'a Shared,
    method: &'a Method,
    params: &'a [(String, String)],
}

/// What a path names inside a group/version.
enum Target<'a> {
    Collection {
        namespace: Option<&'a str>,
        resource: &'a ResourceType,
    },
    Object {
        namespace: Option<&'a str>,
        resource: &'a ResourceType,
        name: &'a str,
    },
    Log {
        namespace: &'a str,
        resource: &'a ResourceType,
        name: &'a str,
    },
}

impl<'a> Request<'a> {
    fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn route(&self, segments: &[&'a str]) -> Response {
        let resources = &self.shared.resources;
        let discovery = |doc: Option<Value>| match doc {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => page_not_found(),
        };
        if *self.method != Method::GET {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("the fake API server does not implement {}", self.method),
                None,
            );
        }
        match segments {
            ["version"] => json_response(StatusCode::OK, &api::version()),
            ["api"] => json_response(StatusCode::OK, &api::core_versions()),
            ["api", "v1"] => discovery(api::resource_list(resources, "", "v1")),
            ["apis"] => json_response(StatusCode::OK, &api::group_list(resources)),
            ["apis", group] => discovery(api::group(resources, group)),
            ["apis", group, version] => discovery(api::resource_list(resources, group, version)),
            ["api", "v1", rest @ ..] => self.resource_request("", "v1", rest),
            ["apis", group, version, rest @ ..] => self.resource_request(group, version, rest),
            _ => page_not_found(),
        }
    }

    fn resource_request(&self, group: &str, version: &str, rest: &[&'a str]) -> Response {
        let resources = &self.shared.resources;
        let find = |plural| api::find(resources, group, version, plural);
        let target = match rest {
            [plural] => find(plural).map(|r| Target::Collection {
                namespace: None,
                resource: r,
            }),
            [plural, name] => find(plural)
                .filter(|r| !r.namespaced)
                .map(|r| Target::Object {
                    namespace: None,
                    resource: r,
                    name,
                }),
            ["namespaces", ns, plural] => {
                find(plural)
                    .filter(|r| r.namespaced)
                    .map(|r| Target::Collection {
                        namespace: Some(ns),
                        resource: r,
                    })
            }
            ["namespaces", ns, plural, name] => {
                find(plural)
                    .filter(|r| r.namespaced)
                    .map(|r| Target::Object {
                        namespace: Some(ns),
                        resource: r,
                        name,
                    })
            }
            ["namespaces", ns, "pods", name, "log"] if group.is_empty() => {
                find("pods").map(|r| Target::Log {
                    namespace: ns,
                    resource: r,
                    name,
                })
            }
            _ => None,
        };
        let Some(target) = target else {
            return page_not_found();
        };
        if let Some(denied) = self.forbidden(&target) {
            return denied;
        }
        match target {
            Target::Collection {
                namespace,
                resource,
            } => self.list(namespace, resource),
            Target::Object {
                namespace,
                resource,
                name,
            } => match self.find(namespace, resource, name) {
                Some(object) => json_response(StatusCode::OK, object),
                None => not_found(resource, name),
            },
            Target::Log {
                namespace,
                resource,
                name,
            } => self.log(namespace, resource, name),
        }
    }

    /// The 403 for a (verb, resource, namespace) the scenario forbids.
    fn forbidden(&self, target: &Target<'a>) -> Option<Response> {
        let (verb, resource, subresource, namespace, name) = match target {
            Target::Collection {
                namespace,
                resource,
            } => {
                let verb = if self.flag("watch") { "watch" } else { "list" };
                (verb, resource, None, *namespace, None)
            }
            Target::Object {
                namespace,
                resource,
                name,
            } => ("get", resource, None, *namespace, Some(*name)),
            Target::Log {
                namespace,
                resource,
                name,
            } => ("get", resource, Some("log"), Some(*namespace), Some(*name)),
        };
        let full = match subresource {
            Some(sub) => format!("{}/{sub}", resource.plural),
            None => resource.plural.to_string(),
        };
        let denied_by_rbac = self
            .shared
            .rbac
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .is_some_and(|rbac| {
                !rbac.allows(
                    &self.shared.scenario.user,
                    verb,
                    resource.group,
                    &full,
                    namespace,
                    name,
                )
            });
        let denied = denied_by_rbac
            || self.shared.scenario.forbid.iter().any(|f| {
                f.verb == verb
                    && f.resource == full
                    && f.namespace
                        .as_deref()
                        .is_none_or(|ns| Some(ns) == namespace)
            });
        if !denied {
            return None;
        }
        let user = &self.shared.scenario.user;
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let reason = format!(
            "User \"{user}\" cannot {verb} resource \"{full}\" in API group \"{}\" {scope}",
            resource.group
        );
        let message = match name {
            Some(name) => format!("{} \"{name}\" is forbidden: {reason}", resource.qualified()),
            None => format!("{} is forbidden: {reason}", resource.qualified()),
        };
        Some(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &message,
            Some(details(resource, name)),
        ))
    }

    fn objects(&self, resource: &'a ResourceType) -> impl Iterator<Item = &'a Value> + 'a {
        let api_version = resource.api_version();
        self.shared.scenario.objects.iter().filter(move |o| {
            str_at(o, "/apiVersion") == Some(api_version.as_str())
                && str_at(o, "/kind") == Some(resource.kind)
        })
    }

    fn find(
        &self,
        namespace: Option<&str>,
        resource: &'a ResourceType,
        name: &str,
    ) -> Option<&'a Value> {
        self.objects(resource).find(|o| {
            str_at(o, "/metadata/name") == Some(name)
                && str_at(o, "/metadata/namespace") == namespace
        })
    }

    fn list(&self, namespace: Option<&str>, resource: &'a ResourceType) -> Response {
        let labels = self.param("labelSelector").unwrap_or_default();
        let fields = self.param("fieldSelector").unwrap_or_default();
        let mut items = Vec::new();
        for object in self.objects(resource) {
            if namespace.is_some() && str_at(object, "/metadata/namespace") != namespace {
                continue;
            }
            let selected = select::labels_match(labels, object)
                .and_then(|ok| Ok(ok && select::fields_match(fields, resource.kind, object)?));
            match selected {
                Ok(true) => items.push(object),
                Ok(false) => {}
                Err(message) => {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", &message, None);
                }
            }
        }
        // etcd returns keys in order: /registry/<resource>/<namespace>/<name>.
        items.sort_by_key(|o| {
            (
                str_at(o, "/metadata/namespace").unwrap_or_default(),
                str_at(o, "/metadata/name").unwrap_or_default(),
            )
        });
        let listed = |o: &Value| {
            let mut item = o.clone();
            // Built-in types' list items carry no apiVersion/kind; custom resources' do.
            if !resource.crd
                && let Some(map) = item.as_object_mut()
            {
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        };
        if self.flag("watch") {
            return self.watch(resource, items.into_iter().map(listed).collect());
        }
        let rv = list_resource_version(&self.shared.scenario);
        let mut metadata = json!({"resourceVersion": rv});
        // Chunked lists: `limit` items per page, and an opaque `continue` token naming where
        // the next page starts (kubectl's --chunk-size, kube-rs ListParams::limit).
        let after = match self.param("continue").filter(|c| !c.is_empty()) {
            Some(token) => match decode_continue(token) {
                Some(key) => Some(key),
                None => {
                    let message =
                        "continue key is not valid: the fake API server could not decode it";
                    return status(StatusCode::BAD_REQUEST, "BadRequest", message, None);
                }
            },
            None => None,
        };
        // In the order of the sort above (etcd's key order).
        let key = |o: &Value| {
            (
                str_at(o, "/metadata/namespace")
                    .unwrap_or_default()
                    .to_string(),
                str_at(o, "/metadata/name").unwrap_or_default().to_string(),
            )
        };
        let mut items: Vec<&Value> = items
            .into_iter()
            .filter(|o| after.as_ref().is_none_or(|a| &key(o) > a))
            .collect();
        let limit = self
            .param("limit")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0);
        if let Some(limit) = limit
            && items.len() > limit
        {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let (ns, name) = items.last().map(|o| key(o)).unwrap_or_default();
            metadata["continue"] = json!(encode_continue(&rv, &format!("{ns}/{name}")));
            // The apiserver counts what is left only when no selector filters it.
            if labels.is_empty() && fields.is_empty() {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        let items: Vec<Value> = items.into_iter().map(listed).collect();
        let list = json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items,
        });
        json_response(StatusCode::OK, &list)
    }

    /// A watch on a scenario that never changes: the initial ADDED events (none when the client
    /// watches from a resourceVersion it already listed), a BOOKMARK ending them when asked for
    /// with `sendInitialEvents`, then silence until `timeoutSeconds`, as a quiet cluster does.
    fn watch(&self, resource: &ResourceType, items: Vec<Value>) -> Response {
        let rv = list_resource_version(&self.shared.scenario);
        let from_version = self
            .param("resourceVersion")
            .is_some_and(|v| !v.is_empty() && v != "0");
        let initial = self.flag("sendInitialEvents") || !from_version;
        let mut events: Vec<Value> = Vec::new();
        if initial {
            events.extend(items.into_iter().map(|mut object| {
                object["apiVersion"] = json!(resource.api_version());
                object["kind"] = json!(resource.kind);
                json!({"type": "ADDED", "object": object})
            }));
        }
        if self.flag("sendInitialEvents") {
            events.push(json!({"type": "BOOKMARK", "object": {
                "kind": resource.kind,
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": rv, "annotations": {"k8s.io/initial-events-end": "true"}}
            }}));
        }
        let chunks: Vec<Result<String, std::convert::Infallible>> =
            events.iter().map(|e| Ok(format!("{e}\n"))).collect();
        let timeout = self
            .param("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1800);
        let quiet = futures::stream::once(async move {
            tokio::time::sleep(std::time::Duration::from_secs(timeout)).await;
            Ok(String::new())
        });
        let body = Body::from_stream(futures::StreamExt::chain(
            futures::stream::iter(chunks),
            quiet,
        ));
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }

    fn log(&self, namespace: &str, resource: &ResourceType, name: &str) -> Response {
        let Some(pod) = self.find(Some(namespace), resource, name) else {
            return not_found(resource, name);
        };
        let names = |field: &str| -> Vec<String> {
            pod.pointer(&format!("/spec/{field}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| str_at(c, "/name").map(str::to_string))
                .collect()
        };
        let containers = names("containers");
        let container = match self.param("container") {
            Some(c) => c.to_string(),
            None => {
                let default = str_at(
                    pod,
                    "/metadata/annotations/kubectl.kubernetes.io~1default-container",
                );
                match (default, containers.as_slice()) {
                    (Some(d), _) => d.to_string(),
                    (None, [only]) => only.clone(),
                    (None, many) => {
                        let message = format!(
                            "a container name must be specified for pod {name}, choose one of: [{}]",
                            many.join(" ")
                        );
                        return status(StatusCode::BAD_REQUEST, "BadRequest", &message, None);
                    }
                }
            }
        };
        let mut all = containers.clone();
        all.extend(names("initContainers"));
        all.extend(names("ephemeralContainers"));
        if !all.contains(&container) {
            let message = format!("container {container} is not valid for pod {name}");
            return status(StatusCode::BAD_REQUEST, "BadRequest", &message, None);
        }
        let previous = self.flag("previous");
        let scenario = &self.shared.scenario;
        let text = match scenario.log(namespace, name, &container, previous) {
            Some(text) => text.to_string(),
            None => match log_unavailable(pod, &container, previous) {
                Some(message) => {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", &message, None);
                }
                None => String::new(),
            },
        };
        let text = match self
            .param("tailLines")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => {
                let lines: Vec<&str> = text.lines().collect();
                let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
                if !tail.is_empty() {
                    tail.push('\n');
                }
                tail
            }
            None => text,
        };
        // The kubelet tails first, then writes at most limitBytes of that tail through a
        // byte-counting writer: the cut keeps the tail's first bytes and may split a character.
        let mut bytes = text.into_bytes();
        if let Some(n) = self
            .param("limitBytes")
            .and_then(|n| n.parse::<usize>().ok())
        {
            bytes.truncate(n);
        }
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            Body::from(bytes),
        )
            .into_response()
    }
}

/// Why the kubelet would have no log for this container, given its status (None: an empty log).
fn log_unavailable(pod: &Value, container: &str, previous: bool) -> Option<String> {
    let name = str_at(pod, "/metadata/name").unwrap_or_default();
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|f| {
            pod.pointer(&format!("/status/{f}"))
                .and_then(Value::as_array)
        })
        .flatten();
    let status = statuses
        .into_iter()
        .find(|s| str_at(s, "/name") == Some(container));
    if previous {
        let terminated = status.and_then(|s| s.pointer("/lastState/terminated"));
        return match terminated {
            Some(_) => None,
            None => Some(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )),
        };
    }
    let state = status.and_then(|s| s.get("state"));
    if state.is_some_and(|s| s.get("running").is_some() || s.get("terminated").is_some()) {
        return None;
    }
    if status.is_some_and(|s| s.pointer("/lastState/terminated").is_some()) {
        return None;
    }
    match state.and_then(|s| str_at(s, "/waiting/reason")) {
        Some("ErrImagePull") => Some(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: image can't be pulled"
        )),
        Some("ImagePullBackOff") => Some(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: trying and failing to pull image"
        )),
        Some(reason) => Some(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )),
        None => Some(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start - no logs yet"
        )),
    }
}

/// A continue token as the apiserver writes one: base64 of a small JSON document naming the
/// resourceVersion and the key after which the next page starts.
fn encode_continue(rv: &str, after: &str) -> String {
    use base64::Engine as _;
    let doc = json!({"v": "meta.k8s.io/v1", "rv": rv.parse::<u64>().unwrap_or(1), "start": format!("{after}\u{0}")});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
}

/// The (namespace, name) after which a continue token's page starts.
fn decode_continue(token: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let doc: Value = serde_json::from_slice(&bytes).ok()?;
    let start = str_at(&doc, "/start")?.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

/// A list's resourceVersion: the highest of the scenario's objects (they are all "current").
fn list_resource_version(scenario: &Scenario) -> String {
    scenario
        .objects
        .iter()
        .filter_map(|o| str_at(o, "/metadata/resourceVersion")?.parse::<u64>().ok())
        .max()
        .unwrap_or(1)
        .to_string()
}

fn details(resource: &ResourceType, name: Option<&str>) -> Value {
    let mut details = json!({});
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    details["kind"] = json!(resource.plural);
    details
}

fn not_found(resource: &ResourceType, name: &str) -> Response {
    let message = format!("{} \"{name}\" not found", resource.qualified());
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &message,
        Some(details(resource, Some(name))),
    )
}

/// A `Status` body, field order as the apiserver writes it.
pub fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    body["code"] = json!(code.as_u16());
    json_response(code, &body)
}

/// What the apiserver's mux answers for a path it does not serve (an unknown group, say).
fn page_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
