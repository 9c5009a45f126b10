//! Failed-login throttling: after too many wrong passwords for one user, or from one
//! remote address, within a window, further attempts are refused (429 + Retry-After)
//! without running argon2, so online guessing is slow and cannot fill the blocking pool.
//!
//! Only configured users get a per-user count: names an attacker makes up would
//! otherwise push real users' counts out of the bounded map. IPv6 addresses count per
//! /64, the block one host usually holds. Single-threaded (the API executor).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::limits::{
    LOGIN_FAILURE_WINDOW, MAX_LOGIN_FAILURES_PER_ADDRESS_COUNT, MAX_LOGIN_FAILURES_PER_USER_COUNT,
    MAX_LOGIN_THROTTLE_ENTRIES_COUNT,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    /// An IPv4 address, or an IPv6 address with its low 64 bits cleared.
    Address(IpAddr),
}

impl Key {
    fn max_failures(&self) -> u32 {
        match self {
            Self::User(_) => MAX_LOGIN_FAILURES_PER_USER_COUNT,
            Self::Address(_) => MAX_LOGIN_FAILURES_PER_ADDRESS_COUNT,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts of recent failed logins. Invariant: at most `MAX_LOGIN_THROTTLE_ENTRIES_COUNT`
/// entries.
#[derive(Default)]
pub struct LoginThrottle {
    windows: RefCell<HashMap<Key, Window>>,
}

impl LoginThrottle {
    /// How long until an attempt for `user` (a configured user) from `address` may run;
    /// None if it may run now.
    pub fn retry_after(
        &self,
        user: Option<&str>,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        let windows = self.windows.borrow();
        keys(user, address)
            .filter_map(|key| {
                let window = windows.get(&key)?;
                let ends = window.started + LOGIN_FAILURE_WINDOW;
                (now < ends && window.failures >= key.max_failures()).then(|| ends - now)
            })
            .max()
    }

    /// Counts a wrong password for `user` (a configured user) from `address`; whether
    /// this failure made the user or the address reach its limit (worth a log line).
    pub fn failed(&self, user: Option<&str>, address: Option<IpAddr>, now: Instant) -> bool {
        let mut windows = self.windows.borrow_mut();
        let mut reached = false;
        for key in keys(user, address) {
            let max_failures = key.max_failures();
            let window = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now >= window.started + LOGIN_FAILURE_WINDOW {
                *window = Window {
                    started: now,
                    failures: 0,
                };
            }
            window.failures = window.failures.saturating_add(1);
            reached |= window.failures == max_failures;
        }
        if windows.len() > MAX_LOGIN_THROTTLE_ENTRIES_COUNT {
            windows.retain(|_, w| now < w.started + LOGIN_FAILURE_WINDOW);
        }
        while windows.len() > MAX_LOGIN_THROTTLE_ENTRIES_COUNT {
            let oldest = windows
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(k, _)| k.clone())
                .expect("an over-full map is not empty");
            windows.remove(&oldest);
        }
        reached
    }

    /// The right password for `user`: its count starts over (the address's does not, so
    /// one's own account cannot launder guesses at others).
    pub fn succeeded(&self, user: &str) {
        self.windows
            .borrow_mut()
            .remove(&Key::User(user.to_string()));
    }
}

fn keys(user: Option<&str>, address: Option<IpAddr>) -> impl Iterator<Item = Key> {
    let user = user.map(|u| Key::User(u.to_string()));
    let address = address.map(|a| Key::Address(address_block(a)));
    user.into_iter().chain(address)
}

fn address_block(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let high = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(high.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the Nth failure in a window blocks further attempts until the window ends,
    //! per user and per address, and memory stays bounded.
    //! Method: an explicit clock driving one throttle.
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn a_user_is_blocked_after_its_failures_until_the_window_ends() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for i in 0..MAX_LOGIN_FAILURES_PER_USER_COUNT {
            let at = t0 + Duration::from_secs(u64::from(i));
            assert_eq!(throttle.retry_after(Some("ana"), ip("10.0.0.1"), at), None);
            // Each guess from its own address: the user's count alone blocks.
            let from = ip(&format!("10.0.1.{i}"));
            let reached = throttle.failed(Some("ana"), from, at);
            assert_eq!(reached, i + 1 == MAX_LOGIN_FAILURES_PER_USER_COUNT);
        }
        let later = t0 + Duration::from_secs(60);
        let wait = throttle.retry_after(Some("ana"), ip("10.0.0.1"), later);
        assert_eq!(wait, Some(LOGIN_FAILURE_WINDOW - Duration::from_secs(60)));
        assert_eq!(
            throttle.retry_after(Some("bo"), ip("10.0.0.1"), later),
            None
        );
        let after = t0 + LOGIN_FAILURE_WINDOW;
        assert_eq!(
            throttle.retry_after(Some("ana"), ip("10.0.0.1"), after),
            None
        );
        // A success starts the user's count over.
        throttle.failed(Some("ana"), None, after);
        throttle.succeeded("ana");
        assert!(!throttle
            .windows
            .borrow()
            .contains_key(&Key::User("ana".into())));
    }

    #[test]
    fn an_address_is_blocked_across_users_and_ipv6_counts_per_64() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_LOGIN_FAILURES_PER_ADDRESS_COUNT {
            let from = ip(&format!("2001:db8::{i:x}"));
            throttle.failed(None, from, now);
        }
        assert!(throttle
            .retry_after(Some("ana"), ip("2001:db8::ffff"), now)
            .is_some());
        assert!(throttle
            .retry_after(Some("ana"), ip("2001:db8:0:1::1"), now)
            .is_none());
        assert_eq!(
            address_block("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_map_stays_bounded_under_a_spray_of_addresses() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_LOGIN_THROTTLE_ENTRIES_COUNT as u32 + 100) {
            throttle.failed(None, Some(IpAddr::V4(i.into())), now);
        }
        assert!(throttle.windows.borrow().len() <= MAX_LOGIN_THROTTLE_ENTRIES_COUNT);
    }
}
