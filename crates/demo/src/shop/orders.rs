//! The order service's state: orders, their state in the saga, and a lease naming the
//! coordinator that drives each (an order whose lease ran out is taken over by another; see
//! [`super::saga::recover`]). State changes are conditional (from a given state), so two
//! coordinators driving one order never undo each other.

use super::db::{fingerprint, idempotent, Answer, Db, DbError};
use super::{now_ms, Item};
use rusqlite::{OptionalExtension, Transaction};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    items TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'compensating', 'confirmed', 'cancelled')),
    reason TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    owner TEXT NOT NULL,
    lease_until_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_open ON orders (state, lease_until_ms);
CREATE INDEX IF NOT EXISTS orders_user ON orders (user, created_ms);";

/// Where an order stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Created; being charged and reserved.
    Pending,
    /// A step failed: what was done is being undone.
    Compensating,
    Confirmed,
    Cancelled,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Compensating => "compensating",
            State::Confirmed => "confirmed",
            State::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "pending" => State::Pending,
            "compensating" => State::Compensating,
            "confirmed" => State::Confirmed,
            _ => State::Cancelled,
        }
    }

    /// No step is left to take.
    pub fn is_final(self) -> bool {
        matches!(self, State::Confirmed | State::Cancelled)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Order {
    pub id: String,
    pub user: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub state: State,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Clone)]
pub struct Orders {
    db: Db,
    /// This coordinator's name, in the leases it takes.
    owner: String,
    /// How long a coordinator may drive an order before another may take it over.
    lease: Duration,
}

impl Orders {
    pub fn open(path: Option<&Path>, owner: &str, lease: Duration) -> Result<Orders, DbError> {
        Ok(Orders {
            db: Db::open(path, SCHEMA)?,
            owner: owner.to_string(),
            lease,
        })
    }

