//! Access tokens already checked: a repeated presentation costs a hash and a map lookup, not a
//! signature check. Keyed by the SHA-256 of the token text, kept until the token's `exp`, and
//! bounded, so that a flood of distinct good tokens cannot grow memory without limit.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::token::Digest;

/// Most tokens kept by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A checked token as kept: what judging it needs, and when it stops being good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub uid: Box<str>,
    /// The Credential token's name; `None` for an ApiKey.
    pub token: Option<Box<str>>,
    pub scopes: Arc<[Box<str>]>,
    /// The application named at the exchange (`keyward.app`), judged again at each use.
    pub app: Option<Box<str>>,
    pub exp: i64,
}

/// The cache. Only tokens whose signature and claims were found good are kept.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    entries: RwLock<HashMap<Digest, Arc<Verified>>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Cache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: RwLock::default() }
    }

    /// The token with this digest, when kept and not expired at `now` (seconds).
    pub fn get(&self, digest: &Digest, now: i64) -> Option<Arc<Verified>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(digest).filter(|v| v.exp > now).cloned()
    }

    /// Keeps a checked token. When full, expired tokens go first; when none has expired, an
    /// arbitrary one makes room (a flood costs signature checks, never memory).
    pub fn insert(&self, digest: Digest, verified: Arc<Verified>, now: i64) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, v| v.exp > now);
            if entries.len() >= self.capacity
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(digest, verified);
    }

    /// Forgets every token: the signing keys changed, and a kept token may name one dropped.
    pub fn clear(&self) {
        self.entries.write().unwrap_or_else(PoisonError::into_inner).clear();
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: i64) -> Arc<Verified> {
        Arc::new(Verified { uid: "u".into(), token: None, scopes: Arc::new([]), app: None, exp })
    }

    fn digest(i: u32) -> Digest {
        crate::token::digest_of(&i.to_string())
    }

    #[test]
    fn a_token_is_kept_until_its_exp() {
        let cache = Cache::default();
        cache.insert(digest(1), verified(100), 0);
        assert!(cache.get(&digest(1), 99).is_some());
        assert!(cache.get(&digest(1), 100).is_none(), "exp is the first second it is no longer good");
        assert!(cache.get(&digest(2), 0).is_none());
    }

    #[test]
    fn a_flood_of_distinct_tokens_stays_within_the_bound() {
        let cache = Cache::with_capacity(100);
        for i in 0..50 {
            cache.insert(digest(i), verified(10), 0);
        }
        for i in 50..10_000 {
            cache.insert(digest(i), verified(1_000), 20);
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        assert!((0..50).all(|i| cache.get(&digest(i), 20).is_none()), "expired ones went first");
        assert!(cache.get(&digest(9_999), 20).is_some(), "the newest is kept");
        cache.clear();
        assert!(cache.is_empty());
    }
}
