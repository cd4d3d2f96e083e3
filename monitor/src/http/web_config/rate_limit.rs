//! `rate_limit`: a token bucket in front of everything (as the toolkit's `rate.Limiter`): it
//! holds `burst` requests, starts full, and refills one every `interval`. A request that finds
//! it empty is answered 429 at once, before authentication, so that a flood costs no bcrypt.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use super::file::RateLimitConfig;

/// The bucket, shared by every connection; re-made when the configuration's limit changes.
#[derive(Default)]
pub struct Limiter {
    /// Held for a few arithmetic operations per request.
    bucket: Mutex<Option<Bucket>>,
}

struct Bucket {
    config: RateLimitConfig,
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// Whether a request may go on now under `config` (always, when its interval is 0).
    pub fn allow(&self, config: &RateLimitConfig) -> bool {
        self.allow_at(config, Instant::now())
    }

    fn allow_at(&self, config: &RateLimitConfig, now: Instant) -> bool {
        if config.interval == Duration::ZERO {
            return true;
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match bucket.as_mut() {
            Some(b) if b.config == *config => b,
            _ => bucket.insert(Bucket {
                config: *config,
                tokens: f64::from(config.burst),
                last: now,
            }),
        };
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64()
            / config.interval.as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(f64::from(config.burst));
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let limiter = Limiter::default();
        let config = RateLimitConfig {
            interval: Duration::from_secs(1),
            burst: 2,
        };
        let t0 = Instant::now();
        assert!(limiter.allow_at(&config, t0));
        assert!(limiter.allow_at(&config, t0));
        assert!(!limiter.allow_at(&config, t0));
        assert!(!limiter.allow_at(&config, t0 + Duration::from_millis(500)));
        assert!(limiter.allow_at(&config, t0 + Duration::from_millis(1000)));
        assert!(!limiter.allow_at(&config, t0 + Duration::from_millis(1100)));
        // Refilled to the burst, never beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(limiter.allow_at(&config, later));
        assert!(limiter.allow_at(&config, later));
        assert!(!limiter.allow_at(&config, later));
    }

    #[test]
    fn no_interval_no_limit_and_a_new_limit_starts_full() {
        let limiter = Limiter::default();
        let off = RateLimitConfig::default();
        assert!((0..1000).all(|_| limiter.allow(&off)));
        let one = RateLimitConfig {
            interval: Duration::from_secs(3600),
            burst: 1,
        };
        assert!(limiter.allow(&one));
        assert!(!limiter.allow(&one));
        let two = RateLimitConfig { burst: 2, ..one };
        assert!(limiter.allow(&two) && limiter.allow(&two) && !limiter.allow(&two));
        // A burst of 0 refuses everything, as Go's limiter does.
        let zero = RateLimitConfig { burst: 0, ..one };
        assert!(!limiter.allow(&zero));
    }
}
