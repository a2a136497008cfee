//! The strategies without a distributed lock (`none`, `db-row`, `atomic`), kept so load runs
//! can compare them with `lock`: each writes the stock and its ledger row in one statement, and
//! the key's answer in the same transaction. The SQL it runs is here with it.

use super::strategy::{not_found, out_of_stock, read_stock, Strategy};
use crate::error::AppError;
use crate::idempotency::{self, IdempotencyKey, Stored};
use actix_web::http::StatusCode;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;

/// The strategies without a distributed lock, for comparison.
pub(super) async fn deduct_without_lock(
    conn: &mut AsyncPgConnection,
    instance: &str,
    strategy: Strategy,
    product_id: i64,
    quantity: i64,
    key: Option<&IdempotencyKey>,
) -> Result<Stored, AppError> {
    let deduction = Deduction {
        product_id,
        quantity,
        strategy,
        instance,
    };
    match strategy {
        // Read, then write back what was read minus the quantity: between the two another
        // request may do the same, and a deduction is lost (or stock oversold).
        Strategy::None => deduction.read_modify_write(conn, key, false).await,
        // The same read-modify-write, with PostgreSQL holding the row lock from read to commit.
        Strategy::DbRow => {
            conn.transaction::<_, AppError, _>(async |conn| {
                deduction.read_modify_write(conn, key, true).await
            })
            .await
        }
        // One conditional decrement.
        Strategy::Atomic => match deduction
            .commit(conn, NewStock::DecrementIfEnough, key)
            .await?
        {
            Some(stored) => Ok(stored),
            None => {
                let (stock, _) = read_stock(conn, product_id, false).await?;
                Err(out_of_stock(product_id, stock, quantity))
            }
        },
        Strategy::Lock => unreachable!("strategy=lock is served by Batches::deduct"),
    }
}

/// How the stock column changes.
#[derive(Debug, Clone, Copy)]
enum NewStock {
    /// `stock = value` (read-modify-write strategies).
    Value(i64),
    /// `stock = stock - quantity`, only if `stock >= quantity` (atomic).
    DecrementIfEnough,
}

/// One deduction without a lock: the stock update with its ledger row, and the idempotency
/// record when the request has a key. (Under the lock, see
/// [`fenced_deduct`](super::fenced_deduct).)
struct Deduction<'a> {
    product_id: i64,
    quantity: i64,
    strategy: Strategy,
    instance: &'a str,
}

/// The stock update and its ledger row in one statement, so they commit together, in one
/// round trip. `$5` is the new stock; `NULL` decrements, only if the stock is enough (then no
/// row comes back when it is not).
const UPDATE_STOCK_AND_LEDGER: &str = "\
    WITH updated AS (
        UPDATE products
        SET stock = COALESCE($5, stock - $2)
        WHERE id = $1 AND ($5 IS NOT NULL OR stock >= $2)
        RETURNING id, stock
    ), ledger AS (
        INSERT INTO stock_ledger (product_id, quantity, strategy, instance)
        SELECT id, $2, $3, $4 FROM updated
    )
    SELECT stock FROM updated";

#[derive(QueryableByName)]
struct Remaining {
    #[diesel(sql_type = BigInt)]
    stock: i64,
}

impl Deduction<'_> {
    fn response(&self, remaining: i64) -> Stored {
        let body = json!({"id": self.product_id, "stock": remaining});
        Stored::new(StatusCode::OK, &body)
    }

    /// Reads the stock (`FOR UPDATE` if asked), refuses when it is short, writes back what was
    /// read minus the quantity (the `none` and `db-row` strategies).
    async fn read_modify_write(
        &self,
        conn: &mut AsyncPgConnection,
        key: Option<&IdempotencyKey>,
        for_update: bool,
    ) -> Result<Stored, AppError> {
        let (stock, _) = read_stock(conn, self.product_id, for_update).await?;
        if stock < self.quantity {
            return Err(out_of_stock(self.product_id, stock, self.quantity));
        }
        self.commit(conn, NewStock::Value(stock - self.quantity), key)
            .await?
            .ok_or_else(|| not_found(self.product_id))
    }

    /// Writes the deduction and, with a key, its response in the same transaction. `None`
    /// when the update was refused (short of stock for `DecrementIfEnough`, or no product).
    async fn commit(
        &self,
        conn: &mut AsyncPgConnection,
        new_stock: NewStock,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Stored>, AppError> {
        // A transaction even without a key: its COMMIT's answer is awaited (see
        // `fenced_deduct`). Inside `db-row`'s, it is a savepoint.
        conn.transaction::<_, AppError, _>(async |conn| {
            let Some(remaining) = self.write(conn, new_stock).await? else {
                return Ok(None);
            };
            let stored = self.response(remaining);
            if let Some(key) = key {
                idempotency::save(conn, key, &stored).await?;
            }
            Ok(Some(stored))
        })
        .await
    }

    /// The stock update and ledger row; the remaining stock, or `None` if refused.
    async fn write(
        &self,
        conn: &mut AsyncPgConnection,
        new_stock: NewStock,
    ) -> Result<Option<i64>, AppError> {
        let value = match new_stock {
            NewStock::Value(value) => Some(value),
            NewStock::DecrementIfEnough => None,
        };
        let remaining: Option<Remaining> = diesel::sql_query(UPDATE_STOCK_AND_LEDGER)
            .bind::<BigInt, _>(self.product_id)
            .bind::<BigInt, _>(self.quantity)
            .bind::<Text, _>(self.strategy.name())
            .bind::<Text, _>(self.instance)
            .bind::<Nullable<BigInt>, _>(value)
            .get_result(conn)
            .await
            .optional()?;
        Ok(remaining.map(|row| row.stock))
    }
}
