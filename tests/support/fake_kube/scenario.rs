//! Scenarios: folders of manifests as `kubectl get -o yaml` prints them, loaded into JSON values.
//!
//! A scenario may start from another (`base:` in `_scenario.yaml`), delete some of its objects and
//! replace others; the format is documented in `tests/fixtures/scenarios/README.md`. Loading is
//! independent of the server so tests can look objects up (e.g. secret values that must never
//! appear in output) without starting anything.
//!
//! What ages cannot be written down: a timestamp `${now-12m}` is filled in at load (a restart
//! "in the last hour" stays in the last hour), and a TLS Secret named under `certificates:` gets
//! a certificate generated then (tests/support/certs.rs), valid or expiring relative to now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::support::certs::{self, CertSpec, Generated};

/// The default identity the fake API server reports in 403 messages.
pub const DEFAULT_USER: &str = "system:serviceaccount:litellm:smokecheck";

/// One scenario, fully resolved (bases applied).
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// Every object, in load order (base first).
    pub objects: Vec<Value>,
    /// Logs by (namespace, pod, file name), file names being `<container>.log` or
    /// `<container>.previous.log`.
    pub logs: BTreeMap<(String, String, String), String>,
    /// Requests answered with 403.
    pub forbid: Vec<Forbid>,
    /// The user named in 403 messages.
    pub user: String,
    /// CRD API groups absent from discovery (and 404 on their paths).
    pub crds_not_installed: Vec<String>,
    /// Opt-in CRD API groups served (Traefik's, `fake_kube::OPT_IN_GROUPS`).
    pub crds_installed: Vec<String>,
}

/// A (verb, resource, namespace) triple the scenario's user may not perform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forbid {
    /// `get`, `list`, `watch`, ...
    pub verb: String,
    /// Plural resource name, with subresource if any (`pods`, `pods/log`).
    pub resource: String,
    /// Namespace; absent forbids it everywhere (including cluster-wide requests).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Identifies an object of a base scenario to delete.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Deletion {
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    #[serde(default, rename = "apiVersion")]
    api_version: Option<String>,
}

/// A TLS Secret whose `tls.crt` and `tls.key` are generated at load (`certificates:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub namespace: String,
    /// The Secret to fill: it must exist in the scenario (this folder or its base).
    pub secret: String,
    /// DNS names the certificate is for.
    pub hosts: Vec<String>,
    /// Days left; negative: expired that many days ago.
    #[serde(default = "sixty_days")]
    pub expires_in_days: i64,
    /// Signed by its own key instead of the bed's test CA.
    #[serde(default)]
    pub self_signed: bool,
}

fn sixty_days() -> i64 {
    60
}

impl Certificate {
    pub fn spec(&self) -> CertSpec {
        CertSpec {
            hosts: self.hosts.clone(),
            expires_in: self.expires_in_days * certs::DAY,
            self_signed: self.self_signed,
        }
    }
}

/// `_scenario.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    delete: Vec<Deletion>,
    #[serde(default)]
    forbid: Vec<Forbid>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    crds_not_installed: Option<Vec<String>>,
    #[serde(default)]
    crds_installed: Option<Vec<String>>,
    #[serde(default)]
    certificates: Vec<Certificate>,
    /// Free text saying what the scenario breaks; not interpreted.
    #[serde(default)]
    description: Option<String>,
}

/// `tests/fixtures/scenarios`.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scenarios")
}

