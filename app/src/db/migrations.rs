//! The schema: `migrations/` compiled into the binary and run at start-up, one instance at a
//! time under a PostgreSQL advisory lock.

use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// `migrations/` at the workspace root, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Arbitrary, fixed key of the advisory lock that serialises migrations across instances.
const MIGRATION_LOCK_KEY: i64 = 0x646c_6f63_6b5f_6d67; // ASCII "dlock_mg" (the crate's first name)

/// Runs pending migrations. Safe when several instances start at once: they take turns under
/// a PostgreSQL advisory lock, and the later ones find nothing left to do.
///
/// Runs on a blocking thread with diesel's sync harness over `AsyncConnectionWrapper`
/// (diesel-async's own harness panics on actix's single-threaded runtimes).
pub async fn run_migrations(database_url: &str) -> Result<(), String> {
    let url = database_url.to_string();
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl;
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                .map_err(|err| {
                    format!("cannot connect to {}: {err}", fencelock::redact_url(&url))
                })?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)
            .map_err(|err| format!("migration lock: {err}"))?;
        let outcome = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(|err| format!("migrations failed: {err}"));
        let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn);
        let applied = outcome?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        Ok(())
    })
    .await
    .map_err(|err| format!("migration task failed: {err}"))?
}
