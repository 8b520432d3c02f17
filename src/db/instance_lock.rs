//! One numbering instance per PostgreSQL database, or one cluster.
//!
//! Each instance numbers its sessions' finals itself (`seq` from the stored maximum and its own
//! high-water marks, `super::high_water`). Two instances writing one database would number the
//! same slug twice and collide on `UNIQUE(session_slug, seq)`. So an instance holds a
//! session-level advisory lock on a connection of its own for as long as it runs; a second
//! instance on the same database cannot take it and refuses to start with one line. The lock
//! goes with the connection: a crashed instance frees it at once. (SQLite needs no lock: its
//! spill directory, beside the database file by default, already admits one instance.)
//!
//! In cluster mode (`REDIS_URL`) the instances number each session together, through Redis
//! (docs/ARCHITECTURE.md#cluster-mode): each holds the same lock *shared*, so any number of
//! clustered instances share the database while a lone one (exclusive) and a cluster refuse
//! each other. Clustered instances starting together run migrations one at a time
//! ([`migrating`]).

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};

use super::connection::{establish, DbConnection};
use super::error::DbError;
use super::redact::redact_url;
use super::sharing::Sharing;

/// The advisory lock's key: "rtcore" and 1, so it cannot meet another application's by chance.
const LOCK_KEY: i64 = 0x7274_636f_7265_0001;
/// Held while one instance migrates: "rtcore" and 2.
const MIGRATION_KEY: i64 = 0x7274_636f_7265_0002;

#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

/// Held for the life of the process; dropping it (or the process dying) frees the lock.
pub struct InstanceLock {
    _connection: PgConnection,
}

impl std::fmt::Debug for InstanceLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstanceLock")
    }
}

/// Takes the lock on a PostgreSQL database; `Ok(None)` for SQLite.
pub fn take(database_url: &str, sharing: Sharing) -> Result<Option<InstanceLock>, DbError> {
    let DbConnection::Pg(mut connection) = establish(database_url)? else {
        return Ok(None);
    };
    let query = match sharing {
        Sharing::Alone => "SELECT pg_try_advisory_lock($1) AS taken",
        Sharing::Cluster => "SELECT pg_try_advisory_lock_shared($1) AS taken",
    };
    let taken = diesel::sql_query(query)
        .bind::<BigInt, _>(LOCK_KEY)
        .get_result::<Taken>(&mut connection)
        .map_err(|e| DbError::Connect {
            backend: "postgres",
            target: redact_url(database_url),
            message: format!("cannot take the instance lock: {e}"),
        })?;
    if taken.taken {
        Ok(Some(InstanceLock {
            _connection: connection,
        }))
    } else {
        Err(DbError::AnotherInstance {
            target: redact_url(database_url),
            sharing,
        })
    }
}

/// Runs `migrate` while no other instance migrates the same PostgreSQL database.
pub fn migrating<T>(conn: &mut DbConnection, migrate: impl FnOnce(&mut DbConnection) -> T) -> T {
    let DbConnection::Pg(pg) = conn else {
        return migrate(conn);
    };
    // A failed lock only loses the serialisation: the migration itself then reports any clash.
    let _ = diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_KEY)
        .execute(pg);
    let result = migrate(conn);
    if let DbConnection::Pg(pg) = conn {
        let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(MIGRATION_KEY)
            .execute(pg);
    }
    result
}
