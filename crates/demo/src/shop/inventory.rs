//! The inventory service's state: stock per product, what each order reserved, and which orders
//! were released (a reservation arriving after its order's release is refused).

use super::db::{fingerprint, idempotent, Answer, Db, DbError};
use super::Item;
use rusqlite::{OptionalExtension, Transaction};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    product TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT NOT NULL,
    product TEXT NOT NULL,
    qty INTEGER NOT NULL,
    PRIMARY KEY (order_id, product)
);
CREATE TABLE IF NOT EXISTS released (
    order_id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL
);";

/// A product short of what was asked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Short {
    pub product: String,
    pub wanted: u32,
    pub available: i64,
}

#[derive(Clone)]
pub struct Inventory {
    db: Db,
}

impl Inventory {
    /// Opens the inventory at `path` (memory for `None`); products in `seed` that it does not
    /// know yet start with the stock given.
    pub async fn open(path: Option<&Path>, seed: &[(&str, u32)]) -> Result<Inventory, DbError> {
        let db = Db::open(path, SCHEMA)?;
        let seed: Vec<(String, u32)> = seed.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        db.tx(move |tx| {
            for (product, n) in &seed {
                tx.execute(
                    "INSERT OR IGNORE INTO stock (product, available) VALUES (?1, ?2)",
                    rusqlite::params![product, n],
                )?;
            }
            Ok(())
        })
        .await?;
        Ok(Inventory { db })
    }

    /// What is available, by product.
    pub async fn stock(&self) -> Result<BTreeMap<String, i64>, DbError> {
        self.db
            .tx(|tx| {
                let mut q = tx.prepare("SELECT product, available FROM stock")?;
                let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await
    }

    /// The products short of `items` (none: all are there). Reserves nothing.
    pub async fn check(&self, items: Vec<Item>) -> Result<Vec<Short>, DbError> {
        self.db.tx(move |tx| shortages(tx, &items)).await
    }

    /// Reserves `items` for `order` (call `key`): 200 with what was reserved, 409 when a product
    /// is short (nothing reserved) or the order was released already. A second reservation for
    /// the same order answers 200 with the first's, reserving nothing more.
    pub async fn reserve(
        &self,
        key: &str,
        order: &str,
        items: Vec<Item>,
    ) -> Result<Answer, DbError> {
        let (key, order) = (key.to_string(), order.to_string());
        let print = fingerprint(
            json!({"reserve": order, "items": items})
                .to_string()
                .as_bytes(),
        );
        self.db
            .tx(move |tx| {
                idempotent(tx, &key, &print, |tx| {
                    if released(tx, &order)? {
                        return Ok(Answer::json(
                            409,
                            json!({"order": order, "error": "the order was released"}),
                        ));
                    }
                    let held = reserved(tx, &order)?;
                    if !held.is_empty() {
                        return Ok(Answer::json(200, json!({"order": order, "reserved": held})));
                    }
                    let short = shortages(tx, &items)?;
                    if !short.is_empty() {
                        return Ok(Answer::json(409, json!({"order": order, "short": short})));
                    }
                    for i in &items {
                        tx.execute(
                            "UPDATE stock SET available = available - ?2 WHERE product = ?1",
                            rusqlite::params![i.product, i.qty],
                        )?;
                        tx.execute(
                            "INSERT INTO reservations (order_id, product, qty) VALUES (?1, ?2, ?3)
                             ON CONFLICT (order_id, product) DO UPDATE SET qty = qty + excluded.qty",
                            rusqlite::params![order, i.product, i.qty],
                        )?;
                    }
                    Ok(Answer::json(
                        200,
                        json!({"order": order, "reserved": reserved(tx, &order)?}),
                    ))
                })
                .map(|(a, _)| a)
            })
            .await
    }

    /// Releases what `order` reserved (call `key`), and refuses its reservations from now on:
    /// 200 with what went back to stock (nothing, if it had reserved nothing).
    pub async fn release(&self, key: &str, order: &str) -> Result<Answer, DbError> {
        let (key, order) = (key.to_string(), order.to_string());
        let print = fingerprint(json!({"release": order}).to_string().as_bytes());
        self.db
            .tx(move |tx| {
                idempotent(tx, &key, &print, |tx| {
                    let held = reserved(tx, &order)?;
                    for i in &held {
                        tx.execute(
                            "UPDATE stock SET available = available + ?2 WHERE product = ?1",
                            rusqlite::params![i.product, i.qty],
                        )?;
                    }
                    tx.execute("DELETE FROM reservations WHERE order_id = ?1", [&order])?;
                    tx.execute(
                        "INSERT OR IGNORE INTO released (order_id, at_ms) VALUES (?1, ?2)",
                        rusqlite::params![order, super::now_ms()],
                    )?;
                    Ok(Answer::json(200, json!({"order": order, "returned": held})))
                })
                .map(|(a, _)| a)
            })
            .await
    }

    /// What `order` holds reserved now.
    pub async fn reservation(&self, order: &str) -> Result<Vec<Item>, DbError> {
        let order = order.to_string();
        self.db.tx(move |tx| reserved(tx, &order)).await
    }
}

fn shortages(tx: &Transaction<'_>, items: &[Item]) -> rusqlite::Result<Vec<Short>> {
    let mut wanted: BTreeMap<&str, u32> = BTreeMap::new();
    for i in items {
        *wanted.entry(&i.product).or_default() += i.qty;
    }
    let mut short = Vec::new();
    for (product, qty) in wanted {
        let available: i64 = tx
            .query_row(
                "SELECT available FROM stock WHERE product = ?1",
                [product],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if available < i64::from(qty) {
            short.push(Short {
                product: product.to_string(),
                wanted: qty,
                available,
            });
        }
    }
    Ok(short)
}

fn reserved(tx: &Transaction<'_>, order: &str) -> rusqlite::Result<Vec<Item>> {
    let mut q =
        tx.prepare("SELECT product, qty FROM reservations WHERE order_id = ?1 ORDER BY product")?;
    let rows = q.query_map([order], |r| {
        Ok(Item {
            product: r.get(0)?,
            qty: r.get(1)?,
        })
    })?;
    rows.collect()
}

fn released(tx: &Transaction<'_>, order: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM released WHERE order_id = ?1",
            [order],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
