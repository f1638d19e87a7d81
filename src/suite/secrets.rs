//! The Secrets a suite reads: one list that the secrets checks, the redactor (which scrubs every
//! value of every Secret read, not only the keys listed here) and `smokecheck rbac` all follow,
//! so what is checked, what is scrubbed and what the RBAC grants cannot drift apart.

use super::{CaSource, Suite};

/// A Secret the suite reads: the keys the deployment needs in it, and whether it gets a
/// `kubernetes::secrets::*` check of its own. The one list the secrets checks, the redactor
/// (which scrubs every value of every Secret read, not only these keys) and `smokecheck rbac`
/// all follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub namespace: String,
    pub name: String,
    pub required: Vec<String>,
    /// Checked on its own (and its SealedSecret's `Synced` reported); otherwise only read.
    pub checked: bool,
}

impl Suite {
    /// Every Secret the suite reads, in report order.
    pub fn secrets(&self) -> Vec<SecretUse> {
        let ns = &self.namespace;
        let l = &self.litellm;
        let mut out = vec![SecretUse {
            namespace: ns.clone(),
            name: l.secret.name.clone(),
            required: vec![l.secret.master_key.clone(), l.secret.vllm_api_key.clone()],
            checked: true,
        }];
        if let Some(k) = &l.chat_key {
            out.push(SecretUse {
                namespace: ns.clone(),
                name: k.secret.clone(),
                required: vec![k.key.clone()],
                checked: false,
            });
        }
        if let Some(db) = &self.database {
            out.push(SecretUse {
                namespace: ns.clone(),
                name: db.secret.name.clone(),
                required: vec![db.secret.username.clone(), db.secret.password.clone()],
                checked: true,
            });
            // Read only where it verifies; a ConfigMap replaces it entirely.
            if db.sslmode.verifies()
                && let CaSource::Secret { name, key } = db.ca_source()
            {
                out.push(SecretUse {
                    namespace: ns.clone(),
                    name,
                    required: vec![key],
                    checked: false,
                });
            }
        }
        for v in &self.vllm {
            if let Some(sec) = &v.secret {
                out.push(SecretUse {
                    namespace: v.namespace.clone(),
                    name: sec.name.clone(),
                    required: vec![sec.api_key.clone()],
                    checked: true,
                });
            }
        }
        out
    }
}
