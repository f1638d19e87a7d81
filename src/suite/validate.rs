//! What serde cannot check in a suite: object names, data keys and selectors in the shapes the
//! API server takes, duplicates, ranges, and fields that exclude each other. Each error names
//! the dotted field; [`super::parse`] turns it into a line and column.

use super::{Guardrail, Suite};

impl Suite {
    /// Checks what serde cannot: returns the dotted field and what is wrong with it.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.version != super::VERSION {
            return Err((
                "version".into(),
                format!(
                    "unsupported suite version {} (this smokecheck reads version {})",
                    self.version,
                    super::VERSION
                ),
            ));
        }
        check_name("namespace", &self.namespace)?;
        let l = &self.litellm;
        check_selector("litellm.pods.selector", &l.pods.selector)?;
        check_name("litellm.service.name", &l.service.name)?;
        check_name("litellm.secret.name", &l.secret.name)?;
        check_key("litellm.secret.master_key", &l.secret.master_key)?;
        check_key("litellm.secret.vllm_api_key", &l.secret.vllm_api_key)?;
        check_name("litellm.config.configmap", &l.config.configmap)?;
        check_key("litellm.config.key", &l.config.key)?;
        if let Some(job) = &l.migration_job {
            check_name("litellm.migration_job", job)?;
        }
        if let Some(g) = &l.guardrail {
            not_empty("litellm.guardrail.name", &g.name)?;
            check_name("litellm.guardrail.configmap", &g.configmap)?;
            if !g.workdir.starts_with('/') {
                return Err((
                    "litellm.guardrail.workdir".into(),
                    format!("must be an absolute path, got {:?}", g.workdir),
                ));
            }
            if !(1..=Guardrail::MAX_MAX_WINDOW).contains(&g.max_window) {
                return Err((
                    "litellm.guardrail.max_window".into(),
                    format!(
                        "must be 1 to {} tokens, got {}",
                        Guardrail::MAX_MAX_WINDOW,
                        g.max_window
                    ),
                ));
            }
        }
        for (i, a) in l.aliases.iter().flatten().enumerate() {
            if a.is_empty() || a.contains(char::is_whitespace) {
                return Err((
                    format!("litellm.aliases[{i}]"),
                    format!("{a:?} is not a model alias"),
                ));
            }
            if l.aliases.iter().flatten().take(i).any(|b| b == a) {
                return Err((
                    format!("litellm.aliases[{i}]"),
                    format!("{a:?} is listed twice"),
                ));
            }
        }
        if let Some(i) = &l.ingress {
            if let Some(name) = &i.name {
                check_name("litellm.ingress.name", name)?;
            }
            for (n, h) in i.hosts.iter().flatten().enumerate() {
                if !is_host(h) {
                    return Err((
                        format!("litellm.ingress.hosts[{n}]"),
                        format!("{h:?} is not a DNS host name"),
                    ));
                }
            }
            for (n, t) in i.tls_secrets.iter().enumerate() {
                check_name(&format!("litellm.ingress.tls_secrets[{n}]"), t)?;
            }
            if !(1..=3650).contains(&i.warn_days) {
                return Err((
                    "litellm.ingress.warn_days".into(),
                    format!("must be 1 to 3650 days, got {}", i.warn_days),
                ));
            }
            if i.fail_days >= i.warn_days {
                return Err((
                    "litellm.ingress.fail_days".into(),
                    format!(
                        "must be under warn_days ({}), got {}",
                        i.warn_days, i.fail_days
                    ),
                ));
            }
        }
        if let Some(k) = &l.chat_key {
            check_name("litellm.chat_key.secret", &k.secret)?;
            check_key("litellm.chat_key.key", &k.key)?;
        }
        if let Some(db) = &self.database {
            check_name("database.cluster", &db.cluster)?;
            check_selector("database.pods.selector", &db.pods.selector)?;
            check_name("database.service.name", &db.service.name)?;
            check_name("database.secret.name", &db.secret.name)?;
            check_key("database.secret.username", &db.secret.username)?;
            check_key("database.secret.password", &db.secret.password)?;
            not_empty("database.name", &db.name)?;
            if let Some(name) = &db.ca_secret.name {
                check_name("database.ca_secret.name", name)?;
            }
            check_key("database.ca_secret.key", &db.ca_secret.key)?;
            if let Some(c) = &db.ca_configmap {
                check_name("database.ca_configmap.name", &c.name)?;
                check_key("database.ca_configmap.key", &c.key)?;
                if db.ca_secret.name.is_some() {
                    return Err((
                        "database.ca_configmap".into(),
                        "the CA is read from one place: set database.ca_configmap or database.ca_secret.name, not both".into(),
                    ));
                }
            }
            if db.tables.is_empty() {
                return Err((
                    "database.tables".into(),
                    "must name at least one table (the default is LiteLLM's core tables)".into(),
                ));
            }
            for (i, t) in db.tables.iter().enumerate() {
                let field = format!("database.tables[{i}]");
                not_empty(&field, t)?;
                if t.contains('"') || t.chars().any(char::is_control) || t.len() > 63 {
                    return Err((
                        field,
                        format!(
                            "{t:?} is not a table name (as created, without quotes; at most 63 bytes)"
                        ),
                    ));
                }
            }
        }
        let p = &self.platform;
        for (field, w) in [
            ("platform.cnpg_operator", &p.cnpg_operator),
            (
                "platform.sealed_secrets_controller",
                &p.sealed_secrets_controller,
            ),
        ] {
            if let Some(w) = w {
                check_name(&format!("{field}.namespace"), &w.namespace)?;
                check_name(&format!("{field}.deployment"), &w.deployment)?;
            }
        }
        if let Some(a) = &p.argocd {
            check_name("platform.argocd.namespace", &a.namespace)?;
            check_name("platform.argocd.application", &a.application)?;
        }
        for (i, v) in self.vllm.iter().enumerate() {
            if self.vllm[..i]
                .iter()
                .any(|w| w.namespace == v.namespace && w.service.name == v.service.name)
            {
                return Err((
                    format!("vllm[{i}]"),
                    format!("service {}/{} is listed twice", v.namespace, v.service.name),
                ));
            }
            check_name(&format!("vllm[{i}].namespace"), &v.namespace)?;
            check_name(&format!("vllm[{i}].service.name"), &v.service.name)?;
            if let Some(s) = &v.secret {
                check_name(&format!("vllm[{i}].secret.name"), &s.name)?;
                check_key(&format!("vllm[{i}].secret.api_key"), &s.api_key)?;
            }
            if let Some(p) = &v.pods {
                check_selector(&format!("vllm[{i}].pods.selector"), &p.selector)?;
            }
            if v.max_model_len == Some(0) {
                return Err((
                    format!("vllm[{i}].max_model_len"),
                    "must be a positive number of tokens".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A host name a client requests: DNS labels of letters, digits and `-` (no wildcard).
fn is_host(h: &str) -> bool {
    let rest = h;
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn not_empty(field: &str, value: &str) -> Result<(), (String, String)> {
    if value.trim().is_empty() {
        return Err((field.into(), "must not be empty".into()));
    }
    Ok(())
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn check_name(field: &str, value: &str) -> Result<(), (String, String)> {
    not_empty(field, value)?;
    let ok = value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err((
            field.into(),
            format!(
                "{value:?} is not a valid Kubernetes name (lowercase letters, digits, '-', '.')"
            ),
        ));
    }
    Ok(())
}

/// A Secret or ConfigMap data key.
fn check_key(field: &str, value: &str) -> Result<(), (String, String)> {
    not_empty(field, value)?;
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        return Err((
            field.into(),
            format!("{value:?} is not a valid data key (letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(())
}

/// A label selector as the API server takes it; only its gross shape is checked here, the
/// server is the judge of the rest.
fn check_selector(field: &str, value: &str) -> Result<(), (String, String)> {
    not_empty(field, value)?;
    if value.contains(char::is_whitespace) && !value.contains('(') {
        return Err((
            field.into(),
            format!("{value:?} is not a label selector (write `key=value,key2=value2`)"),
        ));
    }
    Ok(())
}