/// Every scenario folder's name, sorted.
pub fn scenario_names() -> Vec<String> {
    let dir = scenarios_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Loads `tests/fixtures/scenarios/<name>`, panicking with the file and cause on any error.
pub fn load_scenario(name: &str) -> Scenario {
    load(name, &mut Vec::new())
}

fn load(name: &str, chain: &mut Vec<String>) -> Scenario {
    if chain.iter().any(|seen| seen == name) {
        panic!("scenario base cycle: {} -> {name}", chain.join(" -> "));
    }
    chain.push(name.to_string());
    let dir = scenarios_dir().join(name);
    if !dir.is_dir() {
        panic!("scenario {name:?}: no folder {}", dir.display());
    }
    let meta_path = dir.join("_scenario.yaml");
    let meta: Meta = if meta_path.exists() {
        let text = read(&meta_path);
        serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", meta_path.display()))
    } else {
        Meta::default()
    };
    let _ = &meta.description;

    let mut scenario = match &meta.base {
        Some(base) => load(base, chain),
        None => Scenario {
            name: name.to_string(),
            objects: Vec::new(),
            logs: BTreeMap::new(),
            forbid: Vec::new(),
            user: DEFAULT_USER.to_string(),
            crds_not_installed: Vec::new(),
            crds_installed: Vec::new(),
        },
    };
    scenario.name = name.to_string();

    for deletion in &meta.delete {
        let before = scenario.objects.len();
        scenario.objects.retain(|object| !deletion.matches(object));
        if deletion.kind == "Pod" {
            scenario.drop_logs(
                deletion.namespace.as_deref().unwrap_or_default(),
                &deletion.name,
            );
        }
        if scenario.objects.len() == before {
            panic!(
                "{}: delete {deletion:?} matches no object of base {:?}",
                meta_path.display(),
                meta.base
            );
        }
    }
    let now = certs::now();
    for mut object in read_objects(&dir) {
        expand_times(&mut object, now, &dir);
        let key = identity(&object);
        // A replaced pod is a different pod state: its logs are the overlay's only, so a pod
        // that now fails to pull its image does not serve the healthy startup log.
        if key.1 == "Pod" {
            scenario.drop_logs(&key.2, &key.3);
        }
        match scenario.objects.iter_mut().find(|o| identity(o) == key) {
            Some(existing) => *existing = object,
            None => scenario.objects.push(object),
        }
    }
    read_logs(&dir.join("logs"), &mut scenario.logs);
    scenario.forbid.extend(meta.forbid);
    if let Some(user) = meta.user {
        scenario.user = user;
    }
    if let Some(groups) = meta.crds_not_installed {
        scenario.crds_not_installed = groups;
    }
    if let Some(groups) = meta.crds_installed {
        scenario.crds_installed = groups;
    }
    for cert in &meta.certificates {
        scenario.set_certificate(
            &cert.namespace,
            &cert.secret,
            &certs::generate(&cert.spec()),
        );
    }
    chain.pop();
    scenario
}

impl Deletion {
    fn matches(&self, object: &Value) -> bool {
        str_at(object, "/kind") == Some(self.kind.as_str())
            && str_at(object, "/metadata/name") == Some(self.name.as_str())
            && str_at(object, "/metadata/namespace") == self.namespace.as_deref()
            && self
                .api_version
                .as_deref()
                .is_none_or(|v| str_at(object, "/apiVersion") == Some(v))
    }
}

/// Replaces every string `${now}`, `${now-12m}` or `${now+10d}` (units s, m, h, d) in `value`
/// with that time as RFC 3339 in UTC, seconds precision, as the apiserver writes timestamps.
fn expand_times(value: &mut Value, now: i64, dir: &Path) {
    match value {
        Value::String(text) if text.starts_with("${now") => {
            let unix = relative_time(text, now).unwrap_or_else(|| {
                panic!(
                    "{}: {text:?} is no time relative to now (${{now}}, ${{now-12m}}, ${{now+10d}}: s, m, h, d)",
                    dir.display()
                )
            });
            *text = rfc3339(unix);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| expand_times(v, now, dir)),
        Value::Object(map) => map.values_mut().for_each(|v| expand_times(v, now, dir)),
        _ => {}
    }
}

/// The Unix time `${now±N<unit>}` names, `now` being the given Unix time; `None` for any other
/// text.
pub fn relative_time(text: &str, now: i64) -> Option<i64> {
    let inner = text.strip_prefix("${now")?.strip_suffix('}')?;
    if inner.is_empty() {
        return Some(now);
    }
    let (sign, rest) = match inner.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (digits, unit) = rest.split_at_checked(rest.len().checked_sub(1)?)?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => certs::DAY,
        _ => return None,
    };
    // Digits only: the sign was the one before them.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = i64::from(digits.parse::<u32>().ok()?);
    Some(now + sign * n * unit)
}

/// `2026-12-04T00:20:50Z`.
pub fn rfc3339(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .expect("a time within jiff's range")
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The YAML files directly in `dir` (not `_scenario.yaml`), in file-name order.
fn read_objects(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
                && path.file_name().and_then(|n| n.to_str()) != Some("_scenario.yaml")
        })
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for path in files {
        let text = read(&path);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        for doc in docs {
            if doc.is_null() {
                continue;
            }
            if str_at(&doc, "/kind") == Some("List") {
                let items = doc
                    .get("items")
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("{}: a List without items", path.display()));
                objects.extend(items.iter().cloned());
            } else {
                objects.push(doc);
            }
        }
    }
    for object in &objects {
        for field in ["/apiVersion", "/kind", "/metadata/name"] {
            if str_at(object, field).is_none() {
                panic!("{}: an object without {field}: {object}", dir.display());
            }
        }
    }
    objects
}

