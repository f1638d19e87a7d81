//! RBAC as the API server evaluates it, for the scenario's user: a request is allowed when a
//! rule of a Role bound in its namespace, or of a ClusterRole bound cluster-wide (or in the
//! namespace through a RoleBinding), matches its API group, resource, verb and name.
//! Discovery (`/api`, `/apis`, `/version`) is open to authenticated users and not checked here.

use serde_json::Value;

use super::scenario::str_at;

/// The RBAC objects being enforced.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    objects: Vec<Value>,
}

impl Rbac {
    /// From a multi-document YAML stream (what `smokecheck rbac` prints).
    pub fn from_yaml(text: &str) -> Rbac {
        let objects: Vec<Value> =
            serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("RBAC manifests: {e}"));
        Rbac {
            objects: objects.into_iter().filter(|o| !o.is_null()).collect(),
        }
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |o| str_at(o, "/kind") == Some(kind))
    }

    fn binds(binding: &Value, user: &str) -> bool {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| match str_at(s, "/kind") {
                Some("ServiceAccount") => {
                    let ns = str_at(s, "/namespace").unwrap_or_default();
                    let name = str_at(s, "/name").unwrap_or_default();
                    user == format!("system:serviceaccount:{ns}:{name}")
                }
                Some("User") => str_at(s, "/name") == Some(user),
                _ => false,
            })
    }

    fn role<'a>(&'a self, kind: &'a str, name: &str, namespace: Option<&str>) -> Option<&'a Value> {
        self.of_kind(kind).find(|r| {
            str_at(r, "/metadata/name") == Some(name)
                && (kind == "ClusterRole" || str_at(r, "/metadata/namespace") == namespace)
        })
    }

    /// Whether `user` may `verb` the `resource` (with subresource, e.g. `pods/log`) of `group`,
    /// in `namespace` (None: cluster scope), named `name` (None: a list).
    pub fn allows(
        &self,
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        let mut roles: Vec<&Value> = Vec::new();
        for crb in self
            .of_kind("ClusterRoleBinding")
            .filter(|b| Self::binds(b, user))
        {
            if let Some(r) = self.role(
                "ClusterRole",
                str_at(crb, "/roleRef/name").unwrap_or_default(),
                None,
            ) {
                roles.push(r);
            }
        }
        if let Some(ns) = namespace {
            for rb in self
                .of_kind("RoleBinding")
                .filter(|b| str_at(b, "/metadata/namespace") == Some(ns) && Self::binds(b, user))
            {
                let kind = str_at(rb, "/roleRef/kind").unwrap_or("Role");
                let role_ns = (kind == "Role").then_some(ns);
                if let Some(r) = self.role(
                    kind,
                    str_at(rb, "/roleRef/name").unwrap_or_default(),
                    role_ns,
                ) {
                    roles.push(r);
                }
            }
        }
        let has = |list: &Value, want: &str| {
            list.as_array()
                .into_iter()
                .flatten()
                .any(|v| v.as_str() == Some(want) || v.as_str() == Some("*"))
        };
        roles
            .iter()
            .flat_map(|r| r["rules"].as_array().into_iter().flatten())
            .any(|rule| {
                has(&rule["apiGroups"], group)
                    && has(&rule["resources"], resource)
                    && has(&rule["verbs"], verb)
                    && match rule["resourceNames"].as_array() {
                        Some(names) if !names.is_empty() => {
                            name.is_some_and(|n| names.iter().any(|v| v.as_str() == Some(n)))
                        }
                        _ => true,
                    }
            })
    }
}
