//! One SQLite database per service: a file under the service's data directory in WAL mode (so
//! readers never wait for the writer, and a crash loses no committed write), or an in-memory one
//! (`--memory`, tests); and the idempotency records mutating calls go through.

use rusqlite::{Connection, OptionalExtension, Transaction};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database task: {0}")]
    Task(String),
}

/// A service's database. Calls run on tokio's blocking pool, one at a time.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

/// What every service's schema has: the answers to idempotent calls, by key.
const IDEMPOTENCY: &str = "
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);";

impl Db {
    /// Opens (creating) the database at `path`, or an in-memory one for `None`, and applies
    /// `schema` (statements that create what is missing).
    pub fn open(path: Option<&Path>, schema: &str) -> Result<Db, DbError> {
        let name = path.map_or(":memory:".to_string(), |p| p.display().to_string());
        let open = || -> rusqlite::Result<Connection> {
            let conn = match path {
                Some(p) => Connection::open(p)?,
                None => Connection::open_in_memory()?,
            };
            if path.is_some() {
                conn.pragma_update(None, "journal_mode", "WAL")?;
                // Every commit reaches the disk: an order confirmed is an order kept.
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            // Replicas of a service on one machine share the file.
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(IDEMPOTENCY)?;
            conn.execute_batch(schema)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| DbError::Open { path: name, source })?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` in one immediate transaction (it takes the write lock at once, so two replicas
    /// never both read before either writes), committed when `f` returns `Ok`.
    pub async fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

/// The answer to a mutating call, as sent and as kept for replays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// JSON.
    pub body: String,
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            body: body.to_string(),
        }
    }
}

/// Runs `f` for the call `key` with request `fingerprint` unless it was answered before: then
/// the first answer again (`replayed`), or 422 when the same key came with another request.
/// `f`'s writes and the record of its answer commit together, so a call is done once or not at
/// all. Answers of 5xx are not kept: the call may be retried with the same key.
pub fn idempotent(
    tx: &Transaction<'_>,
    key: &str,
    fingerprint: &str,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<Answer>,
) -> rusqlite::Result<(Answer, bool)> {
    let before: Option<(String, u16, String)> = tx
        .query_row(
            "SELECT fingerprint, status, body FROM idempotency WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((was, status, body)) = before {
        if was != fingerprint {
            let refused = Answer::json(
                422,
                serde_json::json!({
                    "error": format!("Idempotency-Key {key:?} was used for another request")
                }),
            );
            return Ok((refused, true));
        }
        return Ok((Answer { status, body }, true));
    }
    let answer = f(tx)?;
    if answer.status < 500 {
        tx.execute(
            "INSERT INTO idempotency (key, fingerprint, status, body, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![key, fingerprint, answer.status, answer.body, super::now_ms()],
        )?;
    }
    Ok((answer, false))
}

/// The fingerprint of a request body: its SHA-256, hex.
pub fn fingerprint(body: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
