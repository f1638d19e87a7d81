//! The whole deployment on one machine: the fake API server serving a scenario whose Secrets,
//! proxy config and CA are the test bed's, with port-forwards to the bed's servers standing in
//! for the pods (LiteLLM pods → the real LiteLLM proxy, seen through a view that serves the
//! deployment's aliases only; the vLLM pod → a fake vLLM; the CNPG primary → the real
//! PostgreSQL). `smokecheck verify` then runs as an on-call engineer's laptop would: no
//! `--endpoint`, no cluster DNS, everything through port-forwards. Used by the end-to-end test
//! and by `ci/sandbox`.
//!
//! When the scenario routes users in through an Ingress or IngressRoute, the stack also serves
//! that external route as Traefik would (ingress.rs): one TLS front per host on 127.0.0.1,
//! presenting the certificates of the scenario's TLS Secrets (chosen by SNI, else Traefik's
//! self-signed default) and relaying to LiteLLM, or answering Traefik's 404 where no router
//! reaches it. The host names resolve nowhere (`*.example.test`): a client reaches a front by
//! [`Stack::ingress_endpoints`] (`--endpoint ingress:<host>=URL`), keeping the host for SNI
//! and verification, and trusts [`Stack::ingress_ca`].

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;

use super::alias_view::AliasView;
use super::certs;
use super::fake_kube::{FakeKube, Scenario, load_scenario};
use super::ingress::{self, Backend as Routed};
use super::litellm::{MASTER_KEY, SERVED_MODEL, VLLM_KEY, alias, litellm_proxy};
use super::postgres::{Database, Scenario as DbScenario, postgres};
use super::tls_front::{Backend, TRAEFIK_BAD_GATEWAY, TRAEFIK_NOT_FOUND, TlsFront};

/// A failure to show, as `ci/sandbox --fault NAME` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub name: &'static str,
    /// The fake-cluster scenario it starts from.
    pub scenario: &'static str,
    /// The bed alias whose backend the vLLM pod and the proxy config point at.
    pub alias: &'static str,
    /// The database the suite names.
    pub database: DbScenario,
    /// Aliases the deployment's proxy serves beside `alias`, though its config (the ConfigMap)
    /// lacks them: a proxy still running an older config.
    pub also_served: &'static [&'static str],
    pub what: &'static str,
}

/// Every fault the sandbox can show, `healthy` first.
/// The ConfigMap the stack publishes the database's CA certificate in.
pub const CA_CONFIGMAP: &str = "cloudnative-pg-cluster-ca-cert";

pub const FAULTS: &[Fault] = &[
    Fault {
        name: "healthy",
        scenario: "healthy",
        alias: alias::HEALTHY,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "everything works",
    },
    Fault {
        name: "key-mismatch",
        scenario: "key-mismatch",
        alias: alias::STACK_KEY_MISMATCH,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "vLLM's key was rotated without re-sealing LiteLLM's copy",
    },
    Fault {
        name: "vllm-down",
        scenario: "healthy",
        alias: alias::STACK_DOWN,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "vLLM does not answer",
    },
    Fault {
        name: "trimming-off",
        scenario: "healthy",
        alias: alias::TRIM_OFF,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "the guardrail does not trim: oversized prompts reach vLLM",
    },
    Fault {
        name: "migration-failed",
        scenario: "migration-failed",
        alias: alias::HEALTHY,
        database: DbScenario::FailedMigration,
        also_served: &[],
        what: "the Prisma migration Job failed and left a failed migration",
    },
    Fault {
        name: "crash-loop",
        scenario: "crash-loop",
        alias: alias::HEALTHY,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "one LiteLLM pod crash-loops on an import error",
    },
    Fault {
        name: "missing-key",
        scenario: "missing-key",
        alias: alias::HEALTHY,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "the proxy Secret lacks CA_VLLM_LOCAL_API_KEY",
    },
    Fault {
        name: "rw-on-replica",
        scenario: "rw-on-replica",
        alias: alias::HEALTHY,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "the -rw Service routes to a replica",
    },
    Fault {
        name: "cert-expiring",
        scenario: "ingress-cert-expiring",
        alias: alias::HEALTHY,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "the Ingress's TLS certificate expires in 10 days",
    },
    Fault {
        name: "ingress-wrong-port",
        scenario: "ingress-wrong-port",
        alias: alias::HEALTHY,
        database: DbScenario::Migrated,
        also_served: &[],
        what: "the Ingress routes to a Service port LiteLLM does not expose",
    },
    Fault {
        name: "alias-not-in-config",
        scenario: "healthy",
        alias: alias::HEALTHY,
        database: DbScenario::Migrated,
        also_served: &[alias::TRIM_OFF],
        what: "the proxy serves an alias its ConfigMap no longer has (not restarted)",
    },
];

