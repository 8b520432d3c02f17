//! Reference pipelines for the benchmarks (not the tests: the root crate's tests include
//! `tests/support` and do not depend on gstreamer): a `gst-launch` description with an `appsrc` named
//! `src` (fed raw AAC frames) and an `appsink` named `sink`.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use pipelines::decode_pipeline::aac_input_caps;
use pipelines::AudioSpecificConfig;

/// Parses `description`, gives its `src` the caps of `config`'s raw AAC, and returns the
/// pipeline (still in Null) with its source and sink.
pub fn launch(
    description: &str,
    config: &AudioSpecificConfig,
) -> (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink) {
    let pipeline = gst::parse::launch(description)
        .expect("parse the reference pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .expect("an appsrc named src");
    src.set_caps(Some(&aac_input_caps(config)));
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("an appsink named sink");
    (pipeline, src, sink)
}
