//! Guardrail wiring: the proxy config declares the guardrail and enables it, and the ConfigMap
//! holding its Python module is mounted where LiteLLM will import it from.
//!
//! LiteLLM resolves `guardrail: pkg.module.Class` first as a file relative to the config file's
//! directory (`<dir>/pkg/module.py`), otherwise through Python's import path: the container's
//! working directory (`/app` in the LiteLLM image) or a `PYTHONPATH` entry. A module mounted
//! anywhere else is not found and the proxy fails at start. This check is the static half; the
//! trimming check of the end-to-end layer is the behavioural proof.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};

use crate::check::Check;
use crate::context::ProxyConfigError;
use crate::outcome::{Cause, Failure, Layer, Passed, ProbeResult, Verdict};
use crate::proxy_config::ProxyConfig;
use crate::suite::{Guardrail, Suite};

use super::in_namespace;

pub fn check(suite: &Arc<Suite>, guardrail: &Guardrail) -> Check {
    let check_name = super::guardrail_name(&guardrail.name);
    let s = Arc::clone(suite);
    let g = guardrail.clone();
    in_namespace(
        Check::new(check_name, Layer::Kubernetes, move |cx, attempt| {
            let (s, g) = (Arc::clone(&s), g.clone());
            async move {
                let ns = &s.namespace;
                let l = &s.litellm;
                // The run read the proxy config once; its declaration is judged from that.
                let config = cx.proxy_config.as_ref().map_err(unreadable)?;
                let declared = declaration(config, &g.name)?;
                attempt.observe(format!("getting configmap {ns}/{}", g.configmap));
                let Some(module_cm) = cx.cluster.get::<ConfigMap>(ns, &g.configmap).await? else {
                    return Err(Failure::new(
                            Cause::NotFound,
                            format!("configmap {ns}/{} (the guardrail module) not found", g.configmap),
                        )
                        .hint("the guardrail's ConfigMap is not deployed: check the Helm values / kustomization that generates it"));
                };
                let keys: Vec<String> = module_cm
                    .data
                    .iter()
                    .flat_map(|d| d.keys().cloned())
                    .chain(module_cm.binary_data.iter().flat_map(|d| d.keys().cloned()))
                    .collect();
                attempt.observe(format!("listing LiteLLM pods {}", l.pods.selector));
                let pods = cx.cluster.list::<Pod>(ns, Some(&l.pods.selector)).await?;
                let Some(pod) = newest(&pods) else {
                    return Ok(Verdict::skip(format!(
                        "no LiteLLM pod to inspect (see {})",
                        super::pods_name("litellm")
                    )));
                };
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                let Some(spec) = pod.spec.as_ref() else {
                    return Ok(Verdict::skip(format!("pod {pod_name} has no spec")));
                };
                wiring(
                    &declared,
                    spec,
                    l.pods.container.as_deref(),
                    &g,
                    &keys,
                    &pod_name,
                )
            }
        }),
        &suite.namespace,
    )
}

/// What the proxy config says about the guardrail.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    /// `pkg.module.Class`.
    target: String,
    /// Aliases whose `litellm_params.guardrails` name it.
    enabled_on: Vec<String>,
    default_on: bool,
}

/// Why the guardrail's declaration cannot be judged: the run has no proxy config.
fn unreadable(e: &ProxyConfigError) -> Failure {
    match e {
        ProxyConfigError::Unreadable(f) => f.clone(),
        ProxyConfigError::NotFound { configmap } => Failure::new(
            Cause::NotFound,
            format!("configmap {configmap} (the proxy config) not found"),
        ),
        ProxyConfigError::NoKey { configmap, key } => Failure::new(
            Cause::ConfigInvalid,
            format!("configmap {configmap} has no key {key}"),
        ),
        ProxyConfigError::Invalid { error, .. } => {
            Failure::new(Cause::ConfigInvalid, "the proxy config is not valid YAML")
                .details(error.clone())
                .hint("fix config.yaml in the Helm values; LiteLLM will not start with it")
        }
    }
}

