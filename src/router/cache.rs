//! The parse cache: classified statements by fingerprint hash, so a statement repeated with
//! other literals costs one lexer pass and one lookup. Classification depends on nothing
//! but the fingerprint (see `classify`), so any literals may share one entry.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{counter, Counter};
use moka::sync::Cache;

use super::classify::{classify_with, Access, Classified};
use super::fingerprint::fingerprint;

/// Entries kept by default.
pub const DEFAULT_CAPACITY: u64 = 10_000;
/// Longer statements are classified every time: rare, and not worth an entry's memory.
pub const MAX_CACHED_LEN: usize = 64 * 1024;

/// Entries each thread keeps in front of the shared cache (direct-mapped by hash).
const NEAR_SLOTS: usize = 64;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A thread's copy of a shared entry: valid for the cache it came from in the epoch it
/// was taken.
struct Near {
    cache: u64,
    epoch: u64,
    entry: Arc<Classified>,
}

thread_local! {
    static NEAR: RefCell<Vec<Option<Near>>> = const { RefCell::new(Vec::new()) };
}

/// A bounded, shared parse cache; clones share entries and counts.
#[derive(Clone)]
pub struct ParseCache {
    entries: Cache<u128, Arc<Classified>>,
    counts: Arc<Counts>,
}

struct Counts {
    /// Tells this cache apart from every other one made in this process.
    id: u64,
    /// Bumped whenever an entry changes meaning (`remember_write`): what each thread keeps
    /// in front of the cache is valid only for the epoch it was taken in.
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    unparsed: AtomicU64,
    hits_total: Counter,
    misses_total: Counter,
    unparsed_total: Counter,
}

/// Counts since the cache was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Statements (hits included) that could not be parsed.
    pub unparsed: u64,
}

impl ParseCache {
    /// A cache of at most `capacity` statements. Registers its metric handles: make it
    /// after the metrics exporter is installed.
    pub fn new(capacity: u64) -> ParseCache {
        ParseCache {
            entries: Cache::new(capacity),
            counts: Arc::new(Counts {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                epoch: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                unparsed: AtomicU64::new(0),
                hits_total: counter!("pgstrata_parse_cache_hits_total"),
                misses_total: counter!("pgstrata_parse_cache_misses_total"),
                unparsed_total: counter!("pgstrata_statements_unparsed_total"),
            }),
        }
    }

    /// Classifies `sql`, from the cache when a statement with the same fingerprint was seen.
    /// Invalid UTF-8 is unparsed (a write) and not cached.
    pub fn classify(&self, sql: &[u8]) -> Arc<Classified> {
        let fp = fingerprint(sql);
        let classified = match std::str::from_utf8(sql) {
            Ok(text) if text.len() <= MAX_CACHED_LEN => match self.lookup(fp.hash) {
                Some(hit) => {
                    self.counts.hits.fetch_add(1, Ordering::Relaxed);
                    self.counts.hits_total.increment(1);
                    hit
                }
                None => {
                    self.miss();
                    let classified = Arc::new(classify_with(text, fp.normalized.into(), fp.hash));
                    self.entries.insert(fp.hash, Arc::clone(&classified));
                    self.keep_near(&classified);
                    classified
                }
            },
            Ok(text) => {
                self.miss();
                Arc::new(classify_with(text, fp.normalized.into(), fp.hash))
            }
            Err(_) => {
                self.miss();
                Arc::new(Classified::unparsed(fp.normalized.into(), fp.hash))
            }
        };
        if !classified.parsed {
            self.counts.unparsed.fetch_add(1, Ordering::Relaxed);
            self.counts.unparsed_total.increment(1);
        }
        classified
    }