    /// Creates a pending order for `user` (call `key`), leased to this coordinator; the same
    /// key again answers the same order (and `true`: nothing was created).
    pub async fn create(
        &self,
        key: &str,
        user: &str,
        items: Vec<Item>,
        total_cents: i64,
    ) -> Result<Result<(Order, bool), Answer>, DbError> {
        let (key, user, owner) = (key.to_string(), user.to_string(), self.owner.clone());
        let lease = self.lease.as_millis() as i64;
        let print = request_print(&user, &items);
        self.db
            .tx(move |tx| {
                let (answer, replayed) = idempotent(tx, &key, &print, |tx| {
                    let id = new_id();
                    let now = now_ms();
                    tx.execute(
                        "INSERT INTO orders (id, user, items, total_cents, state, created_ms, updated_ms, owner, lease_until_ms)
                         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6, ?7)",
                        rusqlite::params![
                            id,
                            user,
                            serde_json::to_string(&items).unwrap_or_default(),
                            total_cents,
                            now,
                            owner,
                            now + lease
                        ],
                    )?;
                    Ok(Answer::json(201, json!({"id": id})))
                })?;
                let id = serde_json::from_str::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string));
                match id {
                    Some(id) if answer.status == 201 => {
                        let order = load(tx, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                        Ok(Ok((order, replayed)))
                    }
                    _ => Ok(Err(answer)),
                }
            })
            .await
    }

    /// The order an earlier call with `key` created, if any: `Ok` when this call asks the same
    /// (a retry), `Err` with a 422 when it asks something else under the same key.
    pub async fn replay(
        &self,
        key: &str,
        user: &str,
        items: &[Item],
    ) -> Result<Option<Result<Order, Answer>>, DbError> {
        let (key, print) = (key.to_string(), request_print(user, items));
        self.db
            .tx(move |tx| {
                let before: Option<(String, String)> = tx
                    .query_row(
                        "SELECT fingerprint, body FROM idempotency WHERE key = ?1",
                        [&key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((was, body)) = before else {
                    return Ok(None);
                };
                if was != print {
                    return Ok(Some(Err(Answer::json(
                        422,
                        json!({"error": format!("Idempotency-Key {key:?} was used for another request")}),
                    ))));
                }
                let id = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                Ok(load(tx, &id)?.map(Ok))
            })
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, DbError> {
        let id = id.to_string();
        self.db.tx(move |tx| load(tx, &id)).await
    }

    /// `user`'s orders, newest first (all users' for `None`), at most `limit`.
    pub async fn list(&self, user: Option<&str>, limit: u32) -> Result<Vec<Order>, DbError> {
        let user = user.map(str::to_string);
        self.db
            .tx(move |tx| {
                let mut q = tx.prepare(
                    "SELECT id FROM orders WHERE ?1 IS NULL OR user = ?1 ORDER BY created_ms DESC LIMIT ?2",
                )?;
                let ids: Vec<String> = q
                    .query_map(rusqlite::params![user, limit], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut out = Vec::new();
                for id in ids {
                    out.extend(load(tx, &id)?);
                }
                Ok(out)
            })
            .await
    }

    /// Moves order `id` from `from` to `to` (with `reason`, if given) unless another
    /// coordinator moved it first; the order as it stands after.
    pub async fn transition(
        &self,
        id: &str,
        from: State,
        to: State,
        reason: Option<String>,
    ) -> Result<Order, DbError> {
        let id = id.to_string();
        self.db
            .tx(move |tx| {
                tx.execute(
                    "UPDATE orders SET state = ?3, reason = COALESCE(?4, reason), updated_ms = ?5
                     WHERE id = ?1 AND state = ?2",
                    rusqlite::params![id, from.as_str(), to.as_str(), reason, now_ms()],
                )?;
                load(tx, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
            })
            .await
    }

    /// Takes over the open orders (pending or compensating) whose lease ran out, leasing them
    /// to this coordinator; at most `limit`, oldest first.
    pub async fn claim_stale(&self, limit: u32) -> Result<Vec<Order>, DbError> {
        let owner = self.owner.clone();
        let lease = self.lease.as_millis() as i64;
        self.db
            .tx(move |tx| {
                let now = now_ms();
                let mut q = tx.prepare(
                    "SELECT id FROM orders WHERE state IN ('pending', 'compensating') AND lease_until_ms < ?1
                     ORDER BY created_ms LIMIT ?2",
                )?;
                let ids: Vec<String> = q
                    .query_map(rusqlite::params![now, limit], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut out = Vec::new();
                for id in ids {
                    tx.execute(
                        "UPDATE orders SET owner = ?2, lease_until_ms = ?3 WHERE id = ?1",
                        rusqlite::params![id, owner, now + lease],
                    )?;
                    out.extend(load(tx, &id)?);
                }
                Ok(out)
            })
            .await
    }

    /// How many orders are in each state.
    pub async fn counts(&self) -> Result<std::collections::BTreeMap<String, i64>, DbError> {
        self.db
            .tx(|tx| {
                let mut q = tx.prepare("SELECT state, COUNT(*) FROM orders GROUP BY state")?;
                let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await
    }
}

fn load(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Order>> {
    tx.query_row(
        "SELECT id, user, items, total_cents, state, reason, created_ms, updated_ms FROM orders WHERE id = ?1",
        [id],
        |r| {
            let items: String = r.get(2)?;
            let state: String = r.get(4)?;
            Ok(Order {
                id: r.get(0)?,
                user: r.get(1)?,
                items: serde_json::from_str(&items).unwrap_or_default(),
                total_cents: r.get(3)?,
                state: State::parse(&state),
                reason: r.get(5)?,
                created_ms: r.get(6)?,
                updated_ms: r.get(7)?,
            })
        },
    )
    .optional()
}

/// What makes two order requests the same: who asks for what (the price is the shop's).
fn request_print(user: &str, items: &[Item]) -> String {
    fingerprint(json!({"user": user, "items": items}).to_string().as_bytes())
}

/// A fresh order id: 16 random bytes, hex.
fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
