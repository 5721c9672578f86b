//! Applying events in version order (webhooks.md, "Delivery" → "Out of
//! order"). fieldhook may deliver a retried older event after a newer one,
//! and delivers at least once; a receiver orders by the snapshot's `version`
//! with one of two strategies:
//!
//! * [`Strategy::LastWriteWins`] — apply anything newer than what is stored,
//!   ignore the rest. The receiver ends at the latest state but may skip
//!   intermediate versions. Works with any subscription.
//! * [`Strategy::FullReplication`] — apply every version exactly once, in
//!   order: only `stored + 1` (or version 1 when nothing is stored) is
//!   applied; an older or equal version is a duplicate; a higher one is a
//!   *gap*, answered `422` so that fieldhook retries it after the missing
//!   version has arrived. Subscribe to the CRUD events only (`*_created`,
//!   `*_updated`, `*_removed`): exactly one of them exists per version,
//!   while status events (`job_started` …), `job_assigned` and
//!   `job_report_ready` share the version of their `*_updated` — a
//!   subscription to status events alone has gaps that never fill.
//!
//! # Apply and record, atomically
//!
//! [`VersionGate::process`] is the combined API. Per entity, it
//!
//! 1. takes an in-process lock, so two deliveries about one resource never
//!    interleave (fieldhook may send them concurrently);
//! 2. reads the stored version and decides;
//! 3. on [`Decision::Apply`], runs the caller's `apply`, and records the
//!    version **only after `apply` succeeded** — a failed `apply` records
//!    nothing, the caller answers 5xx and fieldhook retries.
//!
//! A crash between a successful `apply` and the recording means the event
//! is applied again on its retry. That is safe because every event carries
//! the *full* snapshot: applying it is an idempotent upsert. The opposite
//! order (record, then apply) could lose a change for good, so it is not
//! offered.
//!
//! The lock is per process. When several receiver processes share one
//! database, either give the webhook `ordering: "entity"` (fieldhook then
//! sends one event per resource at a time), or make the check, your write
//! and the recording one database transaction — as
//! `SqliteVersionStore::begin` (feature `sqlite`) does for SQLite.

use crate::store::VersionStore;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Which versioned resource: `("job" | "client" | "site", uuid)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    /// `job`, `client` or `site`.
    pub entity_type: String,
    /// The resource's uuid.
    pub entity_uuid: Uuid,
}

impl EntityKey {
    /// The key of one resource.
    pub fn new(entity_type: impl Into<String>, entity_uuid: Uuid) -> Self {
        Self { entity_type: entity_type.into(), entity_uuid }
    }
}

/// A resource at one version: what an event says happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityVersion {
    /// Which resource.
    pub key: EntityKey,
    /// The snapshot's `version` (1 on creation, +1 per change).
    pub version: i64,
}

/// How a receiver orders events (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Apply a version newer than the stored one; ignore the rest (answer 200).
    LastWriteWins,
    /// Apply exactly `stored + 1`; ignore older or equal (duplicates, answer
    /// 200); refuse a gap with 422 so that it is retried later.
    FullReplication,
}

impl Strategy {
    /// The decision for an event at `incoming` when `stored` is the last
    /// version applied (`None`: nothing yet). Pure; [`VersionGate`] wraps it
    /// with storage and locking.
    pub fn decide(self, stored: Option<i64>, incoming: i64) -> Decision {
        // Nothing stored reads as version 0, so the creation (version 1) is
        // the one full replication accepts first.
        let stored = stored.unwrap_or(0);
        match self {
            Strategy::LastWriteWins if incoming > stored => Decision::Apply,
            Strategy::LastWriteWins => Decision::Ignore,
            Strategy::FullReplication if incoming <= stored => Decision::Ignore,
            Strategy::FullReplication if incoming == stored + 1 => Decision::Apply,
            Strategy::FullReplication => Decision::Gap,
        }
    }
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Decision {
    /// Apply it, record its version, answer 200.
    Apply,
    /// Already seen or superseded: change nothing, answer 200 (a non-2xx
    /// answer would only make fieldhook retry it).
    Ignore,
    /// A version is missing before this one: answer 422 so that fieldhook
    /// retries it after the missing one had its chance.
    Gap,
}

impl Decision {
    /// The HTTP status to answer: 200, or 422 for a gap.
    pub fn status_code(self) -> u16 {
        match self {
            Decision::Apply | Decision::Ignore => 200,
            Decision::Gap => 422,
        }
    }
}

/// What [`VersionGate::process`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome<T> {
    /// The event was applied (with what `apply` returned) and its version recorded.
    Applied(T),
    /// Duplicate or superseded; nothing was done.
    Ignored,
    /// A version is missing first; nothing was done.
    Gap,
}

impl<T> Outcome<T> {
    /// The decision that led here.
    pub fn decision(&self) -> Decision {
        match self {
            Outcome::Applied(_) => Decision::Apply,
            Outcome::Ignored => Decision::Ignore,
            Outcome::Gap => Decision::Gap,
        }
    }

    /// The HTTP status to answer: 200, or 422 for a gap.
    pub fn status_code(&self) -> u16 {
        self.decision().status_code()
    }
}

/// [`VersionGate::process`] failed; the version was not recorded, so answer
/// 5xx and let fieldhook retry.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError<S, A> {
    /// The version store failed.
    #[error("version store: {0}")]
    Store(#[source] S),
    /// The caller's `apply` failed.
    #[error("applying the event: {0}")]
    Apply(#[source] A),
}

/// The ordering component: a [`Strategy`] over a [`VersionStore`], with a
/// per-entity lock (see the [module documentation](self) for the guarantees).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use fieldhook_receiver::{EntityKey, EntityVersion, MemoryVersionStore, Outcome, Strategy, VersionGate};
///
/// let gate = VersionGate::new(Strategy::FullReplication, MemoryVersionStore::new());
/// let job = EntityKey::new("job", uuid::Uuid::nil());
/// let v2 = EntityVersion { key: job.clone(), version: 2 };
/// let v1 = EntityVersion { key: job, version: 1 };
///
/// let apply = || async { Ok::<_, std::io::Error>(()) };
/// assert_eq!(gate.process(&v2, apply).await.unwrap(), Outcome::Gap); // answer 422
/// assert_eq!(gate.process(&v1, apply).await.unwrap(), Outcome::Applied(()));
/// assert_eq!(gate.process(&v2, apply).await.unwrap(), Outcome::Applied(())); // the retry
/// assert_eq!(gate.process(&v1, apply).await.unwrap(), Outcome::Ignored); // a duplicate
/// # }
/// ```
#[derive(Debug)]
pub struct VersionGate<S> {
    strategy: Strategy,
    store: S,
    locks: KeyedLocks,
}

