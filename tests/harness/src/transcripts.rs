//! The checks every transcript stream a client receives must pass.

use serde_json::Value;

/// Checks every transcript message against docs/PROTOCOL.md#transcript-messages and the delivery order of §4.4; returns
/// the finals' utterance ids in order. Every final must have had a partial before it.
pub fn assert_transcript_stream(messages: &[Value], slug: &str) -> Vec<String> {
    assert_transcript_stream_with(messages, slug, true)
}

/// [`assert_transcript_stream`]; with `partial_before_each_final` false a final may come
/// without a partial (partials are best-effort, docs/PROTOCOL.md#resume-and-delivery-guarantees: a short utterance may have none).
pub fn assert_transcript_stream_with(
    messages: &[Value],
    slug: &str,
    partial_before_each_final: bool,
) -> Vec<String> {
    let mut finals = Vec::new();
    let mut finalized = std::collections::HashSet::new();
    let mut partial_seen = std::collections::HashSet::new();
    for m in messages.iter().filter(|m| m["type"] == "transcript") {
        assert_eq!(m["sessionSlug"], slug);
        for field in ["utteranceId", "text", "speaker", "speakerId"] {
            assert!(m[field].is_string(), "{field} missing in {m}");
        }
        for field in ["ts", "startedAt", "endedAt"] {
            assert!(m[field].is_i64(), "{field} missing in {m}");
        }
        let text = m["text"].as_str().unwrap();
        assert_eq!(text, text.trim_start(), "leading space not trimmed: {m}");
        let id = m["utteranceId"].as_str().unwrap().to_owned();
        assert!(
            !finalized.contains(&id),
            "a message after the final of {id}: {m}"
        );
        if m["isFinal"] == true {
            assert_eq!(m["transcriptType"], "final");
            assert_eq!(
                m["seq"].as_i64(),
                Some(finals.len() as i64 + 1),
                "seq gap or reorder: {m}"
            );
            assert!(
                !partial_before_each_final || partial_seen.contains(&id),
                "final {id} came without any partial before it"
            );
            finalized.insert(id.clone());
            finals.push(id);
        } else {
            assert_eq!(m["isFinal"], false);
            assert_eq!(m["transcriptType"], "partial");
            assert!(m.get("seq").is_none(), "a partial carries seq: {m}");
            partial_seen.insert(id);
        }
    }
    finals
}
