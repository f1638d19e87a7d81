use super::*;

#[test]
fn the_default_suite_matches_the_reference_deployment() {
    let s = parse(crate::suite::BUILTIN_SUITE, "suites/litellm.yaml").expect("parses");
    assert_eq!(s.namespace, "litellm");
    assert_eq!(s.litellm.pods.selector, "app.kubernetes.io/name=litellm");
    assert_eq!(s.litellm.service.port, Some(4000));
    assert_eq!(s.litellm.secret.vllm_api_key, "CA_VLLM_LOCAL_API_KEY");
    let db = s.database.expect("database");
    assert_eq!(db.service.name, "cloudnative-pg-cluster-rw");
    assert_eq!(db.secret.name, "cloudnative-pg-cluster-litellm");
    assert_eq!(s.vllm[0].namespace, "vllm");
    assert_eq!(
        s.litellm.migration_job.as_deref(),
        Some("litellm-migrations")
    );
    assert_eq!(
        s.litellm.guardrail.expect("guardrail").configmap,
        "message-trimming-config"
    );
}

#[test]
fn version_alone_is_the_default_deployment() {
    let minimal = parse("version: 1\n", "m.yaml").expect("parses");
    let full = parse(crate::suite::BUILTIN_SUITE, "f.yaml").expect("parses");
    assert_eq!(format!("{minimal:?}"), format!("{full:?}"));
}

