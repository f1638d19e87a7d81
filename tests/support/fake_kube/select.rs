//! `labelSelector` and `fieldSelector` as the apiserver evaluates them: comma means AND;
//! `!=` and `notin` also match objects without the label; unsupported field labels are a 400.

use serde_json::Value;

use super::scenario::str_at;

#[derive(Debug, PartialEq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Splits on commas outside parentheses.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {text:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn parse_label_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().to_string()));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().to_string();
    let rest = words.next().unwrap_or_default().trim();
    if rest.is_empty() {
        return Ok(Requirement::Exists(key));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(key, parse_set(set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(key, parse_set(set)?));
    }
    Err(format!("unable to parse requirement: {part:?}"))
}

/// Whether `object`'s labels satisfy `selector`; Err is the apiserver's 400 message.
pub fn labels_match(selector: &str, object: &Value) -> Result<bool, String> {
    let labels = object.pointer("/metadata/labels");
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    for part in split_top_level(selector) {
        let ok = match parse_label_requirement(part)? {
            Requirement::Exists(k) => label(&k).is_some(),
            Requirement::NotExists(k) => label(&k).is_none(),
            Requirement::In(k, values) => label(&k).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(k, values) => {
                label(&k).is_none_or(|v| values.iter().all(|x| x != v))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Field labels the apiserver supports per kind (beyond metadata.name and metadata.namespace).
fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Secret" => &["type"],
        "Namespace" => &["status.phase"],
        "Job" => &["status.successful"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
        ],
        _ => &[],
    }
}

fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Whether `object` satisfies the field selector; Err is the apiserver's 400 message.
pub fn fields_match(selector: &str, kind: &str, object: &Value) -> Result<bool, String> {
    for part in split_top_level(selector) {
        let (field, negate, value) = if let Some((f, v)) = part.split_once("!=") {
            (f, true, v)
        } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (f, false, v)
        } else {
            return Err(format!(
                "invalid selector: '{part}'; can't understand '{part}'"
            ));
        };
        let field = field.trim();
        if !matches!(field, "metadata.name" | "metadata.namespace")
            && !supported_fields(kind).contains(&field)
        {
            return Err(format!("field label not supported: {field}"));
        }
        let actual = if field == "metadata.namespace" {
            str_at(object, "/metadata/namespace")
                .unwrap_or_default()
                .to_string()
        } else {
            field_value(object, field)
        };
        if (actual == value.trim()) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}
