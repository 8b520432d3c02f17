//! Storage (diesel): finals, session states and AI locks in SQLite or PostgreSQL.
//!
//! - [`connection`]: `DATABASE_URL` → [`DbConnection`] (PostgreSQL or SQLite), migrations.
//! - [`executor`]: [`DbExecutor`], the synchronous actor that runs every query.
//! - [`batcher`]: [`TranscriptBatcher`], the async actor that groups finals into batches and
//!   retries through database outages.
//! - [`spill`]: [`SpillFile`], where finals wait on disk beyond the batcher's memory bound.
//! - [`instance_lock`]: one instance per PostgreSQL database (an advisory lock held while it runs).
//! - [`sharing`]: whether the instances of a cluster share the database.
//! - [`high_water`]: each session's highest numbered `seq` on local disk, so numbering never
//!   reuses one (finals still queued, the database down at a session's start).
//! - [`ai_lock`]: the per-meeting AI coordinator lock (`AcquireAiLock`, `ReleaseAiLock`).
//! - [`stream_keys`]: revoked stream keys (`RevokeStreamKeys`, `IsStreamKeyRevoked`).
//! - [`start_storage`] wires both and returns the [`Storage`](actors::persistence::Storage)
//!   recipients the actor tree uses.

pub mod ai_lock;
pub mod batcher;
pub mod connection;
pub mod error;
pub mod executor;
pub mod high_water;
pub mod instance_lock;
pub mod metrics;
pub mod models;
pub mod redact;
pub mod schema;
pub mod sharing;
pub mod spill;
mod start;
pub mod stream_keys;

pub use ai_lock::{AcquireAiLock, AiLockState, ReleaseAiLock};
pub use batcher::{BatcherConfig, Flush, SpillAll, TranscriptBatcher};
pub use connection::{establish, run_migrations, DatabaseTarget, DbConnection};
pub use error::DbError;
pub use executor::{DbExecutor, Ping, WriteFinals};
pub use metrics::{StorageMetrics, StorageMetricsSnapshot};
pub use redact::redact_url;
pub use sharing::Sharing;
pub use spill::{default_spill_dir, SpillFile, DEFAULT_SPILL_MAX_BYTES};
pub use start::{start_storage, start_storage_with, StorageHandles};

#[cfg(test)]
mod tests;
