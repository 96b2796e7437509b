//! Abuse limits (the state; `http::limits` applies them at the edge): requests per client IP, customer messages per conversation (HTTP
//! and WebSocket alike), and how many WebSockets may be open at once. A refused request gets 429
//! with `Retry-After`; a refused socket gets 503 before the upgrade. Nothing refused is stored,
//! so a client that waits and retries loses nothing.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub use crate::config::LimitSettings;

/// A request, message or socket refused; `http` turns it into 429 with `Retry-After`, or 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many {what}; retry after {retry_after:?}")]
    RateLimited {
        retry_after: Duration,
        what: &'static str,
    },
    #[error("the server has its maximum of {max} open connections of this kind; try again later")]
    SocketsFull { max: usize },
}

/// Which WebSocket pool a socket counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    Customer,
    Agent,
}

/// Checks made this many times between clean-ups of forgotten keys.
const CLEAN_EVERY: u64 = 4096;

pub struct Limits {
    settings: LimitSettings,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_conversation: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
    customer_sockets: Arc<AtomicUsize>,
    agent_sockets: Arc<AtomicUsize>,
}

/// Held while a WebSocket is open; dropping it frees the place.
#[derive(Debug)]
pub struct SocketPermit {
    count: Arc<AtomicUsize>,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

fn quota(per_period: u32, period: Duration, burst: u32) -> Option<Quota> {
    let per_period = NonZeroU32::new(per_period)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period / per_period.get()).map(|q| q.allow_burst(burst))
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let per_ip = quota(
            settings.requests_per_ip_per_second,
            Duration::from_secs(1),
            settings.requests_per_ip_burst,
        )
        .map(RateLimiter::keyed);
        let per_conversation = quota(
            settings.messages_per_conversation_per_minute,
            Duration::from_secs(60),
            settings.messages_per_conversation_burst,
        )
        .map(RateLimiter::keyed);
        Self {
            settings,
            per_ip,
            per_conversation,
            checks: AtomicU64::new(0),
            customer_sockets: Arc::default(),
            agent_sockets: Arc::default(),
        }
    }

    /// The client's address: the configured header's first entry, else the peer.
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if let Some(name) = &self.settings.client_ip_header {
            let forwarded = headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer.map(|p| p.ip())
    }

    /// One API request from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), LimitError> {
        let Some(limiter) = &self.per_ip else {
            return Ok(());
        };
        self.tidy();
        limiter
            .check_key(&ip)
            .map_err(|not_until| LimitError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                what: "requests from this address",
            })
    }

    /// One customer message in `conversation_id`.
    pub fn check_message(&self, conversation_id: &str) -> Result<(), LimitError> {
        let Some(limiter) = &self.per_conversation else {
            return Ok(());
        };
        self.tidy();
        limiter
            .check_key(&conversation_id.to_string())
            .map_err(|not_until| LimitError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                what: "messages in this conversation",
            })
    }

    /// A place for one more WebSocket of `kind`, or 503 when they are all taken.
    pub fn open_socket(&self, kind: SocketKind) -> Result<SocketPermit, LimitError> {
        let (count, max) = match kind {
            SocketKind::Customer => (&self.customer_sockets, self.settings.max_customer_sockets),
            SocketKind::Agent => (&self.agent_sockets, self.settings.max_agent_sockets),
        };
        let previous = count.fetch_add(1, Ordering::AcqRel);
        let permit = SocketPermit {
            count: count.clone(),
        };
        if max > 0 && previous >= max {
            drop(permit);
            return Err(LimitError::SocketsFull { max });
        }
        Ok(permit)
    }

    /// Forget keys whose limits have fully recovered, now and then, so memory follows the
    /// clients of the last moments rather than every client ever seen.
    fn tidy(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CLEAN_EVERY != CLEAN_EVERY - 1 {
            return;
        }
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_conversation {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(settings: LimitSettings) -> Limits {
        Limits::new(settings)
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let limits = limits(LimitSettings {
            requests_per_ip_per_second: 1,
            requests_per_ip_burst: 3,
            ..LimitSettings::default()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            limits.check_ip(ip).unwrap();
        }
        match limits.check_ip(ip) {
            Err(LimitError::RateLimited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Another address has its own allowance.
        limits.check_ip("10.0.0.2".parse().unwrap()).unwrap();
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = limits(LimitSettings {
            requests_per_ip_per_second: 0,
            messages_per_conversation_per_minute: 0,
            max_customer_sockets: 0,
            ..LimitSettings::default()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut permits = Vec::new();
        for _ in 0..1000 {
            limits.check_ip(ip).unwrap();
            limits.check_message("c").unwrap();
            permits.push(limits.open_socket(SocketKind::Customer).unwrap());
        }
    }

    #[test]
    fn conversations_are_limited_separately() {
        let limits = limits(LimitSettings {
            messages_per_conversation_per_minute: 6,
            messages_per_conversation_burst: 2,
            ..LimitSettings::default()
        });
        limits.check_message("a").unwrap();
        limits.check_message("a").unwrap();
        assert!(matches!(
            limits.check_message("a"),
            Err(LimitError::RateLimited { .. })
        ));
        limits.check_message("b").unwrap();
    }

    #[test]
    fn socket_places_are_given_back_when_a_socket_closes() {
        let limits = limits(LimitSettings {
            max_agent_sockets: 2,
            ..LimitSettings::default()
        });
        let first = limits.open_socket(SocketKind::Agent).unwrap();
        let _second = limits.open_socket(SocketKind::Agent).unwrap();
        assert!(limits.open_socket(SocketKind::Agent).is_err());
        // Customers have their own pool.
        let _customer = limits.open_socket(SocketKind::Customer).unwrap();
        drop(first);
        let _third = limits.open_socket(SocketKind::Agent).unwrap();
    }

    #[test]
    fn the_forwarded_header_is_read_only_when_configured() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let direct = limits(LimitSettings::default());
        assert_eq!(
            direct.client_ip(&headers, Some(peer)),
            Some("127.0.0.1".parse().unwrap())
        );
        let proxied = limits(LimitSettings {
            client_ip_header: Some("x-forwarded-for".into()),
            ..LimitSettings::default()
        });
        assert_eq!(
            proxied.client_ip(&headers, Some(peer)),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            proxied.client_ip(&HeaderMap::new(), Some(peer)),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
