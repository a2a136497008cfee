//! The deduction strategies (`?strategy=`) and what they all share: the read of a product's
//! `(stock, fence)` and the refusals `product_not_found` and `out_of_stock`.

use crate::error::AppError;
use crate::schema::products;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;

/// How a deduction protects its read-modify-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// `#[distributed_lock]` around read → check → fenced write (the default).
    Lock,
    /// Read, then write, unprotected: shows lost updates and oversell under load.
    None,
    /// `SELECT … FOR UPDATE` in a transaction: PostgreSQL's row lock.
    DbRow,
    /// One conditional `UPDATE … WHERE stock >= q`.
    Atomic,
}

impl Strategy {
    pub(super) fn name(self) -> &'static str {
        match self {
            Strategy::Lock => "lock",
            Strategy::None => "none",
            Strategy::DbRow => "db-row",
            Strategy::Atomic => "atomic",
        }
    }
}

/// `(stock, fence)` of a product, optionally `FOR UPDATE`.
pub(super) async fn read_stock(
    conn: &mut AsyncPgConnection,
    product_id: i64,
    for_update: bool,
) -> Result<(i64, i64), AppError> {
    let query = products::table
        .find(product_id)
        .select((products::stock, products::fence));
    let row = if for_update {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    row.ok_or_else(|| not_found(product_id))
}

pub(super) fn out_of_stock(id: i64, stock: i64, quantity: i64) -> AppError {
    AppError::Conflict {
        code: "out_of_stock",
        message: format!(
            "product {id} has {stock} in stock, {quantity} requested; nothing was deducted"
        ),
    }
}

pub(super) fn not_found(id: i64) -> AppError {
    AppError::NotFound {
        code: "product_not_found",
        what: "product",
        id,
    }
}
