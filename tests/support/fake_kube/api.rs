//! The API surface the fake serves: which resources exist in which groups, and the discovery
//! documents (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`) describing them, shaped as a
//! v1.33 kube-apiserver shapes them. kubectl asks for aggregated discovery first and falls back to
//! these legacy documents when the answer is plain `application/json`.

use serde_json::{Value, json};

/// One resource type (a row of `kubectl api-resources`).
#[derive(Debug, Clone, Copy)]
pub struct ResourceType {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Served from a CustomResourceDefinition (lists keep items' apiVersion/kind, discovery
    /// can be switched off per scenario).
    pub crd: bool,
    /// Has a `/status` subresource in discovery.
    pub status: bool,
}

impl ResourceType {
    /// `v1` or `group/version`, as in an object's `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `clusters.postgresql.cnpg.io`, as in apiserver error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn discovery_entry(&self) -> Value {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if matches!(self.kind, "Namespace") {
            verbs.retain(|v| *v != "deletecollection");
        }
        let mut entry = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            entry["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            entry["categories"] = json!(self.categories);
        }
        entry
    }
}

// One row of the table below; positional so the table reads like `kubectl api-resources`.
#[allow(clippy::too_many_arguments)]
const fn rt(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    crd: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        categories,
        crd,
        status,
    }
}

