//! The product service's state: the catalog (name, description, price), seeded at first start.

use super::db::{Db, DbError};
use rusqlite::OptionalExtension;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0)
);";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
}

/// What a new shop sells, with the stock the inventory starts with.
pub const SEED: &[(&str, &str, &str, i64, u32)] = &[
    ("tea", "Green tea", "Sencha, 100 g, first flush.", 850, 500),
    (
        "cup",
        "Tea cup",
        "Stoneware, hand glazed, 200 ml.",
        1_450,
        200,
    ),
    (
        "pot",
        "Tea pot",
        "Cast iron, 0.8 l, with infuser.",
        4_900,
        50,
    ),
    ("honey", "Honey", "Acacia, 250 g jar.", 690, 300),
    (
        "kettle",
        "Kettle",
        "Gooseneck, temperature control.",
        7_900,
        20,
    ),
];

#[derive(Clone)]
pub struct Catalog {
    db: Db,
}

impl Catalog {
    /// Opens the catalog at `path` (memory for `None`), adding the [`SEED`] products it lacks.
    pub async fn open(path: Option<&Path>) -> Result<Catalog, DbError> {
        let db = Db::open(path, SCHEMA)?;
        db.tx(|tx| {
            for (id, name, description, price, _) in SEED {
                tx.execute(
                    "INSERT OR IGNORE INTO products (id, name, description, price_cents) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![id, name, description, price],
                )?;
            }
            Ok(())
        })
        .await?;
        Ok(Catalog { db })
    }

    pub async fn all(&self) -> Result<Vec<Product>, DbError> {
        self.db
            .tx(|tx| {
                let mut q = tx.prepare(
                    "SELECT id, name, description, price_cents FROM products ORDER BY name",
                )?;
                let rows = q.query_map([], product)?;
                rows.collect()
            })
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Product>, DbError> {
        let id = id.to_string();
        self.db
            .tx(move |tx| {
                tx.query_row(
                    "SELECT id, name, description, price_cents FROM products WHERE id = ?1",
                    [id],
                    product,
                )
                .optional()
            })
            .await
    }
}

fn product(r: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        price_cents: r.get(3)?,
    })
}