    /// A replica refused `sql` as a write (SQLSTATE 25006): from now on, statements with
    /// its fingerprint are writes, whatever the parser made of them.
    pub fn remember_write(&self, sql: &[u8]) {
        let classified = self.classify(sql);
        if classified.access == Access::Write || sql.len() > MAX_CACHED_LEN {
            return;
        }
        let write = Classified {
            access: Access::Write,
            ..(*classified).clone()
        };
        self.entries.insert(classified.hash, Arc::new(write));
        self.counts.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The entry for `hash`: from this thread's copies when one is current, else from the
    /// shared cache (and then copied). The shared cache's bookkeeping on every read costs
    /// more than classifying a hit otherwise does.
    fn lookup(&self, hash: u128) -> Option<Arc<Classified>> {
        let epoch = self.counts.epoch.load(Ordering::Acquire);
        let id = self.counts.id;
        let slot = (hash as usize) % NEAR_SLOTS;
        let near = NEAR.with_borrow(|near| {
            near.get(slot).and_then(Option::as_ref).and_then(|n| {
                (n.cache == id && n.epoch == epoch && n.entry.hash == hash)
                    .then(|| Arc::clone(&n.entry))
            })
        });
        if near.is_some() {
            return near;
        }
        let hit = self.entries.get(&hash)?;
        self.keep_near(&hit);
        Some(hit)
    }

    fn keep_near(&self, entry: &Arc<Classified>) {
        let near = Near {
            cache: self.counts.id,
            epoch: self.counts.epoch.load(Ordering::Acquire),
            entry: Arc::clone(entry),
        };
        let slot = (entry.hash as usize) % NEAR_SLOTS;
        NEAR.with_borrow_mut(|slots| {
            if slots.is_empty() {
                slots.resize_with(NEAR_SLOTS, || None);
            }
            slots[slot] = Some(near);
        });
    }

    fn miss(&self) {
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        self.counts.misses_total.increment(1);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
            unparsed: self.counts.unparsed.load(Ordering::Relaxed),
        }
    }
}

impl Default for ParseCache {
    fn default() -> Self {
        ParseCache::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::StatementKind;

    #[test]
    fn hits_ignore_literals() {
        let cache = ParseCache::new(100);
        let a = cache.classify(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1");
        let b = cache.classify(b"select abalance from pgbench_accounts where aid = 99");
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache.classify(b"SELECT set_config('a.b', 'x', false)");
        let d = cache.classify(b"SELECT set_config('c.d', 'y', false)");
        assert!(Arc::ptr_eq(&c, &d));
        assert_eq!(d.kind, StatementKind::Select);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.unparsed), (2, 2, 0));
    }

    #[test]
    fn a_statement_refused_as_a_write_stays_one() {
        let cache = ParseCache::new(100);
        assert_eq!(cache.classify(b"SELECT my_writer(1)").access, Access::Read);
        cache.remember_write(b"SELECT my_writer(2)");
        assert_eq!(cache.classify(b"SELECT my_writer(3)").access, Access::Write);
        assert_eq!(cache.classify(b"SELECT other(3)").access, Access::Read);
    }

    #[test]
    fn caches_keep_their_own_entries_on_one_thread() {
        let a = ParseCache::new(100);
        let b = ParseCache::new(100);
        assert_eq!(a.classify(b"SELECT my_writer(1)").access, Access::Read);
        assert_eq!(b.classify(b"SELECT my_writer(1)").access, Access::Read);
        a.remember_write(b"SELECT my_writer(2)");
        // Both went through this thread's copies; only `a` learned the write.
        assert_eq!(a.classify(b"SELECT my_writer(3)").access, Access::Write);
        assert_eq!(b.classify(b"SELECT my_writer(3)").access, Access::Read);
        assert_eq!((b.stats().hits, b.stats().misses), (1, 1));
    }

    #[test]
    fn what_is_not_cached() {
        let cache = ParseCache::new(100);
        cache.classify(b"SELECT 'x'");
        let bad = cache.classify(b"SELECT '\xff'");
        assert!(!bad.parsed);
        assert_eq!(bad.access, Access::Write);
        let long = format!("SELECT '{}'", "x".repeat(MAX_CACHED_LEN));
        let first = cache.classify(long.as_bytes());
        let again = cache.classify(long.as_bytes());
        assert!(!Arc::ptr_eq(&first, &again));
        assert!(first.parsed);
        cache.classify(b"SELEC 1");
        cache.classify(b"SELEC 2");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.unparsed), (1, 5, 3));
    }
}