/// Every resource type the fake knows, grouped by group/version in discovery order. `status`:
/// the type has a `/status` subresource (Traefik's CRDs declare none).
#[rustfmt::skip]
pub const RESOURCES: &[ResourceType] = &[
    //  group                        version     kind                     plural                    singular                 namespaced short   categories crd    status
    rt("",                          "v1",       "ConfigMap",             "configmaps",             "configmap",             true,  &["cm"],  &[],       false, false),
    rt("",                          "v1",       "Endpoints",             "endpoints",              "endpoints",             true,  &["ep"],  &[],       false, false),
    rt("",                          "v1",       "Event",                 "events",                 "event",                 true,  &["ev"],  &[],       false, false),
    rt("",                          "v1",       "Namespace",             "namespaces",             "namespace",             false, &["ns"],  &[],       false, true),
    rt("",                          "v1",       "Node",                  "nodes",                  "node",                  false, &["no"],  &[],       false, false),
    rt("",                          "v1",       "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true,  &["pvc"], &[],       false, false),
    rt("",                          "v1",       "Pod",                   "pods",                   "pod",                   true,  &["po"],  &["all"],  false, true),
    rt("",                          "v1",       "Secret",                "secrets",                "secret",                true,  &[],      &[],       false, false),
    rt("",                          "v1",       "ServiceAccount",        "serviceaccounts",        "serviceaccount",        true,  &["sa"],  &[],       false, false),
    rt("",                          "v1",       "Service",               "services",               "service",               true,  &["svc"], &["all"],  false, true),
    rt("apps",                      "v1",       "DaemonSet",             "daemonsets",             "daemonset",             true,  &["ds"],  &["all"],  false, false),
    rt("apps",                      "v1",       "Deployment",            "deployments",            "deployment",            true,  &["deploy"], &["all"], false, true),
    rt("apps",                      "v1",       "ReplicaSet",            "replicasets",            "replicaset",            true,  &["rs"],  &["all"],  false, false),
    rt("apps",                      "v1",       "StatefulSet",           "statefulsets",           "statefulset",           true,  &["sts"], &["all"],  false, false),
    rt("batch",                     "v1",       "CronJob",               "cronjobs",               "cronjob",               true,  &["cj"],  &["all"],  false, false),
    rt("batch",                     "v1",       "Job",                   "jobs",                   "job",                   true,  &[],      &["all"],  false, true),
    rt("discovery.k8s.io",          "v1",       "EndpointSlice",         "endpointslices",         "endpointslice",         true,  &[],      &[],       false, false),
    rt("networking.k8s.io",         "v1",       "IngressClass",          "ingressclasses",         "ingressclass",          false, &[],      &[],       false, false),
    rt("networking.k8s.io",         "v1",       "Ingress",               "ingresses",              "ingress",               true,  &["ing"], &[],       false, true),
    rt("rbac.authorization.k8s.io", "v1",       "ClusterRoleBinding",    "clusterrolebindings",    "clusterrolebinding",    false, &[],      &[],       false, false),
    rt("rbac.authorization.k8s.io", "v1",       "ClusterRole",           "clusterroles",           "clusterrole",           false, &[],      &[],       false, false),
    rt("rbac.authorization.k8s.io", "v1",       "RoleBinding",           "rolebindings",           "rolebinding",           true,  &[],      &[],       false, false),
    rt("rbac.authorization.k8s.io", "v1",       "Role",                  "roles",                  "role",                  true,  &[],      &[],       false, false),
    rt("postgresql.cnpg.io",        "v1",       "Cluster",               "clusters",               "cluster",               true,  &[],      &[],       true,  true),
    rt("bitnami.com",               "v1alpha1", "SealedSecret",          "sealedsecrets",          "sealedsecret",          true,  &[],      &[],       true,  true),
    rt("argoproj.io",               "v1alpha1", "Application",           "applications",           "application",           true,  &["app", "apps"], &[], true, true),
    // Traefik v3's CRDs (served only where a scenario installs them, see OPT_IN_GROUPS) ...
    rt("traefik.io",                "v1alpha1", "IngressRoute",          "ingressroutes",          "ingressroute",          true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "IngressRouteTCP",       "ingressroutetcps",       "ingressroutetcp",       true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "IngressRouteUDP",       "ingressrouteudps",       "ingressrouteudp",       true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "Middleware",            "middlewares",            "middleware",            true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "MiddlewareTCP",         "middlewaretcps",         "middlewaretcp",         true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "ServersTransport",      "serverstransports",      "serverstransport",      true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "ServersTransportTCP",   "serverstransporttcps",   "serverstransporttcp",   true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "TLSOption",             "tlsoptions",             "tlsoption",             true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "TLSStore",              "tlsstores",              "tlsstore",              true,  &[],      &[],       true,  false),
    rt("traefik.io",                "v1alpha1", "TraefikService",        "traefikservices",        "traefikservice",        true,  &[],      &[],       true,  false),
    // ... and Traefik v2's, the group v3 dropped.
    rt("traefik.containo.us",       "v1alpha1", "IngressRoute",          "ingressroutes",          "ingressroute",          true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "IngressRouteTCP",       "ingressroutetcps",       "ingressroutetcp",       true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "IngressRouteUDP",       "ingressrouteudps",       "ingressrouteudp",       true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "Middleware",            "middlewares",            "middleware",            true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "MiddlewareTCP",         "middlewaretcps",         "middlewaretcp",         true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "ServersTransport",      "serverstransports",      "serverstransport",      true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "TLSOption",             "tlsoptions",             "tlsoption",             true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "TLSStore",              "tlsstores",              "tlsstore",              true,  &[],      &[],       true,  false),
    rt("traefik.containo.us",       "v1alpha1", "TraefikService",        "traefikservices",        "traefikservice",        true,  &[],      &[],       true,  false),
];

/// CRD groups a scenario serves only when it installs them (`crds_installed`): the reference
/// deployment has no Traefik CRDs, a cluster running Traefik has one group or both.
pub const OPT_IN_GROUPS: &[&str] = &["traefik.io", "traefik.containo.us"];

/// The resource types served in a scenario: the default CRD groups but those not installed,
/// and the opt-in groups it installs.
pub fn installed(crds_not_installed: &[String], crds_installed: &[String]) -> Vec<ResourceType> {
    let listed = |groups: &[String], group: &str| groups.iter().any(|g| g == group);
    RESOURCES
        .iter()
        .filter(|r| {
            !r.crd
                || if OPT_IN_GROUPS.contains(&r.group) {
                    listed(crds_installed, r.group)
                } else {
                    !listed(crds_not_installed, r.group)
                }
        })
        .copied()
        .collect()
}

/// The served (group, version) pairs of named groups, in discovery order.
fn group_versions(resources: &[ResourceType]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// `/version`: a v1.33 server.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.1",
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:08Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:443"}]
    })
}

fn api_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`.
pub fn group_list(resources: &[ResourceType]) -> Value {
    let groups: Vec<Value> = group_versions(resources)
        .into_iter()
        .map(|(g, v)| api_group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, or None when the group is not served.
pub fn group(resources: &[ResourceType], group: &str) -> Option<Value> {
    let (g, v) = group_versions(resources)
        .into_iter()
        .find(|(g, _)| *g == group)?;
    let mut doc = api_group(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/<group>/<version>`, or None when not served.
pub fn resource_list(resources: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let rows: Vec<&ResourceType> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for r in &rows {
        entries.push(r.discovery_entry());
        if r.kind == "Pod" {
            entries.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            entries.push(json!({"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
        }
        if r.status {
            entries.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries
    }))
}

/// The resource type served at `group/version` under `plural`.
pub fn find<'a>(
    resources: &'a [ResourceType],
    group: &str,
    version: &str,
    plural: &str,
) -> Option<&'a ResourceType> {
    resources
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}
