//! Errors of the storage layer. Every message is already free of credentials: URLs are shown
//! redacted and driver messages are scrubbed (see [`super::redact`]).

use std::path::PathBuf;

use ::actors::persistence::StorageError;

/// Why storage could not be set up (connection, configuration, migrations).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "DATABASE_URL {url:?} is not supported: use postgres://…, postgresql://…, sqlite://PATH, \
         sqlite:PATH or a plain file path"
    )]
    UnsupportedUrl { url: String },

    #[error("cannot create the directory {path:?} for the SQLite database: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("cannot connect to {backend} at {target}: {message}")]
    Connect {
        backend: &'static str,
        target: String,
        message: String,
    },

    #[error("cannot configure the SQLite connection to {target}: {message}")]
    Configure { target: String, message: String },

    #[error("database migrations failed on {target}: {message}")]
    Migration { target: String, message: String },

    #[error("spill file {path:?}: {message}")]
    Spill { path: PathBuf, message: String },

    #[error("{}", another_instance(target, *sharing))]
    AnotherInstance {
        target: String,
        sharing: super::sharing::Sharing,
    },
}

impl From<DbError> for StorageError {
    fn from(error: DbError) -> Self {
        StorageError(error.to_string())
    }
}

fn another_instance(target: &str, sharing: super::sharing::Sharing) -> String {
    match sharing {
        super::sharing::Sharing::Alone => format!(
            "another realtime-core instance is running on {target}: two instances on one database \
             would number the same sessions twice; give each instance its own database, or run \
             them as a cluster (REDIS_URL on every instance)"
        ),
        super::sharing::Sharing::Cluster => format!(
            "a realtime-core instance without REDIS_URL is running on {target}: it would number \
             the cluster's sessions on its own; give it REDIS_URL too, or this instance another \
             database"
        ),
    }
}
