//! The series table: a hash table behind an `ArcSwap`, read without a lock by every record,
//! replaced whole (copy-on-write, under a mutex) only when a label set is seen for the first
//! time, with a cap on the number of label sets.
//!
//! Why not prometheus-client's `Family`: its `get_or_create` takes an `RwLock` on every call,
//! and the request path takes no lock. Copying the table on insert costs O(series) once per
//! new label set — at the 10,000 cap, about a hundred microseconds — which the steady state
//! (where every label set already exists) never pays.

use super::series::{KeyRef, Series};
use arc_swap::ArcSwap;
use hashbrown::HashTable;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// Label sets kept apart in the `overflow` series once the table is full: the closed-set labels
/// (reporter, protocol, code, gRPC status, flags, security) of the records that did not fit.
/// Past this, one catch-all series per reporter and protocol takes the rest.
pub(crate) const OVERFLOW_SERIES: usize = 256;

/// A lock-free-read, copy-on-write hash table of `Arc<V>`, looked up by precomputed hash.
pub(crate) struct CowTable<V> {
    current: ArcSwap<HashTable<Arc<V>>>,
    /// Serializes writers so that two first records of new label sets don't lose one.
    write: Mutex<()>,
}

impl<V> CowTable<V> {
    pub(crate) fn new() -> Self {
        CowTable {
            current: ArcSwap::from_pointee(HashTable::new()),
            write: Mutex::new(()),
        }
    }

    /// Calls `found` with the entry matching `eq`, if there is one. No lock, no refcount
    /// change: the loaded table is pinned by `arc-swap`'s per-thread guard.
    #[inline]
    pub(crate) fn find<R, F: FnOnce(&Arc<V>) -> R>(
        &self,
        hash: u64,
        eq: impl Fn(&V) -> bool,
        found: F,
    ) -> Result<R, F> {
        let table = self.current.load();
        match table.find(hash, |v| eq(v)) {
            Some(v) => Ok(found(v)),
            None => Err(found),
        }
    }

    /// The entry matching `eq`, inserting `make()` if there is none and fewer than `cap`
    /// entries exist; `None` when full.
    pub(crate) fn insert(
        &self,
        hash: u64,
        eq: impl Fn(&V) -> bool,
        cap: usize,
        rehash: impl Fn(&V) -> u64,
        make: impl FnOnce() -> V,
    ) -> Option<Arc<V>> {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        if let Some(v) = current.find(hash, |v| eq(v)) {
            return Some(v.clone());
        }
        if current.len() >= cap {
            return None;
        }
        let mut next = HashTable::clone(&current);
        let v = Arc::new(make());
        next.insert_unique(hash, v.clone(), |v| rehash(v));
        self.current.store(Arc::new(next));
        Some(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.current.load().len()
    }

    /// The entries now, for a scrape.
    pub(crate) fn snapshot(&self) -> Arc<HashTable<Arc<V>>> {
        self.current.load_full()
    }
}

/// The series of one kind (HTTP or TCP) with the cardinality guard.
pub(crate) struct Table<S> {
    main: CowTable<S>,
    overflow: CowTable<S>,
    max: usize,
    /// Records that found the table full and went to an `overflow` series.
    dropped: AtomicU64,
}

impl<S: Series> Table<S> {
    pub(crate) fn new(max: usize) -> Self {
        Table {
            main: CowTable::new(),
            overflow: CowTable::new(),
            max,
            dropped: AtomicU64::new(0),
        }
    }

    /// Calls `f` with the series of `key`, creating it if the table has room, else with an
    /// `overflow` series (and counts the record as dropped).
    #[inline]
    pub(crate) fn with<R>(&self, key: KeyRef<'_>, f: impl FnOnce(&Arc<S>) -> R) -> R {
        let hash = key.hash();
        let f = match self.main.find(hash, |s| key.matches(s.key()), f) {
            Ok(r) => return r,
            Err(f) => f,
        };
        self.insert(key, hash, f)
    }

    #[cold]
    fn insert<R>(&self, key: KeyRef<'_>, hash: u64, f: impl FnOnce(&Arc<S>) -> R) -> R {
        // `len()` first, so a full table sends records to overflow without the mutex.
        let reserved = key.is_overflow();
        if !reserved && self.main.len() < self.max {
            let eq = |s: &S| key.matches(s.key());
            if let Some(s) = self
                .main
                .insert(hash, eq, self.max, S::hash, || S::new(key.to_key(), hash))
            {
                return f(&s);
            }
        }
        if !reserved {
            self.dropped.fetch_add(1, Relaxed);
        }
        let overflow = key.overflow();
        let hash = overflow.hash();
        let f = match self.overflow.find(hash, |s| overflow.matches(s.key()), f) {
            Ok(r) => return r,
            Err(f) => f,
        };
        let eq = |s: &S| overflow.matches(s.key());
        let make = || S::new(overflow.to_key(), hash);
        if let Some(s) = self
            .overflow
            .insert(hash, eq, OVERFLOW_SERIES, S::hash, make)
        {
            return f(&s);
        }
        // A handful of catch-all keys (reporter × protocol), so no cap is needed.
        let last = key.catch_all();
        let hash = last.hash();
        let eq = |s: &S| last.matches(s.key());
        let make = || S::new(last.to_key(), hash);
        match self.overflow.insert(hash, eq, usize::MAX, S::hash, make) {
            Some(s) => f(&s),
            None => unreachable!("an uncapped insert always returns the series"),
        }
    }

    /// Every series: the table's, then the overflow ones.
    pub(crate) fn snapshot(&self) -> [Arc<HashTable<Arc<S>>>; 2] {
        [self.main.snapshot(), self.overflow.snapshot()]
    }

    pub(crate) fn len(&self) -> usize {
        self.main.len() + self.overflow.len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}
