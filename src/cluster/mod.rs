//! Cluster mode (`REDIS_URL`, docs/ARCHITECTURE.md#cluster-mode): several instances share one
//! PostgreSQL database and one Redis, any of them accepts any publish and any client.
//!
//! - [`actor`]: `ClusterActor`, the one Redis client: leases, commits, the log, publishing.
//! - [`subscriber`]: the bus subscriber, routing other instances' frames to local sessions.
//! - [`directory`]: every live session's owner snapshot, for listings on any instance.
//! - [`membership`]: which local sessions follow which slug, which leases are held here.
//! - [`envelope`]: what instances say to each other, checked like any peer's input.
//! - [`provider_record`]: the owner's provider session, for the instance that takes over.
//! - [`keys`] and [`scripts`]: the Redis layout and the atomic steps on it.

pub mod actor;
pub mod directory;
pub mod envelope;
pub mod keys;
pub mod membership;
pub mod provider_record;
pub mod scripts;
pub mod subscriber;

pub use actor::{ClusterActor, ClusterConfig, ListDirectory};
