//! `smokecheck rbac`: the least-privilege RBAC a suite needs, as manifests. The rules mirror
//! what the checks read and nothing more: get/list on exactly those resources, `get` on
//! Secrets and ConfigMaps restricted by name, a Role per namespace read, and a small
//! ClusterRole for the namespaces themselves. The shipped ci/argocd manifests are tested to
//! equal this output, and the fake API server enforces it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::suite::{CaSource, Suite};

/// The name of the ServiceAccount, Roles and bindings.
pub const NAME: &str = "smokecheck";

/// (API group, resource and whether it is restricted by name).
type RuleKey = (String, String);

/// A rule being assembled: its key → verbs and names.
#[derive(Default)]
struct Rules(BTreeMap<RuleKey, (Vec<&'static str>, Vec<String>)>);

impl Rules {
    /// `verb` on `resource`; `names` restricts a `get` to those objects.
    fn allow(&mut self, group: &str, resource: &str, verb: &'static str, names: &[&str]) {
        let key = (
            group.to_string(),
            format!(
                "{resource}|{}",
                if names.is_empty() { "*" } else { "named" }
            ),
        );
        let entry = self.0.entry(key).or_default();
        if !entry.0.contains(&verb) {
            entry.0.push(verb);
            entry.0.sort_unstable();
        }
        for n in names {
            if !entry.1.iter().any(|e| e == n) {
                entry.1.push(n.to_string());
            }
        }
    }

    fn policy(self) -> Vec<PolicyRule> {
        self.0
            .into_iter()
            .map(|((group, key), (verbs, names))| {
                let resource = key.split('|').next().unwrap_or_default().to_string();
                PolicyRule {
                    api_groups: Some(vec![group]),
                    resources: Some(vec![resource]),
                    resource_names: (!names.is_empty()).then_some(names),
                    verbs: verbs.into_iter().map(String::from).collect(),
                    ..PolicyRule::default()
                }
            })
            .collect()
    }
}

/// The rules per namespace, and the namespaces read cluster-wide.
fn rules(suite: &Suite) -> (BTreeMap<String, Rules>, Vec<String>) {
    let mut by_ns: BTreeMap<String, Rules> = BTreeMap::new();
    let ns = suite.namespace.clone();
    let l = &suite.litellm;
    {
        let r = by_ns.entry(ns.clone()).or_default();
        r.allow("", "pods", "list", &[]);
        r.allow("", "pods/log", "get", &[]);
        r.allow("discovery.k8s.io", "endpointslices", "list", &[]);
        r.allow("", "services", "get", &[&l.service.name]);
        r.allow("", "configmaps", "get", &[&l.config.configmap]);
        if let Some(g) = &l.guardrail {
            r.allow("", "configmaps", "get", &[&g.configmap]);
        }
        if let Some(job) = &l.migration_job {
            r.allow("batch", "jobs", "get", &[job]);
        }
        // The way users come in: the routes are listed (their names are the cluster's), read
        // again by the check, and their TLS Secrets read by the names the suite lists.
        if let Some(i) = &l.ingress {
            r.allow("networking.k8s.io", "ingresses", "list", &[]);
            r.allow("networking.k8s.io", "ingresses", "get", &[]);
            for group in crate::suite::TRAEFIK_GROUPS {
                r.allow(group, "ingressroutes", "list", &[]);
                r.allow(group, "ingressroutes", "get", &[]);
            }
            for t in &i.tls_secrets {
                r.allow("", "secrets", "get", &[t]);
            }
        }
        if let Some(db) = &suite.database {
            r.allow("", "services", "get", &[&db.service.name]);
            r.allow("postgresql.cnpg.io", "clusters", "get", &[&db.cluster]);
            // The CA from a ConfigMap: that one, and not CloudNativePG's CA Secret (which
            // also holds the CA's private key; granted with the other Secrets below).
            if db.sslmode.verifies()
                && let CaSource::ConfigMap { name, .. } = db.ca_source()
            {
                r.allow("", "configmaps", "get", &[&name]);
            }
        }
    }
    // Secrets by name, and the SealedSecrets of those checked on their own.
    for s in suite.secrets() {
        let r = by_ns.entry(s.namespace.clone()).or_default();
        r.allow("", "secrets", "get", &[&s.name]);
        if s.checked {
            r.allow("bitnami.com", "sealedsecrets", "get", &[&s.name]);
        }
    }
    for v in &suite.vllm {
        let r = by_ns.entry(v.namespace.clone()).or_default();
        r.allow("", "services", "get", &[&v.service.name]);
        r.allow("discovery.k8s.io", "endpointslices", "list", &[]);
        if v.pods.is_some() {
            r.allow("", "pods", "list", &[]);
            r.allow("", "pods/log", "get", &[]);
        }
    }
    // The namespaces checked by platform::namespace; the operators' and Argo CD's namespaces
    // are only read into (their checks are skipped, not failed, where this does not reach).
    let namespaces = by_ns.keys().cloned().collect();
    let p = &suite.platform;
    for w in [&p.cnpg_operator, &p.sealed_secrets_controller]
        .into_iter()
        .flatten()
    {
        by_ns.entry(w.namespace.clone()).or_default().allow(
            "apps",
            "deployments",
            "get",
            &[&w.deployment],
        );
    }
    if let Some(app) = &p.argocd {
        by_ns.entry(app.namespace.clone()).or_default().allow(
            "argoproj.io",
            "applications",
            "get",
            &[&app.application],
        );
    }
    (by_ns, namespaces)
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    let mut labels = BTreeMap::new();
    labels.insert("app.kubernetes.io/name".to_string(), NAME.to_string());
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(String::from),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn subject(suite: &Suite) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(suite.namespace.clone()),
        ..Subject::default()
    }]
}