pub fn fault(name: &str) -> Option<Fault> {
    FAULTS.iter().copied().find(|f| f.name == name)
}

/// A running stack; everything stops when it is dropped.
pub struct Stack {
    pub fake: FakeKube,
    pub db: Database,
    pub kubeconfig: PathBuf,
    pub suite: PathBuf,
    pub fault: Fault,
    /// The deployment's LiteLLM: what port-forwards to its pods reach.
    pub litellm: AliasView,
    /// The external route, one TLS front per host the scenario's Ingresses and IngressRoutes
    /// name (none without them).
    pub fronts: Vec<(String, TlsFront)>,
    dir: tempfile::TempDir,
}

impl Stack {
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `(host, https://127.0.0.1:PORT)` per host of the external route: where a client reaches
    /// it, keeping `host` for SNI and certificate verification (`--endpoint ingress:<host>=URL`).
    pub fn ingress_endpoints(&self) -> Vec<(String, String)> {
        self.fronts
            .iter()
            .map(|(host, front)| (host.clone(), front.url()))
            .collect()
    }

    /// The TLS front serving `host`.
    pub fn front(&self, host: &str) -> Option<&TlsFront> {
        self.fronts.iter().find(|(h, _)| h == host).map(|(_, f)| f)
    }

    /// The PEM file of the CA the external route's certificates chain to (the bed's test CA,
    /// standing in for the public CAs a client trusts).
    pub fn ingress_ca(&self) -> PathBuf {
        self.dir.path().join("ingress-ca.pem")
    }
}

