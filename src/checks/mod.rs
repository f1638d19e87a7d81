//! The checks, one module per layer. Each builds named checks from its part of the suite,
//! without touching the network, so `--list` and filters work offline.

pub mod database;
pub mod e2e;
pub mod keys;
pub mod kubernetes;
pub mod litellm;
pub mod platform;
pub mod vllm;

use crate::check::Catalog;
use crate::outcome::{Cause, Failure};
use crate::suite::Suite;

/// Every check the suite describes, in report order.
pub fn catalog(suite: &Suite) -> Catalog {
    let mut checks = platform::checks(suite);
    checks.extend(kubernetes::checks(suite));
    checks.extend(database::checks(suite));
    checks.extend(litellm::checks(suite));
    checks.extend(vllm::checks(suite));
    let mut families = vllm::families();
    families.extend(e2e::families());
    Catalog { checks, families }
}

/// The checks of the way users come in, built once the run has found the routes
/// ([`kubernetes::ingress::discover`]): one `kubernetes::ingress::<name>` per route, one
/// `e2e::ingress::<host>` per host (the suite's, else the routes', and any `--endpoint
/// ingress:<host>`).
pub fn ingress_checks(
    suite: &Suite,
    discovered: &kubernetes::ingress::Discovered,
    flagged_hosts: &[String],
) -> Vec<crate::check::Check> {
    let Some(ingress) = &suite.litellm.ingress else {
        return Vec::new();
    };
    let mut out = kubernetes::ingress::checks(discovered, ingress, &suite.namespace);
    let mut hosts = discovered.hosts(ingress);
    for h in flagged_hosts {
        if !hosts.iter().any(|x| x.eq_ignore_ascii_case(h)) {
            hosts.push(h.clone());
        }
    }
    out.extend(hosts.iter().map(|h| e2e::ingress::check(h, ingress)));
    out
}

/// An object's name in a check name: bare in the suite's namespace, `namespace/name` elsewhere.
pub fn qualified(suite: &Suite, namespace: &str, name: &str) -> String {
    if namespace == suite.namespace {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// The failure for an answer over its cap: a cause of its own, never a misread answer.
pub(crate) fn too_large(t: &crate::http::TooLarge) -> Failure {
    Failure::new(Cause::BodyTooLarge, t.to_string())
        .hint("no honest answer to this request is that large: something between smokecheck and the server (an ingress or proxy error page, a port that is not the API's) or the server itself sends without end; request the URL by hand to see what answers")
}
