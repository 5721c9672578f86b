//! Where a receiver keeps the last version it applied per resource: the
//! [`VersionStore`] trait and an in-memory implementation. The SQLite one
//! lives in the `sqlite` module (feature `sqlite`).

use crate::ordering::EntityKey;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// The last version applied per `(entity_type, entity_uuid)`.
///
/// Implement it on the database that holds your replicated data, so that the
/// version survives restarts. Keep the version after a `*_removed` event (a
/// tombstone): otherwise a late retry of an older update would look new.
///
/// The futures are `Send` so that the trait works inside multi-threaded
/// servers (an axum handler's future must be `Send`).
pub trait VersionStore: Send + Sync {
    /// Why the store failed (`Infallible` for the in-memory store).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stored version, or `None` when nothing was ever applied.
    fn get(&self, key: &EntityKey) -> impl Future<Output = Result<Option<i64>, Self::Error>> + Send;

    /// Records that `version` was applied.
    ///
    /// Must never lower the stored version (store the maximum): a slow
    /// writer finishing late must not move it back.
    fn set(&self, key: &EntityKey, version: i64) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl<S: VersionStore + ?Sized> VersionStore for Arc<S> {
    type Error = S::Error;

    fn get(&self, key: &EntityKey) -> impl Future<Output = Result<Option<i64>, Self::Error>> + Send {
        (**self).get(key)
    }

    fn set(&self, key: &EntityKey, version: i64) -> impl Future<Output = Result<(), Self::Error>> + Send {
        (**self).set(key, version)
    }
}

/// A [`VersionStore`] in memory: for tests, and for receivers that rebuild
/// their state from scratch on start. Clones share the same map.
#[derive(Debug, Clone, Default)]
pub struct MemoryVersionStore {
    versions: Arc<Mutex<HashMap<EntityKey, i64>>>,
}

impl MemoryVersionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<EntityKey, i64>> {
        // A panic elsewhere cannot leave a half-written integer behind, so a
        // poisoned lock is still safe to use.
        self.versions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl VersionStore for MemoryVersionStore {
    type Error = Infallible;

    async fn get(&self, key: &EntityKey) -> Result<Option<i64>, Infallible> {
        Ok(self.map().get(key).copied())
    }

    async fn set(&self, key: &EntityKey, version: i64) -> Result<(), Infallible> {
        let mut map = self.map();
        let stored = map.entry(key.clone()).or_insert(version);
        *stored = (*stored).max(version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[tokio::test]
    async fn the_memory_store_keeps_the_highest_version_per_entity() {
        let store = MemoryVersionStore::new();
        let job = EntityKey::new("job", Uuid::from_u128(1));
        let client = EntityKey::new("client", Uuid::from_u128(1));

        assert_eq!(store.get(&job).await, Ok(None));
        store.set(&job, 3).await.unwrap();
        store.set(&job, 2).await.unwrap();
        store.set(&client, 1).await.unwrap();

        assert_eq!(store.get(&job).await, Ok(Some(3)), "a late, lower version does not move it back");
        assert_eq!(store.get(&client).await, Ok(Some(1)), "same uuid, other entity type");
    }
}