fn declaration(config: &ProxyConfig, guardrail: &str) -> Result<Declared, Failure> {
    let Some(decl) = config.guardrails.iter().find(|g| g.name == guardrail) else {
        return Err(Failure::new(
            Cause::GuardrailNotDeclared,
            format!("the proxy config declares no guardrail named {guardrail}"),
        )
        .hint(format!(
            "add {guardrail} under `guardrails:` in config.yaml (guardrail: <pkg>.<module>.<Class>, mode: pre_call); without it oversized prompts reach vLLM and fail with context-length errors"
        )));
    };
    // `pkg.module.Class`, or `module.Class` for a module beside the config file (LiteLLM's docs).
    if decl.target.split('.').count() < 2 || decl.target.split('.').any(str::is_empty) {
        return Err(Failure::new(
            Cause::ConfigInvalid,
            format!(
                "guardrail {guardrail}: litellm_params.guardrail is {:?}, expected <module>.<Class> or <pkg>.<module>.<Class>",
                decl.target
            ),
        ));
    }
    let enabled_on = config
        .aliases
        .iter()
        .filter(|a| a.guardrails.iter().any(|g| g == guardrail))
        .map(|a| a.name.clone())
        .collect();
    Ok(Declared {
        target: decl.target.clone(),
        enabled_on,
        default_on: decl.default_on,
    })
}

fn newest(pods: &[Pod]) -> Option<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        })
}

/// The config file path the container starts LiteLLM with (`--config X`, `--config=X`, `-c X`
/// or `CONFIG_FILE_PATH`).
fn config_path(container: &Container) -> Option<String> {
    let words: Vec<&String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .collect();
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix("--config=") {
            return Some(v.to_string());
        }
        if (w.as_str() == "--config" || w.as_str() == "-c") && i + 1 < words.len() {
            return Some(words[i + 1].to_string());
        }
    }
    env_value(container, "CONFIG_FILE_PATH")
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((dir, _)) => dir.into(),
        None => ".".into(),
    }
}

fn join(dir: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

/// The files a ConfigMap volume mount puts into the container, given the ConfigMap's keys.
fn mounted_files(
    spec: &PodSpec,
    container: &Container,
    configmap: &str,
    keys: &[String],
) -> Vec<String> {
    let mut files = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        // (key → path within the volume) for this ConfigMap, from a plain or projected volume.
        let mut layout: Vec<(String, String)> = Vec::new();
        let mut add = |items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>, prefix: &str| {
            match items {
                Some(items) if !items.is_empty() => {
                    layout.extend(items.iter().map(|i| (i.key.clone(), join(prefix, &i.path))));
                }
                _ => layout.extend(keys.iter().map(|k| (k.clone(), join(prefix, k)))),
            }
        };
        if let Some(cm) = &volume.config_map
            && cm.name == configmap
        {
            add(cm.items.as_ref(), "");
        }
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(cm) = &source.config_map
                    && cm.name == configmap
                {
                    add(cm.items.as_ref(), "");
                }
            }
        }
        if layout.is_empty() {
            continue;
        }
        for mount in container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == volume.name)
        {
            let sub = mount.sub_path.clone().unwrap_or_default();
            let sub = sub.trim_matches('/');
            for (_, path) in &layout {
                let path = path.trim_start_matches('/');
                if sub.is_empty() {
                    files.push(join(&mount.mount_path, path));
                } else if path == sub {
                    files.push(mount.mount_path.clone());
                } else if let Some(rest) = path.strip_prefix(&format!("{sub}/")) {
                    files.push(join(&mount.mount_path, rest));
                }
            }
        }
    }
    files
}

