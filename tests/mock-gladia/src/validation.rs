//! Validation of the `POST /v2/live` body against Gladia's `StreamingRequest` schema (reference
//! §2.2). Gladia rejects misplaced fields (a `region` in the body gave 400 in the wild), so the
//! mock is strict: unknown keys, wrong types and out-of-range values all become
//! `validation_errors` entries that name the offending field by its dotted path.
//!
//! `null` counts as "absent", as the optional-field validators of Gladia's NestJS stack do.

use serde_json::{Map, Value};

/// The `receive_*` flags shared by `messages_config` and `callback_config`.
pub const RECEIVE_FLAGS: [&str; 9] = [
    "receive_partial_transcripts",
    "receive_final_transcripts",
    "receive_speech_events",
    "receive_pre_processing_events",
    "receive_realtime_processing_events",
    "receive_post_processing_events",
    "receive_acknowledgments",
    "receive_errors",
    "receive_lifecycle_events",
];

/// Checks `body` and returns every problem found (empty = valid).
pub fn validate_streaming_request(body: &Value) -> Vec<String> {
    let mut v = Validator::default();
    let Some(obj) = body.as_object() else {
        v.err("", "must be a JSON object");
        return v.errors;
    };
    v.keys(
        obj,
        "",
        &[
            "encoding",
            "bit_depth",
            "sample_rate",
            "channels",
            "custom_metadata",
            "model",
            "endpointing",
            "maximum_duration_without_endpointing",
            "language_config",
            "pre_processing",
            "realtime_processing",
            "post_processing",
            "messages_config",
            "callback",
            "callback_config",
        ],
    );
    v.string_enum(obj, "", "encoding", &["wav/pcm", "wav/alaw", "wav/ulaw"]);
    v.number_enum(obj, "", "bit_depth", &[8.0, 16.0, 24.0, 32.0]);
    v.number_enum(
        obj,
        "",
        "sample_rate",
        &[8000.0, 16000.0, 32000.0, 44100.0, 48000.0],
    );
    v.integer_range(obj, "", "channels", 1, 8);
    if let Some(meta) = present(obj, "custom_metadata") {
        if !meta.is_object() {
            v.err("custom_metadata", "must be an object");
        } else if meta.to_string().chars().count() > 2000 {
            v.err(
                "custom_metadata",
                "must be at most 2000 characters when stringified",
            );
        }
    }
    v.string_enum(obj, "", "model", &["solaria-1"]);
    v.number_range(obj, "", "endpointing", 0.01, 10.0);
    v.number_range(obj, "", "maximum_duration_without_endpointing", 5.0, 60.0);

    if let Some(lc) = v.object(obj, "", "language_config") {
        v.keys(lc, "language_config", &["languages", "code_switching"]);
        v.language_codes(lc, "language_config", "languages");
        v.boolean(lc, "language_config", "code_switching");
    }
    if let Some(pre) = v.object(obj, "", "pre_processing") {
        v.keys(
            pre,
            "pre_processing",
            &["audio_enhancer", "speech_threshold"],
        );
        v.boolean(pre, "pre_processing", "audio_enhancer");
        v.number_range(pre, "pre_processing", "speech_threshold", 0.0, 1.0);
    }
    if let Some(rt) = v.object(obj, "", "realtime_processing") {
        v.realtime_processing(rt);
    }
    if let Some(post) = v.object(obj, "", "post_processing") {
        let p = "post_processing";
        v.keys(
            post,
            p,
            &["summarization", "summarization_config", "chapterization"],
        );
        v.boolean(post, p, "summarization");
        v.boolean(post, p, "chapterization");
        if let Some(cfg) = v.object(post, p, "summarization_config") {
            let p = "post_processing.summarization_config";
            v.keys(cfg, p, &["type"]);
            v.string_enum(cfg, p, "type", &["general", "bullet_points", "concise"]);
        }
    }
    if let Some(mc) = v.object(obj, "", "messages_config") {
        v.keys(mc, "messages_config", &RECEIVE_FLAGS);
        for flag in RECEIVE_FLAGS {
            v.boolean(mc, "messages_config", flag);
        }
    }
    v.boolean(obj, "", "callback");
    if let Some(cb) = v.object(obj, "", "callback_config") {
        let p = "callback_config";
        let mut allowed = vec!["url"];
        allowed.extend(RECEIVE_FLAGS);
        v.keys(cb, p, &allowed);
        if let Some(url) = present(cb, "url") {
            match url.as_str() {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {}
                _ => v.err("callback_config.url", "must be a URL address"),
            }
        }
        for flag in RECEIVE_FLAGS {
            v.boolean(cb, p, flag);
        }
    }
    v.errors
}

fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<String>,
}

impl Validator {
    fn err(&mut self, field: &str, problem: &str) {
        if field.is_empty() {
            self.errors.push(format!("Body {problem}"));
        } else {
            self.errors.push(format!("Field \"{field}\" {problem}"));
        }
    }

    fn keys(&mut self, obj: &Map<String, Value>, prefix: &str, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.err(&join(prefix, key), "should not exist");
            }
        }
    }

    fn object<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Option<&'a Map<String, Value>> {
        let value = present(obj, key)?;
        let found = value.as_object();
        if found.is_none() {
            self.err(&join(prefix, key), "must be an object");
        }
        found
    }

    fn boolean(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) {
        if present(obj, key).is_some_and(|v| !v.is_boolean()) {
            self.err(&join(prefix, key), "must be a boolean value");
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) {
        if present(obj, key).is_some_and(|v| !v.is_string()) {
            self.err(&join(prefix, key), "must be a string");
        }
    }

    fn string_enum(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str, allowed: &[&str]) {
        let Some(value) = present(obj, key) else {
            return;
        };
        if !value.as_str().is_some_and(|s| allowed.contains(&s)) {
            self.err(
                &join(prefix, key),
                &format!(
                    "must be one of the following values: {}",
                    allowed.join(", ")
                ),
            );
        }
    }

    fn number_enum(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str, allowed: &[f64]) {
        let Some(value) = present(obj, key) else {
            return;
        };
        if !value.as_f64().is_some_and(|n| allowed.contains(&n)) {
            let list: Vec<String> = allowed.iter().map(|n| n.to_string()).collect();
            self.err(
                &join(prefix, key),
                &format!("must be one of the following values: {}", list.join(", ")),
            );
        }
    }

    fn number_range(
        &mut self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
        min: f64,
        max: f64,
    ) {
        let Some(value) = present(obj, key) else {
            return;
        };
        match value.as_f64() {
            None => self.err(&join(prefix, key), "must be a number"),
            Some(n) if !(min..=max).contains(&n) => self.err(
                &join(prefix, key),
                &format!("must be between {min} and {max}"),
            ),
            Some(_) => {}
        }
    }

    fn integer_range(
        &mut self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
        min: i64,
        max: i64,
    ) {
        let Some(value) = present(obj, key) else {
            return;
        };
        match value.as_i64() {
            None => self.err(&join(prefix, key), "must be an integer number"),
            Some(n) if !(min..=max).contains(&n) => self.err(
                &join(prefix, key),
                &format!("must be between {min} and {max}"),
            ),
            Some(_) => {}
        }
    }

    fn string_array(
        &mut self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
        min_items: usize,
    ) {
        let Some(value) = present(obj, key) else {
            return;
        };
        match value.as_array() {
            Some(items) if items.iter().all(Value::is_string) && items.len() >= min_items => {}
            Some(items) if items.len() < min_items => self.err(
                &join(prefix, key),
                &format!("must contain at least {min_items} elements"),
            ),
            _ => self.err(&join(prefix, key), "must be an array of strings"),
        }
    }

    /// Gladia checks codes against a 99-entry enum; the mock only checks their shape
    /// (2 or 3 lowercase ASCII letters), which catches "english" or "EN".
    fn language_codes(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) {
        let Some(value) = present(obj, key) else {
            return;
        };
        let Some(items) = value.as_array() else {
            self.err(&join(prefix, key), "must be an array");
            return;
        };
        for item in items {
            let ok = item.as_str().is_some_and(|s| {
                (2..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase())
            });
            if !ok {
                self.err(
                    &join(prefix, key),
                    &format!("contains an invalid language code: {item}"),
                );
            }
        }
    }

    fn realtime_processing(&mut self, rt: &Map<String, Value>) {
        let p = "realtime_processing";
        self.keys(
            rt,
            p,
            &[
                "custom_vocabulary",
                "custom_vocabulary_config",
                "custom_spelling",
                "custom_spelling_config",
                "translation",
                "translation_config",
                "named_entity_recognition",
                "sentiment_analysis",
                // Dropped from the current OAS but still sent by LiveKit and evidently
                // tolerated by the real API (docs/reference/gladia-live-v2.md §2.2).
                "words_accurate_timestamps",
            ],
        );
        for flag in [
            "custom_vocabulary",
            "custom_spelling",
            "translation",
            "named_entity_recognition",
            "sentiment_analysis",
            "words_accurate_timestamps",
        ] {
            self.boolean(rt, p, flag);
        }
        if let Some(cfg) = self.object(rt, p, "custom_vocabulary_config") {
            let p = "realtime_processing.custom_vocabulary_config";
            self.keys(cfg, p, &["vocabulary", "default_intensity"]);
            self.number_range(cfg, p, "default_intensity", 0.0, 1.0);
            match present(cfg, "vocabulary").map(Value::as_array) {
                None => self.err(&join(p, "vocabulary"), "should not be empty"),
                Some(None) => self.err(&join(p, "vocabulary"), "must be an array"),
                Some(Some(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let ip = format!("{p}.vocabulary.{i}");
                        match item {
                            Value::String(_) => {}
                            Value::Object(entry) => {
                                self.keys(
                                    entry,
                                    &ip,
                                    &["value", "intensity", "pronunciations", "language"],
                                );
                                if !present(entry, "value").is_some_and(Value::is_string) {
                                    self.err(&join(&ip, "value"), "must be a string");
                                }
                                self.number_range(entry, &ip, "intensity", 0.0, 1.0);
                                self.string_array(entry, &ip, "pronunciations", 0);
                                self.string(entry, &ip, "language");
                            }
                            _ => self.err(&ip, "must be a string or an object"),
                        }
                    }
                }
            }
        }
        if let Some(cfg) = self.object(rt, p, "custom_spelling_config") {
            let p = "realtime_processing.custom_spelling_config";
            self.keys(cfg, p, &["spelling_dictionary"]);
            match present(cfg, "spelling_dictionary").map(Value::as_object) {
                None => self.err(&join(p, "spelling_dictionary"), "should not be empty"),
                Some(None) => self.err(&join(p, "spelling_dictionary"), "must be an object"),
                Some(Some(dict)) => {
                    let dp = join(p, "spelling_dictionary");
                    for key in dict.keys() {
                        self.string_array(dict, &dp, key, 0);
                    }
                }
            }
        }
        if let Some(cfg) = self.object(rt, p, "translation_config") {
            let p = "realtime_processing.translation_config";
            self.keys(
                cfg,
                p,
                &[
                    "target_languages",
                    "model",
                    "match_original_utterances",
                    "lipsync",
                    "context_adaptation",
                    "context",
                    "informal",
                ],
            );
            if present(cfg, "target_languages").is_none() {
                self.err(&join(p, "target_languages"), "should not be empty");
            }
            self.string_array(cfg, p, "target_languages", 1);
            self.string_enum(cfg, p, "model", &["base", "enhanced"]);
            for flag in [
                "match_original_utterances",
                "lipsync",
                "context_adaptation",
                "informal",
            ] {
                self.boolean(cfg, p, flag);
            }
            self.string(cfg, p, "context");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_example_body_is_valid() {
        let body = json!({
          "encoding": "wav/pcm", "bit_depth": 16, "sample_rate": 16000, "channels": 1,
          "custom_metadata": {"user": "John Doe"},
          "model": "solaria-1", "endpointing": 0.05, "maximum_duration_without_endpointing": 5,
          "language_config": {"languages": [], "code_switching": false},
          "pre_processing": {"audio_enhancer": false, "speech_threshold": 0.6},
          "realtime_processing": {"custom_vocabulary": false, "custom_spelling": false, "translation": false,
                                  "named_entity_recognition": false, "sentiment_analysis": false,
                                  "words_accurate_timestamps": false},
          "post_processing": {"summarization": false, "summarization_config": {"type": "general"}, "chapterization": false},
          "messages_config": {"receive_partial_transcripts": false, "receive_final_transcripts": true,
            "receive_speech_events": true, "receive_pre_processing_events": true,
            "receive_realtime_processing_events": true, "receive_post_processing_events": true,
            "receive_acknowledgments": true, "receive_errors": true, "receive_lifecycle_events": false},
          "callback": false
        });
        assert_eq!(validate_streaming_request(&body), Vec::<String>::new());
        assert!(validate_streaming_request(&json!({})).is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let errors = validate_streaming_request(&json!({
            "region": "eu-west",
            "bit_depth": 12,
            "channels": 9,
            "encoding": 1,
            "custom_metadata": {"x": "a".repeat(2000)},
            "messages_config": {"receive_partials": true, "receive_final_transcripts": "yes"},
        }));
        for field in [
            "\"region\"",
            "\"bit_depth\"",
            "\"channels\"",
            "\"encoding\"",
            "\"custom_metadata\"",
            "\"messages_config.receive_partials\"",
            "\"messages_config.receive_final_transcripts\"",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(field)),
                "{field} missing from {errors:?}"
            );
        }
        assert_eq!(errors.len(), 7);
    }
}
