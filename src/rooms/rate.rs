//! A per-connection token bucket: `rate` messages per second on average, `burst` at once.
//!
//! Hand-written rather than `governor`: one connection's bucket is two numbers touched by one task,
//! with no need for that crate's lock-free shared state or keyed limiters.

use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per second; 0 turns the limit off.
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(rate), burst, tokens: burst, refilled: Instant::now() }
    }

    /// Takes a token if one is left.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let mut limiter = RateLimiter::new(10, 3);
        let start = limiter.refilled;
        assert_eq!((0..5).filter(|_| limiter.allow_at(start)).count(), 3);
        let later = start + Duration::from_millis(100);
        assert!(limiter.allow_at(later));
        assert!(!limiter.allow_at(later));
        let much_later = later + Duration::from_secs(10);
        assert_eq!((0..5).filter(|_| limiter.allow_at(much_later)).count(), 3, "never more than the burst");
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut limiter = RateLimiter::new(0, 0);
        assert!((0..10_000).all(|_| limiter.allow()));
    }
}