fn read_logs(dir: &Path, logs: &mut BTreeMap<(String, String, String), String>) {
    let Ok(namespaces) = std::fs::read_dir(dir) else {
        return;
    };
    for ns in namespaces.filter_map(|e| e.ok()) {
        for pod in std::fs::read_dir(ns.path())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
        {
            for file in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
            {
                let key = (
                    ns.file_name().to_string_lossy().into_owned(),
                    pod.file_name().to_string_lossy().into_owned(),
                    file.file_name().to_string_lossy().into_owned(),
                );
                logs.insert(key, read(&file.path()));
            }
        }
    }
}

/// (apiVersion, kind, namespace, name): objects with equal identity replace each other.
pub fn identity(object: &Value) -> (String, String, String, String) {
    let s = |p| str_at(object, p).unwrap_or_default().to_string();
    (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

pub fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

impl Scenario {
    fn drop_logs(&mut self, namespace: &str, pod: &str) {
        self.logs
            .retain(|(ns, p, _), _| !(ns == namespace && p == pod));
    }

    /// The object of this kind, namespace (None for cluster-scoped) and name.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| {
            str_at(o, "/kind") == Some(kind)
                && str_at(o, "/metadata/namespace") == namespace
                && str_at(o, "/metadata/name") == Some(name)
        })
    }

    /// Like [`Scenario::get`], panicking with a useful message when absent.
    pub fn object(&self, kind: &str, namespace: Option<&str>, name: &str) -> &Value {
        self.get(kind, namespace, name)
            .unwrap_or_else(|| panic!("scenario {}: no {kind} {namespace:?}/{name}", self.name))
    }

    /// All objects of a kind, in any namespace.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |o| str_at(o, "/kind") == Some(kind))
    }

    /// A Secret's decoded value (`data`, else `stringData`), if the secret and key exist.
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let secret = self.get("Secret", Some(namespace), name)?;
        if let Some(encoded) = secret
            .pointer(&format!("/data/{key}"))
            .and_then(Value::as_str)
        {
            return Some(decode_base64(encoded));
        }
        secret
            .pointer(&format!("/stringData/{key}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Sets one key of a Secret (base64-encoded into `data`); panics when the Secret is absent.
    pub fn set_secret_value(&mut self, namespace: &str, name: &str, key: &str, value: &str) {
        let scenario = self.name.clone();
        let secret = self
            .objects
            .iter_mut()
            .find(|o| {
                str_at(o, "/kind") == Some("Secret")
                    && str_at(o, "/metadata/namespace") == Some(namespace)
                    && str_at(o, "/metadata/name") == Some(name)
            })
            .unwrap_or_else(|| panic!("scenario {scenario}: no Secret {namespace}/{name}"));
        if !secret["data"].is_object() {
            secret["data"] = Value::Object(Default::default());
        }
        secret["data"][key] =
            Value::from(base64::engine::general_purpose::STANDARD.encode(value.as_bytes()));
    }

    /// Puts a generated certificate and its key into a Secret's `tls.crt` and `tls.key` (other
    /// keys and the Secret's type stay as they are); panics when the Secret is absent.
    pub fn set_certificate(&mut self, namespace: &str, name: &str, cert: &Generated) {
        self.set_secret_value(namespace, name, "tls.crt", &cert.cert_pem);
        self.set_secret_value(namespace, name, "tls.key", &cert.key_pem);
    }

    /// Every non-empty decoded sensitive Secret value of the scenario (not the CNPG keys that
    /// only name things, see [`NOT_SENSITIVE`]): none may appear in any output.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values = Vec::new();
        for secret in self.of_kind("Secret") {
            for field in ["data", "stringData"] {
                let Some(map) = secret.get(field).and_then(Value::as_object) else {
                    continue;
                };
                let sensitive = map
                    .iter()
                    .filter(|(key, _)| !NOT_SENSITIVE.contains(&key.as_str()))
                    .filter_map(|(_, value)| value.as_str());
                for value in sensitive {
                    let value = if field == "data" {
                        decode_base64(value)
                    } else {
                        value.to_string()
                    };
                    if !value.is_empty() {
                        values.push(value);
                    }
                }
            }
        }
        values
    }

    /// A container's log: the current one, or the previous instance's.
    pub fn log(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<&str> {
        let file = if previous {
            format!("{container}.previous.log")
        } else {
            format!("{container}.log")
        };
        self.logs
            .get(&(namespace.to_string(), pod.to_string(), file))
            .map(String::as_str)
    }
}

/// Secret keys whose values are names, not secrets (CNPG writes them beside the password).
pub const NOT_SENSITIVE: &[&str] = &["username", "user", "dbname", "host", "port", "ca.crt"];

fn decode_base64(encoded: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap_or_else(|e| panic!("secret value {encoded:?} is not base64: {e}"));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("secret value is not UTF-8: {e}"))
}
