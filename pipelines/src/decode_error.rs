//! Why the decode pipeline could not be set up or fed (its own file: `gst_init` reports
//! the same errors, and neither imports the other).

/// Failures to set up or feed the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("GStreamer initialisation failed: {0}")]
    Init(String),
    #[error("GStreamer element '{element}' is missing; install the Debian package {package}")]
    MissingElement {
        element: &'static str,
        package: &'static str,
    },
    #[error("cannot build the decode pipeline ({stage}): {message}")]
    Build {
        stage: &'static str,
        message: String,
    },
    #[error("cannot start the decode pipeline: {0}")]
    Start(String),
    #[error("decode pipeline no longer accepts frames (finished or failed)")]
    Stopped,
    #[error("pushing a frame into the decode pipeline failed: {0}")]
    Push(String),
}
