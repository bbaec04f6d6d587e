//! What a store keeps for one session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Expiry, Timestamp};

/// A session's data: string keys to JSON values, in key order.
pub type Data = BTreeMap<String, serde_json::Value>;

/// Everything a store keeps for one session.
///
/// Stores persist a record as a whole and hand it back unchanged; only `version` and
/// `expires_at` are theirs to maintain, as the [`Store`](crate::Store) contract describes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// The session's data.
    pub data: Data,
    /// Bumped by the store on every [`Store::update`](crate::Store::update); the
    /// compare-and-set that keeps concurrent requests from overwriting each other.
    pub version: u64,
    /// When the session was created; the absolute lifetime counts from here.
    pub created_at: Timestamp,
    /// When the session ends. A store treats a record whose deadline is not after the current
    /// time as missing.
    pub expires_at: Timestamp,
    /// The expiry policy in force for this session.
    pub expiry: Expiry,
    /// Who the session belongs to (a user id, say), so that a store can list or end all
    /// sessions of one owner.
    pub owner: Option<String>,
}

impl Record {
    /// A fresh record with no data, created at `now` under `expiry`.
    pub fn new(now: Timestamp, expiry: Expiry) -> Self {
        Self {
            data: Data::new(),
            version: 0,
            created_at: now,
            expires_at: expiry.initial_deadline(now),
            expiry,
            owner: None,
        }
    }

    /// Replaces the data.
    #[must_use]
    pub fn with_data(mut self, data: Data) -> Self {
        self.data = data;
        self
    }

    /// Sets the owner.
    #[must_use]
    pub fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// Whether the session has ended at `now`: true from `expires_at` on.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}