#[test]
fn null_switches_optional_parts_off() {
    let s = parse(
        "version: 1\ndatabase: null\nvllm: []\nlitellm:\n  migration_job: null\n  guardrail: null\n",
        "x.yaml",
    )
    .expect("parses");
    assert!(s.database.is_none());
    assert!(s.vllm.is_empty());
    assert!(s.litellm.migration_job.is_none());
    assert!(s.litellm.guardrail.is_none());
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let err = parse(
        "version: 1\nlitellm:\n  service:\n    name: litellm\n    prot: 4000\n",
        "my.yaml",
    )
    .unwrap_err()
    .to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn an_unknown_key_with_a_line_break_is_still_a_one_line_error() {
    // Found by fuzzing (fuzz/corpus/suite/unknown-key-with-a-line-break): the field path holds
    // the key as written, and a quoted YAML key can hold any character, escapes included.
    let err = parse("version: 1\nlitellm:\n  \"a\\nb\\e[2J\": 1\n", "my.yaml")
        .unwrap_err()
        .to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
    assert!(
        err.starts_with(r"my.yaml:3:3: litellm.a\nb\u{1b}[2J: unknown field"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_file_line_and_field() {
    let err = parse(
        "version: 1\nlitellm:\n  pods:\n    selector: a=b\n    min_ready: many\n",
        "my.yaml",
    )
    .unwrap_err()
    .to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn unsupported_version_is_rejected() {
    let err = parse("version: 2\n", "my.yaml").unwrap_err().to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn missing_version_is_rejected() {
    let err = parse("namespace: litellm\n", "my.yaml")
        .unwrap_err()
        .to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn invalid_name_is_located() {
    let err = parse(
        "version: 1\nnamespace: litellm\nlitellm:\n  secret:\n    name: Bad_Name\n",
        "my.yaml",
    )
    .unwrap_err()
    .to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn yaml_syntax_error_is_located() {
    let err = parse("version: 1\nlitellm: [\n", "my.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("my.yaml:"), "{err}");
}

#[test]
fn database_tls_defaults_to_require_with_cnpgs_ca_and_the_core_tables() {
    let db = parse("version: 1\n", "m.yaml")
        .expect("parses")
        .database
        .expect("database");
    assert_eq!(db.sslmode, SslMode::Require);
    assert_eq!(db.ca_secret_name(), "cloudnative-pg-cluster-ca");
    assert_eq!(db.ca_secret.key, "ca.crt");
    assert_eq!(
        db.ca_source(),
        CaSource::Secret {
            name: "cloudnative-pg-cluster-ca".into(),
            key: "ca.crt".into()
        }
    );
    assert_eq!(db.tables, CORE_TABLES);
    let renamed = parse("version: 1\ndatabase:\n  cluster: pg-main\n", "m.yaml")
        .expect("parses")
        .database
        .expect("database");
    assert_eq!(
        renamed.ca_secret_name(),
        "pg-main-ca",
        "follows the cluster"
    );
}

#[test]
fn a_ca_configmap_replaces_the_ca_secret_everywhere() {
    let suite = parse(
        "version: 1\ndatabase:\n  sslmode: verify-full\n  ca_configmap:\n    name: pg-ca\n",
        "m.yaml",
    )
    .expect("parses");
    let db = suite.database.as_ref().expect("database");
    assert_eq!(
        db.ca_source(),
        CaSource::ConfigMap {
            name: "pg-ca".into(),
            key: "ca.crt".into()
        }
    );
    let secrets: Vec<String> = suite.secrets().into_iter().map(|s| s.name).collect();
    assert!(
        !secrets.contains(&"cloudnative-pg-cluster-ca".to_string()),
        "{secrets:?}"
    );
    let verifying = parse("version: 1\ndatabase:\n  sslmode: verify-ca\n", "m.yaml")
        .expect("parses")
        .secrets()
        .into_iter()
        .map(|s| s.name)
        .collect::<Vec<_>>();
    assert!(verifying.contains(&"cloudnative-pg-cluster-ca".to_string()));
}

#[test]
fn a_ca_from_two_places_is_refused_naming_the_field() {
    let err = parse(
        "version: 1\ndatabase:\n  ca_secret:\n    name: mine\n  ca_configmap:\n    name: pg-ca\n",
        "m.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.ca_configmap"), "{err}");
    assert!(err.contains("not both"), "{err}");
    let err = parse(
        "version: 1\ndatabase:\n  ca_configmap:\n    key: ca.crt\n",
        "m.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.ca_configmap"), "{err}");
}

#[test]
fn every_libpq_sslmode_parses() {
    for (text, mode) in [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ] {
        let s = parse(
            &format!("version: 1\ndatabase:\n  sslmode: {text}\n"),
            "m.yaml",
        )
        .expect("parses");
        let db = s.database.expect("database");
        assert_eq!(db.sslmode, mode);
        assert_eq!(db.sslmode.as_str(), text);
        assert_eq!(db.sslmode.verifies(), text.starts_with("verify"));
    }
}

#[test]
fn unknown_sslmode_names_the_field_and_the_choices() {
    let err = parse("version: 1\ndatabase:\n  sslmode: allow\n", "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("m.yaml:3:"), "{err}");
    assert!(err.contains("database.sslmode"), "{err}");
    assert!(err.contains("verify-full"), "{err}");
}

#[test]
fn database_tables_must_be_plain_names() {
    let err = parse("version: 1\ndatabase:\n  tables: []\n", "m.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("database.tables: must name at least one table"),
        "{err}"
    );
    let err = parse(
        "version: 1\ndatabase:\n  tables: [LiteLLM_UserTable, 'a\"b']\n",
        "m.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.tables[1]"), "{err}");
}

#[test]
fn published_schema_is_current() {
    let published = include_str!("../../suites/schema.json");
    assert_eq!(
        published.trim_end(),
        schema().trim_end(),
        "regenerate it: cargo run -- schema > suites/schema.json"
    );
}

#[test]
fn schema_rejects_unknown_fields_and_documents_defaults() {
    let schema: serde_json::Value = serde_json::from_str(&schema()).expect("json");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["namespace"]["default"], "litellm");
    assert_eq!(schema["required"], serde_json::json!(["version"]));
}

#[test]
fn the_trimming_window_limit_defaults_to_32k_and_is_bounded() {
    let s = parse("version: 1\n", "m.yaml").expect("parses");
    assert_eq!(s.litellm.guardrail.expect("guardrail").max_window, 32_768);
    // Also the schema's maximum (a literal in the schemars range attribute).
    assert_eq!(Guardrail::MAX_MAX_WINDOW, 1_048_576);
    let s = parse(
        "version: 1\nlitellm:\n  guardrail:\n    max_window: 131072\n",
        "m.yaml",
    )
    .expect("parses");
    assert_eq!(s.litellm.guardrail.expect("guardrail").max_window, 131_072);
    for bad in ["0", "1048577"] {
        let err = parse(
            &format!("version: 1\nlitellm:\n  guardrail:\n    max_window: {bad}\n"),
            "my.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!(
                "litellm.guardrail.max_window: must be 1 to 1048576 tokens, got {bad}"
            )),
            "{err}"
        );
    }
}