impl<S: VersionStore> VersionGate<S> {
    /// A gate applying `strategy` with versions kept in `store`.
    pub fn new(strategy: Strategy, store: S) -> Self {
        Self { strategy, store, locks: KeyedLocks::default() }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The version store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// What [`process`](Self::process) would decide now, without locking or
    /// recording anything (for logging, or a dry run).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn decide(&self, entity: &EntityVersion) -> Result<Decision, S::Error> {
        let stored = self.store.get(&entity.key).await?;
        Ok(self.strategy.decide(stored, entity.version))
    }

    /// Decides, and on [`Decision::Apply`] runs `apply` and then records the
    /// version — all under a per-entity lock, so deliveries about one
    /// resource are processed one at a time.
    ///
    /// `apply` must be idempotent (write the snapshot, don't add to it): if
    /// the process dies after `apply` but before the version is recorded,
    /// the retry applies the same event again.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Apply`] when `apply` fails, [`ProcessError::Store`]
    /// when the store does; in both cases no version was recorded, and the
    /// caller should answer 5xx so that fieldhook retries.
    pub async fn process<F, Fut, T, E>(
        &self,
        entity: &EntityVersion,
        apply: F,
    ) -> Result<Outcome<T>, ProcessError<S::Error, E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _guard = self.locks.lock(&entity.key).await;
        let stored = self.store.get(&entity.key).await.map_err(ProcessError::Store)?;
        match self.strategy.decide(stored, entity.version) {
            Decision::Ignore => Ok(Outcome::Ignored),
            Decision::Gap => Ok(Outcome::Gap),
            Decision::Apply => {
                let applied = apply().await.map_err(ProcessError::Apply)?;
                self.store.set(&entity.key, entity.version).await.map_err(ProcessError::Store)?;
                Ok(Outcome::Applied(applied))
            }
        }
    }
}

/// One async mutex per entity key, created on demand and dropped when no
/// one holds or awaits it, so the map stays as small as the work in flight.
#[derive(Debug, Default)]
struct KeyedLocks {
    inner: Mutex<LockMap>,
}