/// The stack's suite: the built-in one, but for what the bed cannot be: the proxy runs without
/// a database (Prisma cannot fetch its engine here), and the database is the scenario's.
/// The built-in suite, but for what the bed cannot be: the proxy runs without a database
/// (Prisma cannot fetch its engine here), and the database is the scenario's; verified with the
/// CA from a ConfigMap, the least-privilege setup suites/README.md recommends.
pub fn suite_text(database: &str) -> String {
    format!(
        "version: 1\nlitellm:\n  expect_db: false\ndatabase:\n  name: {database}\n  sslmode: verify-full\n  ca_configmap:\n    name: {CA_CONFIGMAP}\n"
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The proxy config as its ConfigMap holds it: the fault's alias at the in-cluster vLLM
/// Service, behind the trimming guardrail (the bed's class).
fn config_yaml(alias: &str) -> String {
    format!(
        "model_list:\n  - model_name: {alias}\n    litellm_params:\n      model: openai/{SERVED_MODEL}\n      api_base: http://vllm.vllm.svc.cluster.local/v1\n      api_key: os.environ/CA_VLLM_LOCAL_API_KEY\n      guardrails: [message_trimming]\nguardrails:\n  - guardrail_name: message_trimming\n    litellm_params:\n      guardrail: custom_guardrails.message_overflow.MessageOverflowGuardrail\n      mode: pre_call\n      default_on: false\ngeneral_settings:\n  master_key: os.environ/PROXY_MASTER_KEY\n  database_url: os.environ/DATABASE_URL\n"
    )
}

/// Starts the stack for `fault`: the bed's servers (once per process), a fake cluster, and the
/// kubeconfig and suite to run `smokecheck verify` with.
pub fn start(fault: Fault) -> Stack {
    start_with(fault, |_| {})
}

/// As [`start`], with `edit` applied to the fake cluster's scenario once it holds the bed's
/// secrets, proxy config and CA (the leak sweep plants text in its logs and messages).
pub fn start_with(fault: Fault, edit: impl FnOnce(&mut Scenario)) -> Stack {
    let proxy = litellm_proxy();
    let bed = postgres();
    let db = bed.scenario(fault.database);

    // The fixture's secret values → the bed's, by value, so a scenario's own damage (a missing
    // key, a rotated vLLM key) stays as it is.
    let healthy = load_scenario("healthy");
    let value = |ns: &str, name: &str, key: &str| {
        healthy
            .secret_value(ns, name, key)
            .unwrap_or_else(|| panic!("healthy scenario lacks {ns}/{name} {key}"))
    };
    let mapping: Vec<(String, String)> = vec![
        (
            value("litellm", "litellm-secrets", "PROXY_MASTER_KEY"),
            MASTER_KEY.to_string(),
        ),
        (
            value("litellm", "litellm-secrets", "CA_VLLM_LOCAL_API_KEY"),
            VLLM_KEY.to_string(),
        ),
        (
            value("litellm", "cloudnative-pg-cluster-litellm", "password"),
            db.password.clone(),
        ),
        (
            value("litellm", "cloudnative-pg-cluster-litellm", "username"),
            db.user.clone(),
        ),
    ];
    let fixture_password = value("litellm", "cloudnative-pg-cluster-litellm", "password");
    let mut scenario = load_scenario(fault.scenario);
    for o in scenario.objects.iter_mut() {
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match (kind.as_str(), name.as_str()) {
            ("Secret", "cloudnative-pg-cluster-ca") => {
                o["data"]["ca.crt"] = Value::from(b64(bed.ca_pem()));
            }
            ("Secret", _) => {
                if let Some(data) = o["data"].as_object_mut() {
                    for v in data.values_mut() {
                        let decoded = v
                            .as_str()
                            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        if let Some((_, to)) = mapping.iter().find(|(from, _)| *from == decoded) {
                            *v = Value::from(b64(to));
                        } else if decoded.contains(&fixture_password) {
                            // CNPG's uri, jdbc-uri and pgpass hold the password too.
                            *v =
                                Value::from(b64(&decoded.replace(&fixture_password, &db.password)));
                        }
                    }
                }
            }
            ("ConfigMap", "litellm-config") => {
                o["data"]["config.yaml"] = Value::from(config_yaml(fault.alias));
            }
            _ => {}
        }
    }

    // The CA certificate also in a ConfigMap, as trust-manager or GitOps would publish it: the
    // suite verifies the server with it and never reads the CA Secret (which holds the key).
    scenario.objects.push(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIGMAP, "namespace": "litellm"},
        "data": {"ca.crt": bed.ca_pem()},
    }));

    edit(&mut scenario);

    // Port-forwards to the pods reach the bed's servers.
    let pods: Vec<(String, String, String)> = scenario
        .objects
        .iter()
        .filter(|o| o["kind"] == "Pod")
        .map(|o| {
            let label = |k: &str| {
                o["metadata"]["labels"][k]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                format!(
                    "{}|{}",
                    label("app.kubernetes.io/name"),
                    label("cnpg.io/cluster")
                ),
            )
        })
        .collect();
    // The external route, as Traefik would serve the scenario's Ingresses and IngressRoutes.
    let traefik = ingress::traefik(&scenario);
    let fake = FakeKube::start_with(scenario);
    let mut served = vec![fault.alias];
    served.extend(fault.also_served);
    let litellm = AliasView::start(&proxy.url(), &served);
    let proxy_addr = litellm.addr();
    let vllm_addr = proxy.fake(fault.alias).addr();
    let fronts: Vec<(String, TlsFront)> = traefik
        .routes
        .iter()
        .map(|route| {
            let backend = match &route.backend {
                Routed::Service {
                    namespace, name, ..
                } if namespace == "litellm" && name == "litellm" => Backend::Relay(proxy_addr),
                Routed::Service {
                    namespace, name, ..
                } if namespace == "vllm" && name == "vllm" => Backend::Relay(vllm_addr),
                // A Service the stack runs no server for: nothing answers behind it.
                Routed::Service { .. } => Backend::Answer(TRAEFIK_BAD_GATEWAY),
                Routed::NotFound => Backend::Answer(TRAEFIK_NOT_FOUND),
            };
            let front = TlsFront::traefik(traefik.store.clone(), backend);
            (route.host.clone(), front)
        })
        .collect();
    let db_addr = format!("{}:{}", bed.host(), db.port)
        .parse()
        .expect("database address");
    for (ns, pod, labels) in &pods {
        match labels.as_str() {
            "litellm|" => fake.forward(ns, pod, 4000, proxy_addr),
            "vllm|" => fake.forward(ns, pod, 8000, vllm_addr),
            l if l.ends_with("|cloudnative-pg-cluster") => fake.forward(ns, pod, 5432, db_addr),
            _ => {}
        }
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let suite = dir.path().join("suite.yaml");
    // With an external route, the suite trusts the CA its certificates chain to (the bed's
    // test CA stands in for the public roots a client trusts).
    let mut text = suite_text(&db.name);
    if !fronts.is_empty() {
        text = text.replacen(
            "litellm:\n",
            &format!(
                "litellm:\n  ingress:\n    ca_file: {}\n",
                dir.path().join("ingress-ca.pem").display()
            ),
            1,
        );
    }
    std::fs::write(&suite, text).expect("writing the suite");
    std::fs::write(dir.path().join("ingress-ca.pem"), certs::test_ca_pem())
        .expect("writing the ingress CA");
    Stack {
        fake,
        db,
        kubeconfig,
        suite,
        fault,
        litellm,
        fronts,
        dir,
    }
}
