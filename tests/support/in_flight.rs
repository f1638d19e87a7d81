//! Requests in flight at a fake server: the most at once (what smokecheck's per-destination
//! caps promise to bound) and when each was served (which requests overlapped). Lock-free
//! counting, so counting changes no timing worth the name.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
    spans: Mutex<Vec<Span>>,
}

/// One request served: its path, when it arrived and when its answer's head went out.
#[derive(Debug, Clone)]
pub struct Span {
    pub path: String,
    pub start: Instant,
    pub end: Instant,
}

impl Span {
    pub fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// A request being served; counted until dropped.
pub struct Entered<'a> {
    at: &'a InFlight,
    path: String,
    start: Instant,
}

impl InFlight {
    pub fn enter(&self, path: &str) -> Entered<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Entered {
            at: self,
            path: path.to_string(),
            start: Instant::now(),
        }
    }

    /// The most requests in flight at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.at.now.fetch_sub(1, Ordering::SeqCst);
        self.at
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Span {
                path: std::mem::take(&mut self.path),
                start: self.start,
                end: Instant::now(),
            });
    }
}