fn wiring(
    declared: &Declared,
    spec: &PodSpec,
    container: Option<&str>,
    g: &Guardrail,
    keys: &[String],
    pod: &str,
) -> ProbeResult {
    let Some(c) = container
        .and_then(|name| spec.containers.iter().find(|c| c.name == name))
        .or_else(|| spec.containers.first())
    else {
        return Ok(Verdict::skip(format!("pod {pod} has no containers")));
    };
    // pkg.module.Class → pkg/module.py
    let parts: Vec<&str> = declared.target.split('.').collect();
    let module_file = format!("{}.py", parts[..parts.len() - 1].join("/"));

    let mut searched: Vec<(String, String)> = Vec::new();
    if let Some(cfg) = config_path(c) {
        let dir = parent(&cfg);
        searched.push((
            join(&dir, &module_file),
            format!("relative to the config file's directory {dir}"),
        ));
    }
    let workdir = c.working_dir.clone().unwrap_or_else(|| g.workdir.clone());
    searched.push((
        join(&workdir, &module_file),
        format!("import path: working directory {workdir}"),
    ));
    for entry in env_value(c, "PYTHONPATH")
        .iter()
        .flat_map(|p| p.split(':').map(String::from).collect::<Vec<_>>())
    {
        if !entry.is_empty() {
            searched.push((
                join(&entry, &module_file),
                format!("import path: PYTHONPATH entry {entry}"),
            ));
        }
    }

    let files = mounted_files(spec, c, &g.configmap, keys);
    let searched_list = searched
        .iter()
        .map(|(path, why)| format!("  {path} ({why})"))
        .collect::<Vec<_>>()
        .join("\n");
    if files.is_empty() {
        return Err(Failure::new(
            Cause::GuardrailNotMounted,
            format!("configmap {} is not mounted into container {} of pod {pod}", g.configmap, c.name),
        )
        .details(format!("LiteLLM looks for {module_file} at:\n{searched_list}"))
        .hint(format!(
            "mount {} into the LiteLLM container so that {module_file} lands at one of the paths above (e.g. {})",
            g.configmap,
            match module_file.rsplit_once('/') {
                Some((dir, _)) => format!("mountPath {}/{dir}", workdir.trim_end_matches('/')),
                None => format!(
                    "mountPath {}/{module_file} with subPath {module_file}",
                    workdir.trim_end_matches('/')),
            }
        ))
        );
    }
    let Some((path, why)) = searched.iter().find(|(p, _)| files.contains(p)) else {
        return Err(Failure::new(
            Cause::GuardrailWrongPath,
            format!(
                "configmap {} is mounted at {}, where LiteLLM will not import {} from",
                g.configmap,
                files.join(", "),
                declared.target
            ),
        )
        .details(format!("LiteLLM looks for {module_file} at:\n{searched_list}"))
        .hint("move the mount to one of the paths above (or add its parent to PYTHONPATH); as it is, the proxy fails at start with ModuleNotFoundError"));
    };
    if declared.enabled_on.is_empty() && !declared.default_on {
        return Err(Failure::new(
            Cause::GuardrailNotEnabled,
            format!("guardrail {} is declared and mounted, but no model enables it and default_on is false", g.name),
        )
        .hint(format!(
            "add `guardrails: [\"{}\"]` to each model's litellm_params in config.yaml",
            g.name
        ))
        );
    }
    let on = if declared.default_on {
        "all models (default_on)".to_string()
    } else {
        declared.enabled_on.join(", ")
    };
    Ok(Passed::new(format!(
        "{module_file} mounted at {path} ({why}); enabled on {on}"
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "
model_list:
  - model_name: small
    litellm_params: {model: openai/x, guardrails: [message_trimming]}
  - model_name: big
    litellm_params: {model: openai/y}
guardrails:
  - guardrail_name: message_trimming
    litellm_params: {guardrail: custom_guardrails.message_overflow.MessageTrimming, mode: pre_call}
";

    fn config(text: &str) -> ProxyConfig {
        ProxyConfig::parse(text).expect("a proxy config")
    }

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).expect("pod spec fixture")
    }

    fn pod_with_mount(mount: serde_json::Value, env: serde_json::Value) -> PodSpec {
        spec(serde_json::json!({
            "containers": [{"name": "litellm", "args": ["--config", "/etc/litellm/config.yaml"],
                "env": env, "volumeMounts": [mount]}],
            "volumes": [{"name": "guard", "configMap": {"name": "message-trimming-config"}}]
        }))
    }

    fn judge(spec: &PodSpec) -> ProbeResult {
        let declared = declaration(&config(CONFIG), "message_trimming").expect("declared");
        wiring(
            &declared,
            spec,
            Some("litellm"),
            &Guardrail::default(),
            &["message_overflow.py".into()],
            "p",
        )
    }

    #[test]
    fn declaration_lists_the_models_that_enable_it() {
        let d = declaration(&config(CONFIG), "message_trimming").expect("declared");
        assert_eq!(
            d.target,
            "custom_guardrails.message_overflow.MessageTrimming"
        );
        assert_eq!(d.enabled_on, vec!["small".to_string()]);
    }

    #[test]
    fn mounted_under_the_working_directory_passes() {
        let s = pod_with_mount(
            serde_json::json!({"name": "guard", "mountPath": "/app/custom_guardrails"}),
            serde_json::json!([]),
        );
        let Ok(Verdict::Passed(p)) = judge(&s) else {
            panic!("{:?}", judge(&s))
        };
        assert!(
            p.summary.contains("working directory /app"),
            "{}",
            p.summary
        );
    }

    #[test]
    fn subpath_mount_next_to_the_config_file_passes() {
        let s = pod_with_mount(
            serde_json::json!({"name": "guard", "mountPath": "/etc/litellm/custom_guardrails/message_overflow.py", "subPath": "message_overflow.py"}),
            serde_json::json!([]),
        );
        let Ok(Verdict::Passed(p)) = judge(&s) else {
            panic!("{:?}", judge(&s))
        };
        assert!(
            p.summary.contains("config file's directory /etc/litellm"),
            "{}",
            p.summary
        );
    }

    #[test]
    fn pythonpath_entry_passes() {
        let s = pod_with_mount(
            serde_json::json!({"name": "guard", "mountPath": "/opt/guardrails/custom_guardrails"}),
            serde_json::json!([{"name": "PYTHONPATH", "value": "/opt/guardrails"}]),
        );
        let Ok(Verdict::Passed(p)) = judge(&s) else {
            panic!("{:?}", judge(&s))
        };
        assert!(
            p.summary.contains("PYTHONPATH entry /opt/guardrails"),
            "{}",
            p.summary
        );
    }

    #[test]
    fn wrong_path_fails_and_lists_the_searched_paths() {
        let s = pod_with_mount(
            serde_json::json!({"name": "guard", "mountPath": "/opt/guardrails"}),
            serde_json::json!([]),
        );
        let Err(f) = judge(&s) else { panic!() };
        assert_eq!(f.cause, Cause::GuardrailWrongPath);
        let details = f.details.unwrap_or_default();
        assert!(
            details.contains("/etc/litellm/custom_guardrails/message_overflow.py"),
            "{details}"
        );
        assert!(
            details.contains("/app/custom_guardrails/message_overflow.py"),
            "{details}"
        );
    }

    #[test]
    fn a_top_level_module_beside_the_config_file_is_accepted() {
        let text = CONFIG.replace(
            "custom_guardrails.message_overflow.MessageTrimming",
            "custom_guardrail.MyGuardrail",
        );
        let declared = declaration(&config(&text), "message_trimming").expect("declared");
        let s = pod_with_mount(
            serde_json::json!({"name": "guard", "mountPath": "/etc/litellm/custom_guardrail.py", "subPath": "message_overflow.py"}),
            serde_json::json!([]),
        );
        let out = wiring(
            &declared,
            &s,
            Some("litellm"),
            &Guardrail::default(),
            &["message_overflow.py".into()],
            "p",
        );
        let Ok(Verdict::Passed(p)) = out else {
            panic!("{out:?}")
        };
        assert!(
            p.summary
                .starts_with("custom_guardrail.py mounted at /etc/litellm/custom_guardrail.py"),
            "{}",
            p.summary
        );
    }

    #[test]
    fn a_proxy_config_the_run_could_not_read_fails_the_check_in_its_own_words() {
        let configmap = "litellm/litellm-config".to_string();
        let missing = unreadable(&ProxyConfigError::NotFound {
            configmap: configmap.clone(),
        });
        assert_eq!(missing.cause, Cause::NotFound);
        assert_eq!(
            missing.summary,
            "configmap litellm/litellm-config (the proxy config) not found"
        );
        let no_key = unreadable(&ProxyConfigError::NoKey {
            configmap: configmap.clone(),
            key: "config.yaml".into(),
        });
        assert_eq!(no_key.cause, Cause::ConfigInvalid);
        assert_eq!(
            no_key.summary,
            "configmap litellm/litellm-config has no key config.yaml"
        );
        let invalid = unreadable(&ProxyConfigError::Invalid {
            configmap,
            key: "config.yaml".into(),
            error: "line 2: mapping values are not allowed here".into(),
        });
        assert_eq!(invalid.summary, "the proxy config is not valid YAML");
        assert_eq!(
            invalid.details.as_deref(),
            Some("line 2: mapping values are not allowed here")
        );
        let forbidden = Failure::new(Cause::Forbidden, "forbidden: cannot get configmaps");
        assert_eq!(
            unreadable(&ProxyConfigError::Unreadable(forbidden.clone())),
            forbidden
        );
    }

    #[test]
    fn undeclared_guardrail_fails() {
        let err = declaration(&config("model_list: []\n"), "message_trimming").unwrap_err();
        assert_eq!(err.cause, Cause::GuardrailNotDeclared);
    }
}
