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
//!
//! [`Options`] scale it and slow it down for benchmarks (`ci/sandbox` flags, `ci/bench`): a
//! proxy of its own whose config has N aliases on one fake vLLM, filler Pods and Secrets in the
//! namespace (support/scale.rs), and latency on the API server, the port-forwards and the
//! model (support/latency.rs). [`Stack::relays`] holds port-forwards open for scripts, and
//! [`Stack::baseline_env`] tells the script baseline (ci/baseline/verify.sh) where they are.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;

use super::alias_view::AliasView;
use super::certs;
use super::fake_kube::{FakeKube, ForwardLatency, Scenario, load_scenario, str_at};
use super::fake_vllm::{FakeVllm, Fault as VllmFault};
use super::ingress::{self, Backend as Routed};
use super::latency::{Latency, ModelLatency};
use super::litellm::{
    LiteLlm, MASTER_KEY, MAX_MODEL_LEN, OTHER_VLLM_KEY, SERVED_MODEL, VLLM_KEY, alias,
    litellm_proxy, start_dedicated,
};
use super::postgres::{Database, Scenario as DbScenario, postgres};
use super::relay::{Relays, Target};
use super::scale;
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

/// How big and how slow a stack is. The default is today's stack: the test binary's shared
/// proxy, the scenario as it is, no added latency.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `Some(n)`: a proxy of the stack's own whose config has `n` aliases (`chat-001`, ...,
    /// support/scale.rs), all routed to one fake vLLM of its own, and the same aliases in the
    /// cluster's proxy config. `None`: the shared proxy, the fault's one alias.
    pub aliases: Option<usize>,
    /// Pods and Secrets added to namespace `litellm` beside the suite's own.
    pub filler_pods: usize,
    pub filler_secrets: usize,
    /// Seeds the filler's content.
    pub seed: u64,
    /// Every API request (FakeKube::set_latency).
    pub api_latency: Latency,
    /// Each port-forward stream's setup and round trips (FakeKube::set_forward_latency).
    pub forward: ForwardLatency,
    /// The fake vLLM's, per endpoint; needs `aliases` (the shared proxy's fakes are shared with
    /// every other test of the binary).
    pub model: ModelLatency,
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
    /// The aliases of the cluster's proxy config.
    pub aliases: Vec<String>,
    /// The stack's own proxy, when `Options::aliases` asked for one.
    pub own_proxy: Option<LiteLlm>,
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

    /// The fake vLLM behind the cluster's vLLM pod.
    pub fn vllm(&self) -> &FakeVllm {
        let proxy = self.own_proxy.as_ref().unwrap_or_else(|| litellm_proxy());
        proxy.fake(&self.aliases[0])
    }

    /// Port-forwards held open to a ready pod behind each Service a script reaches, in this
    /// order: LiteLLM, vLLM, the database's rw Service (see support/relay.rs).
    pub fn relays(&self) -> Relays {
        let scenario = self.fake.scenario();
        let targets: Vec<Target> = [
            ("litellm", "litellm"),
            ("vllm", "vllm"),
            ("litellm", "cloudnative-pg-cluster-rw"),
        ]
        .iter()
        .map(|(ns, svc)| {
            ready_pod(scenario, ns, svc)
                .unwrap_or_else(|| panic!("stack: no ready pod behind service {ns}/{svc}"))
        })
        .collect();
        Relays::start(&self.kubeconfig, &targets)
    }

    /// The settings of the script baseline (ci/baseline/verify.sh) for this stack, as
    /// `NAME=value` lines a shell can source: the kubeconfig, the relays' addresses, and where
    /// the stack's suite differs from the default one.
    /// The addresses a pod in the cluster reaches the Services at (the hook's view: no
    /// port-forward), as `NAME=value` lines the script baseline reads.
    pub fn in_cluster_env(&self) -> String {
        format!(
            "LITELLM_URL={}\nVLLM_URL={}\nPGHOSTADDR={}\nPGPORT={}\n",
            self.litellm.url(),
            self.vllm().url(),
            self.db.host,
            self.db.port,
        )
    }

    pub fn baseline_env(&self, relays: &Relays) -> String {
        let [litellm, vllm, database] = relays.addrs[..] else {
            panic!("stack: expected the three relays of Stack::relays")
        };
        format!(
            "KUBECONFIG={}\nLITELLM_URL=http://{litellm}\nVLLM_URL=http://{vllm}\nPGHOSTADDR={}\nPGPORT={}\n\
             EXPECT_DB=false\nDB_NAME={}\nDB_SSLMODE=verify-full\nDB_CA_CONFIGMAP={CA_CONFIGMAP}\n",
            self.kubeconfig.display(),
            database.ip(),
            database.port(),
            self.db.name,
        )
    }
}

