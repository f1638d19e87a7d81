//! How many requests a run has in flight at once to each destination: the API server, the
//! LiteLLM proxy, each vLLM backend. How many checks run at once is the runner's business
//! (`--test-threads`); what a production server sees is decided here, where requests are made:
//! a request holds a slot of its destination from before it is sent until its answer is read
//! (dropped), and no longer, so a check that talks to two destinations never holds a slot it
//! is not using.
//!
//! One set of slots per run, created with it: fleet runs check many clusters at once, each
//! with its own caps, and nothing here is process-global.
//!
//! A leaf: tokio's semaphores and tower's layer, nothing of the crate.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body_util::BodyExt as _;
use kube::client::DynBody;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, Layer, Service};

/// Requests in flight at once per destination, per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// To the API server: client-go's default burst is 10; a few less, as one of many clients.
    pub api_server: usize,
    /// To the LiteLLM proxy (each chat also reaches a vLLM through it).
    pub litellm: usize,
    /// To each vLLM backend reached directly (`/health`, `/v1/models`).
    pub vllm: usize,
}

/// The defaults (README, "Concurrency"): enough for a healthy deployment's checks to run side
/// by side, few enough that a run is a handful of clients, never a load test.
pub const DEFAULT_CAPS: Caps = Caps {
    api_server: 8,
    litellm: 8,
    vllm: 4,
};

/// The slots of one destination.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Semaphore>);

/// A slot held; released when dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Slots {
    pub fn new(cap: usize) -> Slots {
        Slots(Arc::new(Semaphore::new(cap.max(1))))
    }

    /// Waits for a free slot. The semaphore is never closed, so this always gets one; the
    /// caller's timeout bounds the wait.
    pub async fn acquire(&self) -> Option<Slot> {
        Arc::clone(&self.0).acquire_owned().await.ok().map(Slot)
    }
}

/// The HTTP destinations of a run (LiteLLM, each vLLM), by origin (`scheme://host:port`):
/// the LiteLLM proxy's cap for its origin, the vLLM cap for any other.
#[derive(Debug)]
pub struct HttpSlots {
    caps: Caps,
    litellm: Mutex<Option<String>>,
    by_origin: Mutex<HashMap<String, Slots>>,
}

impl HttpSlots {
    pub fn new(caps: Caps) -> HttpSlots {
        HttpSlots {
            caps,
            litellm: Mutex::default(),
            by_origin: Mutex::default(),
        }
    }

    /// Says which URL is the LiteLLM proxy's (once its endpoint is final).
    pub fn set_litellm(&self, url: &str) {
        if let Ok(mut l) = self.litellm.lock() {
            *l = origin(url);
        }
    }

    /// The slots of `url`'s destination.
    pub fn slots(&self, url: &str) -> Slots {
        let origin = origin(url).unwrap_or_default();
        let litellm = self.litellm.lock().ok().and_then(|l| l.clone());
        let cap = if litellm.as_deref() == Some(origin.as_str()) {
            self.caps.litellm
        } else {
            self.caps.vllm
        };
        match self.by_origin.lock() {
            Ok(mut map) => map.entry(origin).or_insert_with(|| Slots::new(cap)).clone(),
            // A poisoned map (a panic elsewhere): a fresh slot set keeps the request bounded.
            Err(_) => Slots::new(cap),
        }
    }
}

/// `scheme://host:port` of a URL, the port made explicit.
fn origin(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str()?,
        u.port_or_known_default()?
    ))
}

/// Holds a slot of the API server around each request of the kube client: taken before the
/// request is sent, given back when its answer's body is dropped, or at once for an upgrade
/// (a port-forward's WebSocket lives as long as the run and is not a request in flight).
#[derive(Debug, Clone)]
pub struct SlotLayer(pub Slots);

impl<S> Layer<S> for SlotLayer {
    type Service = Slotted<S>;

    fn layer(&self, inner: S) -> Slotted<S> {
        Slotted {
            inner,
            slots: self.0.clone(),
        }
    }
}

/// The service [`SlotLayer`] builds.
#[derive(Debug, Clone)]
pub struct Slotted<S> {
    inner: S,
    slots: Slots,
}

type Answer = http::Response<Box<DynBody>>;

impl<S, B> Service<http::Request<B>> for Slotted<S>
where
    S: Service<http::Request<B>, Response = Answer>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The inner future is lazy: nothing is sent before it is polled, after the slot.
        let answer = self.inner.call(req);
        let slots = self.slots.clone();
        Box::pin(async move {
            let slot = slots.acquire().await;
            let answer = answer.await.map_err(Into::into)?;
            if answer.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                return Ok(answer);
            }
            Ok(answer.map(|body| -> Box<DynBody> {
                Box::new(body.map_frame(move |frame| {
                    let _held = &slot;
                    frame
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_litellm_origin_gets_its_own_cap_and_every_other_the_vllm_cap() {
        let caps = Caps {
            api_server: 1,
            litellm: 3,
            vllm: 2,
        };
        let slots = HttpSlots::new(caps);
        slots.set_litellm("http://127.0.0.1:4000/health/liveliness");
        assert_eq!(
            slots
                .slots("http://127.0.0.1:4000/v1/models")
                .0
                .available_permits(),
            3
        );
        assert_eq!(
            slots
                .slots("http://127.0.0.1:8000/health")
                .0
                .available_permits(),
            2
        );
        // One destination, one set of slots: an https origin is its own destination.
        assert!(Arc::ptr_eq(
            &slots.slots("http://127.0.0.1:8000/a").0,
            &slots.slots("http://127.0.0.1:8000/b").0
        ));
        assert!(!Arc::ptr_eq(
            &slots.slots("http://127.0.0.1:8000/a").0,
            &slots.slots("https://127.0.0.1:8000/a").0
        ));
    }

    #[tokio::test]
    async fn a_destination_never_has_more_requests_in_flight_than_its_cap() {
        let slots = Slots::new(2);
        let a = slots.acquire().await;
        let b = slots.acquire().await;
        assert!(a.is_some() && b.is_some());
        assert!(
            Arc::clone(&slots.0).try_acquire_owned().is_err(),
            "a third slot while two are held"
        );
        drop(a);
        let third = tokio::time::timeout(std::time::Duration::from_secs(30), slots.acquire());
        assert!(third.await.ok().flatten().is_some());
    }
}