#[derive(Debug, Default)]
struct LockMap {
    locks: HashMap<EntityKey, Arc<tokio::sync::Mutex<()>>>,
    /// Size at which unused entries are swept. An entry is normally removed
    /// by its last holder; this catches those left by a cancelled waiter.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl KeyedLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, LockMap> {
        // The map is only ever left consistent (inserts and removes are
        // single calls), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn lock(&self, key: &EntityKey) -> KeyGuard<'_> {
        let mutex = {
            let mut map = self.map();
            if map.locks.len() >= map.sweep_at.max(MIN_SWEEP) {
                map.locks.retain(|_, m| Arc::strong_count(m) > 1);
                map.sweep_at = map.locks.len() * 2;
            }
            map.locks.entry(key.clone()).or_default().clone()
        };
        let held = mutex.lock_owned().await;
        KeyGuard { locks: self, key: key.clone(), held: Some(held) }
    }
}

struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: EntityKey,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        // Release first, under the map lock: new waiters clone the Arc only
        // while holding the map lock, so a count of 1 (the map's own) means
        // nobody holds or awaits this key and the entry can go.
        drop(self.held.take());
        if map.locks.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryVersionStore;
    use std::convert::Infallible;

    #[test]
    fn the_strategies_decide_as_webhooks_md_says() {
        use Decision::*;
        use Strategy::*;
        let cases = [
            (LastWriteWins, None, 1, Apply, "first sight"),
            (LastWriteWins, None, 5, Apply, "first sight, late in the life of the resource"),
            (LastWriteWins, Some(3), 4, Apply, "next"),
            (LastWriteWins, Some(3), 9, Apply, "newer, skipping some"),
            (LastWriteWins, Some(3), 3, Ignore, "duplicate"),
            (LastWriteWins, Some(3), 2, Ignore, "older"),
            (FullReplication, None, 1, Apply, "the creation"),
            (FullReplication, None, 2, Gap, "before the creation"),
            (FullReplication, Some(3), 4, Apply, "next"),
            (FullReplication, Some(3), 5, Gap, "one missing"),
            (FullReplication, Some(3), 3, Ignore, "duplicate"),
            (FullReplication, Some(3), 1, Ignore, "older"),
        ];
        for (strategy, stored, incoming, expected, why) in cases {
            assert_eq!(strategy.decide(stored, incoming), expected, "{strategy:?}: {why}");
        }
        assert_eq!((Apply.status_code(), Ignore.status_code(), Gap.status_code()), (200, 200, 422));
    }

    fn job(version: i64) -> EntityVersion {
        EntityVersion { key: EntityKey::new("job", Uuid::from_u128(7)), version }
    }

    /// A small deterministic PRNG (splitmix64): seeded shuffles without a
    /// dependency, and every failure reproducible from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i + 1));
            }
        }
    }

    /// Plays a sender that delivers `first_attempts` in that order and
    /// retries every delivery answered 422 at a random later point (as
    /// fieldhook's retry schedule would), until nothing is left. Returns the
    /// versions `apply` saw, in the order it saw them.
    async fn deliver(strategy: Strategy, first_attempts: Vec<i64>, rng: &mut Rng) -> Vec<i64> {
        let gate = VersionGate::new(strategy, MemoryVersionStore::new());
        let mut queue = std::collections::VecDeque::from(first_attempts);
        let mut applied = Vec::new();
        let mut steps = 0;
        while let Some(version) = queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the stream never settles");
            let applied = &mut applied;
            let outcome = gate
                .process(&job(version), || async move {
                    applied.push(version);
                    Ok::<_, Infallible>(())
                })
                .await
                .unwrap();
            if outcome.decision() == Decision::Gap {
                let at = rng.below(queue.len() + 1);
                queue.insert(at, version);
            }
        }
        applied
    }

    /// Every permutation of `items` (Heap's algorithm).
    fn permutations(items: &mut Vec<i64>, k: usize, out: &mut Vec<Vec<i64>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            permutations(items, k - 1, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }

    #[tokio::test]
    async fn every_ordering_of_a_small_stream_replicates_exactly_once_in_order() {
        // Versions 1..=4 with version 2 delivered twice (at-least-once).
        let mut all = Vec::new();
        permutations(&mut vec![1, 2, 2, 3, 4], 5, &mut all);
        assert_eq!(all.len(), 120);
        let mut rng = Rng(1);
        for order in all {
            let applied = deliver(Strategy::FullReplication, order.clone(), &mut rng).await;
            assert_eq!(applied, [1, 2, 3, 4], "delivered in the order {order:?}");
        }
    }

    #[tokio::test]
    async fn every_ordering_of_a_small_stream_ends_at_the_last_version_with_last_write_wins() {
        let mut all = Vec::new();
        permutations(&mut vec![1, 2, 2, 3, 4], 5, &mut all);
        let mut rng = Rng(2);
        for order in all {
            let applied = deliver(Strategy::LastWriteWins, order.clone(), &mut rng).await;
            assert_eq!(applied.last(), Some(&4), "delivered in the order {order:?}");
            assert!(applied.windows(2).all(|w| w[0] < w[1]), "never goes back: {applied:?} for {order:?}");
        }
    }

    /// Versions 1..=n, each delivered one to three times, shuffled; some
    /// versions' first delivery is held back to the very end (a sender whose
    /// first attempt failed), so that long gaps open up.
    fn messy_stream(n: i64, rng: &mut Rng) -> Vec<i64> {
        let mut stream: Vec<i64> = (1..=n).flat_map(|v| std::iter::repeat_n(v, 1 + rng.below(3))).collect();
        rng.shuffle(&mut stream);
        let held_back: Vec<i64> = (1..=n).filter(|_| rng.below(5) == 0).collect();
        for v in &held_back {
            let first = stream.iter().position(|x| x == v).expect("every version is in the stream");
            stream.remove(first);
        }
        stream.extend(held_back);
        stream
    }

    #[tokio::test]
    async fn seeded_shuffles_with_duplicates_and_gaps_replicate_every_version_once_in_order() {
        let n = 30;
        for seed in 0..300 {
            let mut rng = Rng(seed);
            let stream = messy_stream(n, &mut rng);
            let applied = deliver(Strategy::FullReplication, stream, &mut rng).await;
            assert_eq!(applied, (1..=n).collect::<Vec<_>>(), "seed {seed}");
        }
    }

    #[tokio::test]
    async fn seeded_shuffles_with_duplicates_and_gaps_end_at_the_last_version_with_last_write_wins() {
        let n = 30;
        for seed in 0..300 {
            let mut rng = Rng(seed);
            let stream = messy_stream(n, &mut rng);
            let gate = VersionGate::new(Strategy::LastWriteWins, MemoryVersionStore::new());
            let mut state = 0;
            for version in stream {
                let state = &mut state;
                let outcome = gate
                    .process(&job(version), || async move {
                        assert!(version > *state, "seed {seed}: applied {version} over {state}");
                        *state = version;
                        Ok::<_, Infallible>(())
                    })
                    .await
                    .unwrap();
                assert_ne!(outcome, Outcome::Gap, "last write wins never asks for a retry");
            }
            assert_eq!(state, n, "seed {seed}");
            assert_eq!(gate.store().get(&job(0).key).await, Ok(Some(n)));
        }
    }

    #[tokio::test]
    async fn a_failed_apply_records_nothing_so_the_retry_applies_it() {
        let gate = VersionGate::new(Strategy::FullReplication, MemoryVersionStore::new());

        let failed = gate.process(&job(1), || async { Err::<(), _>("database down") }).await;
        assert!(matches!(failed, Err(ProcessError::Apply("database down"))));
        assert_eq!(gate.store().get(&job(1).key).await, Ok(None));

        let retried = gate.process(&job(1), || async { Ok::<_, Infallible>("saved") }).await.unwrap();
        assert_eq!(retried, Outcome::Applied("saved"));
        assert_eq!(gate.store().get(&job(1).key).await, Ok(Some(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_deliveries_about_one_entity_never_interleave() {
        let gate = Arc::new(VersionGate::new(Strategy::LastWriteWins, MemoryVersionStore::new()));
        let state = Arc::new(Mutex::new(0_i64));
        let mut rng = Rng(99);
        let stream = messy_stream(50, &mut rng);

        let tasks: Vec<_> = stream
            .into_iter()
            .map(|version| {
                let (gate, state) = (gate.clone(), state.clone());
                tokio::spawn(async move {
                    gate.process(&job(version), || async move {
                        let seen = *state.lock().unwrap();
                        // Yield inside apply: without the per-entity lock a
                        // newer delivery would decide and apply meanwhile,
                        // and this older one would then overwrite it.
                        tokio::task::yield_now().await;
                        let mut current = state.lock().unwrap();
                        assert_eq!(*current, seen, "another apply ran in between");
                        assert!(version > *current, "applied {version} over {}", *current);
                        *current = version;
                        Ok::<_, Infallible>(())
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await.unwrap();
        }

        assert_eq!(*state.lock().unwrap(), 50);
        assert!(gate.locks.map().locks.is_empty(), "locks are dropped once unused");
    }
}
