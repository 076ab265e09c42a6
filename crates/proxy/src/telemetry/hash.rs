//! The one hasher of the telemetry tables: foldhash, seeded randomly once per process, so
//! label values a peer chooses cannot be picked to collide.

use foldhash::fast::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::LazyLock;

static STATE: LazyLock<RandomState> = LazyLock::new(RandomState::default);

/// The hash of one value.
pub(crate) fn one(value: &impl Hash) -> u64 {
    STATE.hash_one(value)
}

/// The hash of a few precomputed hashes and packed fields.
pub(crate) fn words(words: &[u64]) -> u64 {
    let mut h = STATE.build_hasher();
    for w in words {
        h.write_u64(*w);
    }
    h.finish()
}