/// The first ready pod behind `namespace/service` and the pod port of its EndpointSlice, as
/// `kubectl port-forward svc/<service>` picks one.
fn ready_pod(scenario: &Scenario, namespace: &str, service: &str) -> Option<Target> {
    scenario
        .of_kind("EndpointSlice")
        .filter(|s| {
            str_at(s, "/metadata/namespace") == Some(namespace)
                && str_at(s, "/metadata/labels/kubernetes.io~1service-name") == Some(service)
        })
        .find_map(|slice| {
            let port = slice.pointer("/ports/0/port")?.as_u64()?;
            let pod = slice["endpoints"].as_array()?.iter().find_map(|e| {
                let ready = e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false);
                (ready && str_at(e, "/targetRef/kind") == Some("Pod"))
                    .then(|| str_at(e, "/targetRef/name"))
                    .flatten()
            })?;
            Some(Target {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
                port: u16::try_from(port).ok()?,
            })
        })
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

/// The proxy config as its ConfigMap holds it: the aliases at the in-cluster vLLM Service,
/// behind the trimming guardrail (the bed's class).
fn config_yaml(aliases: &[String]) -> String {
    let mut y = String::from("model_list:\n");
    for alias in aliases {
        y.push_str(&format!(
            "  - model_name: {alias}\n    litellm_params:\n      model: openai/{SERVED_MODEL}\n      api_base: http://vllm.vllm.svc.cluster.local/v1\n      api_key: os.environ/CA_VLLM_LOCAL_API_KEY\n      guardrails: [message_trimming]\n"
        ));
    }
    y.push_str("guardrails:\n  - guardrail_name: message_trimming\n    litellm_params:\n      guardrail: custom_guardrails.message_overflow.MessageOverflowGuardrail\n      mode: pre_call\n      default_on: false\ngeneral_settings:\n  master_key: os.environ/PROXY_MASTER_KEY\n  database_url: os.environ/DATABASE_URL\n");
    y
}

/// Starts the stack for `fault`: the bed's servers (once per process), a fake cluster, and the
/// kubeconfig and suite to run `smokecheck verify` with.
pub fn start(fault: Fault) -> Stack {
    start_with(fault, |_| {})
}

/// As [`start`], with `edit` applied to the fake cluster's scenario once it holds the bed's
/// secrets, proxy config and CA (the leak sweep plants text in its logs and messages).
pub fn start_with(fault: Fault, edit: impl FnOnce(&mut Scenario)) -> Stack {
    start_configured(fault, &Options::default(), edit)
}

/// As [`start`], scaled and slowed down as `options` say.
pub fn start_with_options(fault: Fault, options: &Options) -> Stack {
    start_configured(fault, options, |_| {})
}

/// The stack's own proxy for `fault`: `n` aliases on one fake vLLM that behaves as the fault's
/// alias does on the shared proxy (a rotated key, down, no trimming), with the model's latency.
fn own_proxy(fault: Fault, n: usize, model: &ModelLatency) -> LiteLlm {
    let key = if fault.alias == alias::STACK_KEY_MISMATCH {
        OTHER_VLLM_KEY
    } else {
        VLLM_KEY
    };
    let fake = FakeVllm::start(&[(SERVED_MODEL, MAX_MODEL_LEN)], key);
    fake.set_latency(model.clone());
    if fault.alias == alias::STACK_DOWN {
        fake.set_fault(VllmFault::Down);
    }
    let guarded = fault.alias != alias::TRIM_OFF;
    start_dedicated(&scale::alias_names(n), fake, guarded)
        .unwrap_or_else(|why| panic!("stack: the stack's own LiteLLM proxy: {why}"))
}

fn start_configured(fault: Fault, options: &Options, edit: impl FnOnce(&mut Scenario)) -> Stack {
    let own_proxy = options
        .aliases
        .map(|n| own_proxy(fault, n.max(1), &options.model));
    assert!(
        own_proxy.is_some() || options.model == ModelLatency::default(),
        "stack: model latency needs the stack's own proxy (Options::aliases): the shared \
         proxy's fakes serve every other test of the binary"
    );
    let proxy = own_proxy.as_ref().unwrap_or_else(|| litellm_proxy());
    let aliases: Vec<String> = match options.aliases {
        Some(_) => proxy.aliases().map(str::to_string).collect(),
        None => vec![fault.alias.to_string()],
    };
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
                o["data"]["config.yaml"] = Value::from(config_yaml(&aliases));
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

    scale::fill(
        &mut scenario,
        "litellm",
        options.filler_pods,
        options.filler_secrets,
        options.seed,
    );
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
    fake.set_latency(options.api_latency.clone());
    fake.set_forward_latency(options.forward.clone());
    // The deployment's proxy serves its config's aliases (and the fault's stale ones).
    let mut served: Vec<&str> = aliases.iter().map(String::as_str).collect();
    served.extend(fault.also_served);
    let litellm = AliasView::start(&proxy.url(), &served);
    let proxy_addr = litellm.addr();
    let vllm_addr = proxy.fake(&aliases[0]).addr();
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
        aliases,
        own_proxy,
        dir,
    }
}
