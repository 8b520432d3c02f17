//! Revoked stream keys (docs/PROTOCOL.md#stream-keys), kept in `revoked_stream_keys` so that a
//! key revoked by a stop stays refused after a restart and on every instance sharing the
//! database. Rows whose key has expired are deleted as new ones arrive: such keys are refused
//! by their expiry anyway.

use std::time::{SystemTime, UNIX_EPOCH};

use ::actors::persistence::{IsStreamKeyRevoked, RevokeStreamKeys, StorageError};
use actix::prelude::*;
use diesel::prelude::*;

use super::connection::DbConnection;
use super::executor::{with_backend, DbExecutor};
use super::schema::revoked_stream_keys;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Handler<RevokeStreamKeys> for DbExecutor {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: RevokeStreamKeys, _: &mut Self::Context) -> Self::Result {
        use revoked_stream_keys::dsl as r;
        let rows: Vec<_> = msg
            .0
            .iter()
            .map(|key| {
                (
                    r::nonce.eq(&key.nonce),
                    r::session_slug.eq(&key.session_slug),
                    // Expiries are ours (minted from the clock plus a bounded TTL).
                    r::expires_at.eq(i64::try_from(key.expires_at).unwrap_or(i64::MAX)),
                )
            })
            .collect();
        let now = now_unix();
        self.run("revoking stream keys", |conn| {
            with_backend!(conn, c => c.transaction(|tx| {
                diesel::delete(r::revoked_stream_keys.filter(r::expires_at.le(now))).execute(tx)?;
                diesel::insert_into(r::revoked_stream_keys)
                    .values(&rows)
                    .on_conflict(r::nonce)
                    .do_nothing()
                    .execute(tx)
            }))
        })
        .map(drop)
    }
}

impl Handler<IsStreamKeyRevoked> for DbExecutor {
    type Result = Result<bool, StorageError>;

    fn handle(&mut self, msg: IsStreamKeyRevoked, _: &mut Self::Context) -> Self::Result {
        use revoked_stream_keys::dsl as r;
        self.run("checking a stream key", |conn| {
            with_backend!(conn, c => r::revoked_stream_keys
                .filter(r::nonce.eq(&msg.nonce))
                .count()
                .get_result::<i64>(c))
        })
        .map(|count| count > 0)
    }
}
