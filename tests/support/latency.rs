//! Latency the bed's servers add on purpose, so a benchmark can model a real cluster (an API
//! server answering in 5-20 ms, a model answering in 300-800 ms) on one machine.
//!
//! A [`Latency`] is fixed (`5ms`) or drawn uniformly from a range (`5ms..20ms`) by a generator
//! seeded by the caller, so a run's sequence of draws is the same every time. Which request gets
//! which draw still depends on the order requests arrive in; the spread does not.
//!
//! Distinct from the fault knobs (`FakeKube::delay_requests`, `fake_vllm::Fault::Delay`), which
//! make one path slow for timeout tests; these apply to every request of their kind.

use std::fmt;
use std::time::Duration;

/// A latency to add: fixed, or uniform in `min..=max` with a seeded jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latency {
    min: Duration,
    max: Duration,
    rng: SplitMix64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::fixed(Duration::ZERO)
    }
}

impl Latency {
    pub fn fixed(d: Duration) -> Latency {
        Latency {
            min: d,
            max: d,
            rng: SplitMix64::new(0),
        }
    }

    /// Uniform in `min..=max` (swapped when given the wrong way round), seeded by `seed`.
    pub fn range(min: Duration, max: Duration, seed: u64) -> Latency {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        Latency {
            min,
            max,
            rng: SplitMix64::new(seed),
        }
    }

    /// `300ms` or `5ms..20ms` (humantime durations); the error names what is wrong.
    pub fn parse(text: &str, seed: u64) -> Result<Latency, String> {
        let one = |t: &str| {
            humantime::parse_duration(t.trim())
                .map_err(|e| format!("{:?} is no duration ({e})", t.trim()))
        };
        match text.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (one(a)?, one(b)?);
                if min > max {
                    return Err(format!("{text:?}: the range ends before it starts"));
                }
                Ok(Latency::range(min, max, seed))
            }
            None => Ok(Latency::fixed(one(text)?)),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.max.is_zero()
    }

    pub fn min(&self) -> Duration {
        self.min
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The next draw: `min` plus a uniform share of `max - min`, to the microsecond.
    pub fn sample(&mut self) -> Duration {
        let spread = u64::try_from((self.max - self.min).as_micros()).unwrap_or(u64::MAX);
        if spread == 0 {
            return self.min;
        }
        let draw = self.rng.below(spread + 1);
        self.min + Duration::from_micros(draw)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): one word of state, a good enough spread for jitter
/// and filler objects, and ten lines instead of a crate. Not for anything secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (`n` > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        if self.min == self.max {
            f.write_str(&d(self.min))
        } else {
            write!(f, "{}..{}", d(self.min), d(self.max))
        }
    }
}

/// A fake vLLM's latency per endpoint: what a model server takes to answer, where `/health`
/// and `/v1/models` are quick and completions are slow (prefill, then one token at a time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelLatency {
    /// `/health`.
    pub health: Latency,
    /// `/v1/models`.
    pub models: Latency,
    /// A chat completion from request to its whole answer (a stream: to `data: [DONE]`).
    pub completion: Latency,
    /// A streamed completion's first content token (clamped to the completion's draw): the
    /// headers go out at once, as vLLM's do, the first token after this, the rest spread
    /// evenly until the completion's time is up.
    pub first_token: Latency,
}
