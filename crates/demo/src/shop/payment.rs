//! The payment service's state: one charge per order, refunds, and the switches that make a
//! payment provider misbehave on purpose (`fail_rate`: declines before charging anything,
//! `delay`: answers late), so retries, timeouts, breakers and canaries show on real flows.

use super::db::{fingerprint, idempotent, Answer, Db, DbError};
use rand::Rng;
use rusqlite::{OptionalExtension, Transaction};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS charges (
    order_id TEXT PRIMARY KEY,
    amount_cents INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('charged', 'refunded')),
    charged_cents INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);";

/// How the payment provider misbehaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    /// The share of charges declined (503, nothing charged), 0 to 1.
    pub fail_rate: f64,
    /// Added before every charge is answered.
    pub delay: Duration,
}

/// An order's charge as kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Charge {
    pub order: String,
    pub amount_cents: i64,
    /// `charged` or `refunded`.
    pub state: String,
    /// What the customer was charged and not refunded: the amount while charged, 0 once
    /// refunded (or when only a refund came).
    pub charged_cents: i64,
}

#[derive(Clone)]
pub struct Payment {
    db: Db,
    switches: Switches,
}

impl Payment {
    pub fn open(path: Option<&Path>, switches: Switches) -> Result<Payment, DbError> {
        Ok(Payment {
            db: Db::open(path, SCHEMA)?,
            switches,
        })
    }

    /// Charges `amount_cents` for `order` (call `key`): 200 with the charge; 503 when the
    /// switches decline it (nothing charged, nothing kept: a retry may succeed); 409 when the
    /// order was refunded already. A second charge for the same order answers the first.
    pub async fn charge(
        &self,
        key: &str,
        order: &str,
        amount_cents: i64,
    ) -> Result<Answer, DbError> {
        if !self.switches.delay.is_zero() {
            tokio::time::sleep(self.switches.delay).await;
        }
        let declined = self.switches.fail_rate > 0.0
            && rand::thread_rng().gen_bool(self.switches.fail_rate.clamp(0.0, 1.0));
        let (key, order) = (key.to_string(), order.to_string());
        let print = fingerprint(
            json!({"charge": order, "amount": amount_cents})
                .to_string()
                .as_bytes(),
        );
        self.db
            .tx(move |tx| {
                idempotent(tx, &key, &print, |tx| {
                    if let Some(c) = charge_of(tx, &order)? {
                        return Ok(match c.state.as_str() {
                            "refunded" => Answer::json(
                                409,
                                json!({"order": order, "error": "the order was refunded"}),
                            ),
                            _ => Answer::json(200, json!(c)),
                        });
                    }
                    if declined {
                        return Ok(Answer::json(
                            503,
                            json!({"order": order, "error": "declined (payment --fail-rate)"}),
                        ));
                    }
                    tx.execute(
                        "INSERT INTO charges (order_id, amount_cents, state, charged_cents, at_ms)
                         VALUES (?1, ?2, 'charged', ?2, ?3)",
                        rusqlite::params![order, amount_cents, super::now_ms()],
                    )?;
                    let c = charge_of(tx, &order)?;
                    Ok(Answer::json(200, json!(c)))
                })
                .map(|(a, _)| a)
            })
            .await
    }

    /// Refunds `order`'s charge (call `key`), and refuses charges for it from now on: 200 with
    /// the charge as it stands (a refund before any charge keeps a zero record).
    pub async fn refund(&self, key: &str, order: &str) -> Result<Answer, DbError> {
        let (key, order) = (key.to_string(), order.to_string());
        let print = fingerprint(json!({"refund": order}).to_string().as_bytes());
        self.db
            .tx(move |tx| {
                idempotent(tx, &key, &print, |tx| {
                    tx.execute(
                        "INSERT INTO charges (order_id, amount_cents, state, charged_cents, at_ms)
                         VALUES (?1, 0, 'refunded', 0, ?2)
                         ON CONFLICT (order_id) DO UPDATE SET state = 'refunded', charged_cents = 0",
                        rusqlite::params![order, super::now_ms()],
                    )?;
                    Ok(Answer::json(200, json!(charge_of(tx, &order)?)))
                })
                .map(|(a, _)| a)
            })
            .await
    }

    /// `order`'s charge, if any.
    pub async fn charge_for(&self, order: &str) -> Result<Option<Charge>, DbError> {
        let order = order.to_string();
        self.db.tx(move |tx| charge_of(tx, &order)).await
    }

    /// Everything charged and not refunded, in cents.
    pub async fn total_charged(&self) -> Result<i64, DbError> {
        self.db
            .tx(|tx| {
                tx.query_row(
                    "SELECT COALESCE(SUM(charged_cents), 0) FROM charges",
                    [],
                    |r| r.get(0),
                )
            })
            .await
    }
}

fn charge_of(tx: &Transaction<'_>, order: &str) -> rusqlite::Result<Option<Charge>> {
    tx.query_row(
        "SELECT order_id, amount_cents, state, charged_cents FROM charges WHERE order_id = ?1",
        [order],
        |r| {
            Ok(Charge {
                order: r.get(0)?,
                amount_cents: r.get(1)?,
                state: r.get(2)?,
                charged_cents: r.get(3)?,
            })
        },
    )
    .optional()
}
