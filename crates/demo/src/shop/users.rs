//! The user service's state: accounts with a salted PBKDF2-HMAC-SHA256 password hash (ring),
//! checked when the auth service logs someone in. A demo account is seeded at first start.

use super::db::{Db, DbError};
use rusqlite::OptionalExtension;
use std::num::NonZeroU32;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);";

/// The demo account a new shop has (the shop's start-up message prints it).
pub const DEMO_USER: (&str, &str, &str) = ("alice", "wonderland", "Alice");

/// PBKDF2 rounds: OWASP's figure for PBKDF2-HMAC-SHA256.
const ROUNDS: u32 = 600_000;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub name: String,
    pub display_name: String,
}

#[derive(Clone)]
pub struct Users {
    db: Db,
}

impl Users {
    /// Opens the accounts at `path` (memory for `None`), with the [`DEMO_USER`] if missing.
    pub async fn open(path: Option<&Path>) -> Result<Users, DbError> {
        let users = Users {
            db: Db::open(path, SCHEMA)?,
        };
        let (name, password, display) = DEMO_USER;
        users.add(name, password, display).await?;
        Ok(users)
    }

    /// Adds an account unless one has that name; whether it was added.
    pub async fn add(
        &self,
        name: &str,
        password: &str,
        display_name: &str,
    ) -> Result<bool, DbError> {
        let (name, display_name) = (name.to_string(), display_name.to_string());
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut salt);
        let hash = hash(password, &salt);
        self.db
            .tx(move |tx| {
                let n = tx.execute(
                    "INSERT OR IGNORE INTO users (name, display_name, salt, hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![name, display_name, salt.to_vec(), hash.to_vec(), super::now_ms()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    /// The account if `password` is its password (in constant time), else `None`.
    pub async fn verify(&self, name: &str, password: &str) -> Result<Option<User>, DbError> {
        let name = name.to_string();
        let found: Option<(User, Vec<u8>, Vec<u8>)> = self
            .db
            .tx(move |tx| {
                tx.query_row(
                    "SELECT name, display_name, salt, hash FROM users WHERE name = ?1",
                    [name],
                    |r| {
                        Ok((
                            User {
                                name: r.get(0)?,
                                display_name: r.get(1)?,
                            },
                            r.get(2)?,
                            r.get(3)?,
                        ))
                    },
                )
                .optional()
            })
            .await?;
        let Some((user, salt, hash)) = found else {
            return Ok(None);
        };
        let ok = ring::pbkdf2::verify(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(ROUNDS).expect("rounds are not zero"),
            &salt,
            password.as_bytes(),
            &hash,
        )
        .is_ok();
        Ok(ok.then_some(user))
    }

    pub async fn get(&self, name: &str) -> Result<Option<User>, DbError> {
        let name = name.to_string();
        self.db
            .tx(move |tx| {
                tx.query_row(
                    "SELECT name, display_name FROM users WHERE name = ?1",
                    [name],
                    |r| {
                        Ok(User {
                            name: r.get(0)?,
                            display_name: r.get(1)?,
                        })
                    },
                )
                .optional()
            })
            .await
    }
}

fn hash(password: &str, salt: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(ROUNDS).expect("rounds are not zero"),
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}
