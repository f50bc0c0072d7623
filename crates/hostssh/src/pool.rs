//! One [`Connection`] per key (the server uses instance ids), reused by every call.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use russh::keys::PrivateKey;

use crate::{Connection, HostTarget, SshError};

/// Connections by key. A connection is made on first use and kept; one that cannot be
/// revived is dropped with [`Pool::remove`] (the next [`Pool::get`] connects anew).
pub struct Pool<K> {
    conns: tokio::sync::Mutex<HashMap<K, Connection>>,
    timeout: Duration,
}

impl<K: Eq + Hash + Clone> Pool<K> {
    /// `timeout` bounds each connect (dstack: 10 s).
    pub fn new(timeout: Duration) -> Pool<K> {
        Pool { conns: tokio::sync::Mutex::new(HashMap::new()), timeout }
    }

    /// The pooled connection for `key`, or a new one to `target`. A pooled connection to
    /// another target (the instance's address changed) is replaced.
    pub async fn get(
        &self,
        key: &K,
        target: &HostTarget,
        keys: &[PrivateKey],
    ) -> Result<Connection, SshError> {
        if let Some(conn) = self.conns.lock().await.get(key)
            && conn.target() == target
        {
            return Ok(conn.clone());
        }
        // Connect without holding the map, so one slow host does not stall the others.
        let conn = Connection::connect(target, keys, self.timeout).await?;
        let mut conns = self.conns.lock().await;
        match conns.get(key) {
            Some(existing) if existing.target() == target => Ok(existing.clone()),
            _ => {
                conns.insert(key.clone(), conn.clone());
                Ok(conn)
            }
        }
    }

    /// Forgets `key`'s connection; it closes when its last clone is dropped.
    pub async fn remove(&self, key: &K) -> Option<Connection> {
        self.conns.lock().await.remove(key)
    }

    pub async fn len(&self) -> usize {
        self.conns.lock().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.conns.lock().await.is_empty()
    }
}
