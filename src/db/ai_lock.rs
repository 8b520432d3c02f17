//! The per-meeting AI coordinator lock (docs/PROTOCOL.md#ai-coordinator-lock `/api/sessions/{slug}/ai-lock`), kept in
//! the `ai_locks` table so that it holds across instances and expires by itself.
//!
//! Send these to [`StorageHandles::writer`](super::StorageHandles): both are writes.

use std::time::{SystemTime, UNIX_EPOCH};

use ::actors::persistence::StorageError;
use actix::prelude::*;
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::connection::DbConnection;
use super::executor::{with_backend, DbExecutor};
use super::schema::ai_locks;

/// Take or renew the lock for `ttl_ms` from now. It is granted when nobody holds it, when
/// `holder` already holds it (renewal), or when the current lock has expired.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<AiLockState, StorageError>")]
pub struct AcquireAiLock {
    pub session_slug: String,
    pub holder: String,
    pub ttl_ms: i64,
}

/// Give the lock up. Answers whether `holder` held it (a stale or foreign release is a no-op).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct ReleaseAiLock {
    pub session_slug: String,
    pub holder: String,
}

/// The lock after an acquire attempt: who holds it and until when (epoch ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiLockState {
    pub acquired: bool,
    pub holder: String,
    pub locked_until_ms: i64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Handler<AcquireAiLock> for DbExecutor {
    type Result = Result<AiLockState, StorageError>;

    fn handle(&mut self, msg: AcquireAiLock, _: &mut Self::Context) -> Self::Result {
        use ai_locks::dsl as l;
        let now = now_ms();
        let until = now.saturating_add(msg.ttl_ms.max(0));
        // One conditional upsert decides atomically, even with several instances on one
        // database: the row is only overwritten by its holder or once it has expired.
        let (holder, locked_until_ms) = self.run("acquiring the AI lock", |conn| {
            with_backend!(conn, c => c.transaction(|tx| {
                let upsert = diesel::insert_into(l::ai_locks)
                    .values((
                        l::session_slug.eq(&msg.session_slug),
                        l::holder.eq(&msg.holder),
                        l::locked_until_ms.eq(until),
                    ))
                    .on_conflict(l::session_slug)
                    .do_update()
                    .set((
                        l::holder.eq(excluded(l::holder)),
                        l::locked_until_ms.eq(excluded(l::locked_until_ms)),
                    ));
                // `ON CONFLICT … DO UPDATE … WHERE`: the upsert's own filter, not QueryDsl's.
                diesel::query_dsl::methods::FilterDsl::filter(
                    upsert,
                    l::holder.eq(excluded(l::holder)).or(l::locked_until_ms.le(now)),
                )
                .execute(tx)?;
                l::ai_locks
                    .filter(l::session_slug.eq(&msg.session_slug))
                    .select((l::holder, l::locked_until_ms))
                    .get_result::<(String, i64)>(tx)
            }))
        })?;
        Ok(AiLockState {
            acquired: holder == msg.holder,
            holder,
            locked_until_ms,
        })
    }
}

impl Handler<ReleaseAiLock> for DbExecutor {
    type Result = Result<bool, StorageError>;

    fn handle(&mut self, msg: ReleaseAiLock, _: &mut Self::Context) -> Self::Result {
        use ai_locks::dsl as l;
        let deleted = self.run("releasing the AI lock", |conn| {
            with_backend!(conn, c => diesel::delete(
                l::ai_locks
                    .filter(l::session_slug.eq(&msg.session_slug))
                    .filter(l::holder.eq(&msg.holder)),
            )
            .execute(c))
        })?;
        Ok(deleted > 0)
    }
}
