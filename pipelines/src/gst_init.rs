//! One-time GStreamer initialisation and a check that every element the decode
//! pipeline needs is installed, so a missing Debian package is reported at startup
//! with its name instead of as an obscure failure on the first RTMP publish.

use std::sync::OnceLock;

use gstreamer as gst;

use crate::decode_error::DecodeError;

/// Elements of the decode pipeline and the Debian package that ships each.
pub(crate) const REQUIRED_ELEMENTS: [(&str, &str); 6] = [
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("aacparse", "gstreamer1.0-plugins-good"),
    ("avdec_aac", "gstreamer1.0-libav"),
    ("audioconvert", "gstreamer1.0-plugins-base"),
    ("audioresample", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
];

/// Initialises GStreamer and checks the required elements. Idempotent and
/// thread-safe: the first call does the work, later calls return its result.
pub fn init() -> Result<(), DecodeError> {
    static RESULT: OnceLock<Result<(), DecodeError>> = OnceLock::new();
    RESULT.get_or_init(init_once).clone()
}

fn init_once() -> Result<(), DecodeError> {
    gst::init().map_err(|err| DecodeError::Init(err.to_string()))?;
    for (element, package) in REQUIRED_ELEMENTS {
        if gst::ElementFactory::find(element).is_none() {
            return Err(DecodeError::MissingElement { element, package });
        }
    }
    tracing::debug!(version = %gst::version_string(), "GStreamer initialised");
    Ok(())
}
