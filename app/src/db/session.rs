//! A new PostgreSQL session with the settings every pooled session gets (`lock_timeout`,
//! `statement_timeout`, `idle_in_transaction_session_timeout`), and why one could not be had:
//! refused for load, or not answered. The pool's attempts and the outage probe both connect
//! through [`establish`].

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use std::time::Duration;

/// How long a new session may take to connect, log in and take its settings — the pool's
/// attempts and the probe's alike. Past it the database is suspect (the probe decides), not
/// down: a loaded server can take a second or two to start a backend.
pub const NEW_SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL's `statement_timeout` for pooled sessions: a statement that the database cannot
/// finish in time fails with the database's own error and its transaction is rolled back, so
/// the answer (`503 overloaded`) is true. (PostgreSQL does not time COMMIT itself.)
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(4);
/// PostgreSQL's `lock_timeout` for pooled sessions: below [`QUERY_BUDGET`](super::QUERY_BUDGET),
/// so a statement stuck behind a row lock fails with the database's own error first.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(1500);
/// PostgreSQL's `idle_in_transaction_session_timeout` for pooled sessions.
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// Why a new session could not be had.
#[derive(Debug)]
pub(super) enum ConnectFailure {
    /// The server answered with a refusal for load (SQLSTATE class 53: `too many clients`).
    Overloaded(String),
    /// No answer, a refused socket, or a server that is starting or stopping.
    Unreachable(String),
}

/// A new session with the pooled sessions' timeouts. Connects with tokio-postgres itself so
/// the refusal's SQLSTATE is seen (diesel's connection error keeps only its text, which the
/// server may localise).
pub(super) async fn establish(url: &str) -> Result<AsyncPgConnection, ConnectFailure> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|err| {
            let load = err.code().is_some_and(|code| code.code().starts_with("53"));
            let detail = format!("cannot connect to the database: {err}");
            if load {
                ConnectFailure::Overloaded(detail)
            } else {
                ConnectFailure::Unreachable(detail)
            }
        })?;
    let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|err| ConnectFailure::Unreachable(err.to_string()))?;
    let timeouts = format!(
        "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
         SET statement_timeout = {}",
        LOCK_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION.as_millis(),
        STATEMENT_TIMEOUT.as_millis(),
    );
    conn.batch_execute(&timeouts)
        .await
        .map_err(|err| ConnectFailure::Unreachable(err.to_string()))?;
    Ok(conn)
}
