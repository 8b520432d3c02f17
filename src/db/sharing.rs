//! Who else may use the database: read by the instance lock (`super::instance_lock`) and
//! named in its refusal (`super::error`).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Nobody: this instance numbers alone.
    #[default]
    Alone,
    /// The other instances of its cluster (`REDIS_URL`), which number with it through Redis.
    Cluster,
}