/// Every manifest, as one multi-document YAML stream.
pub fn manifests(suite: &Suite) -> String {
    let (by_ns, namespaces) = rules(suite);
    let mut docs: Vec<serde_json::Value> = Vec::new();
    let mut push = |v: serde_json::Value| docs.push(v);
    push(to_value(ServiceAccount {
        metadata: meta(NAME, Some(&suite.namespace)),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    }));
    for (ns, rules) in by_ns {
        push(to_value(Role {
            metadata: meta(NAME, Some(&ns)),
            rules: Some(rules.policy()),
        }));
        push(to_value(RoleBinding {
            metadata: meta(NAME, Some(&ns)),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: NAME.into(),
            },
            subjects: Some(subject(suite)),
        }));
    }
    let cluster_name = format!("{NAME}-{}", suite.namespace);
    push(to_value(ClusterRole {
        metadata: meta(&cluster_name, None),
        rules: Some(cluster_rules(suite, namespaces)),
        ..ClusterRole::default()
    }));
    push(to_value(ClusterRoleBinding {
        metadata: meta(&cluster_name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_name.clone(),
        },
        subjects: Some(subject(suite)),
    }));
    let mut out = String::from(
        "# Least-privilege RBAC for smokecheck, generated by `smokecheck rbac` from the suite.\n",
    );
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc).unwrap_or_default());
    }
    out
}

/// The namespaces by name, and the IngressClasses the routes name (cluster-scoped; their
/// names are the routes', so not restricted).
fn cluster_rules(suite: &Suite, namespaces: Vec<String>) -> Vec<PolicyRule> {
    let mut rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["namespaces".into()]),
        resource_names: Some(namespaces),
        verbs: vec!["get".into()],
        ..PolicyRule::default()
    }];
    if suite.litellm.ingress.is_some() {
        rules.push(PolicyRule {
            api_groups: Some(vec!["networking.k8s.io".into()]),
            resources: Some(vec!["ingressclasses".into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        });
    }
    rules
}

/// k8s-openapi types serialize with their apiVersion and kind.
fn to_value<T: serde::Serialize>(object: T) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or_default()
}
