//! The owner's provider session as kept in Redis (`rc:provider:{slug}`): what another
//! instance reads when it takes the session over (docs/ARCHITECTURE.md#cluster-mode,
//! provider continuity). Written by another instance, so decoded like any peer's input:
//! bounded, range-checked, and never logged (the URL carries the session's token).

use ::actors::messages::ProviderResume;
use serde::{Deserialize, Serialize};

/// Longest id and URL accepted (Gladia's are a UUID and a URL of about 80 characters).
const MAX_ID: usize = 256;
const MAX_URL: usize = 4096;
/// A day of 16 kHz mono S16LE: no provider session is longer.
const MAX_ACKED_BYTES: u64 = 86_400 * 32_000;

#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    url: String,
    acked: u64,
}

pub fn encode(resume: &ProviderResume) -> String {
    serde_json::to_string(&Record {
        id: resume.provider_session_id.clone(),
        url: resume.url.clone(),
        acked: resume.acked_bytes,
    })
    .unwrap_or_default()
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a provider record")]
    Malformed,
    #[error("provider record field {0} out of range")]
    OutOfRange(&'static str),
}

pub fn decode(raw: &[u8]) -> Result<ProviderResume, RecordError> {
    if raw.len() > MAX_ID + MAX_URL + 64 {
        return Err(RecordError::OutOfRange("length"));
    }
    let record: Record = serde_json::from_slice(raw).map_err(|_| RecordError::Malformed)?;
    if record.id.is_empty() || record.id.len() > MAX_ID || record.id.chars().any(|c| c.is_control())
    {
        return Err(RecordError::OutOfRange("id"));
    }
    let scheme_ok = record.url.starts_with("wss://") || record.url.starts_with("ws://");
    if !scheme_ok || record.url.len() > MAX_URL || record.url.chars().any(char::is_whitespace) {
        return Err(RecordError::OutOfRange("url"));
    }
    if record.acked > MAX_ACKED_BYTES {
        return Err(RecordError::OutOfRange("acked"));
    }
    Ok(ProviderResume {
        provider_session_id: record.id,
        url: record.url,
        acked_bytes: record.acked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resume() -> ProviderResume {
        ProviderResume {
            provider_session_id: "45463597-20b7-4af7-b3b3-f5fb778203ab".into(),
            url: "wss://api.gladia.io/v2/live?token=4a39145c".into(),
            acked_bytes: 3_200_000,
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        assert_eq!(decode(encode(&resume()).as_bytes()), Ok(resume()));
    }

    #[test]
    fn records_out_of_range_are_refused() {
        let with = |id: &str, url: &str, acked: u64| {
            decode(
                serde_json::json!({"id": id, "url": url, "acked": acked})
                    .to_string()
                    .as_bytes(),
            )
        };
        assert_eq!(with("", "wss://x", 0), Err(RecordError::OutOfRange("id")));
        assert_eq!(
            with("a\nb", "wss://x", 0),
            Err(RecordError::OutOfRange("id"))
        );
        assert_eq!(
            with("a", "https://x", 0),
            Err(RecordError::OutOfRange("url"))
        );
        assert_eq!(
            with("a", "wss://x y", 0),
            Err(RecordError::OutOfRange("url"))
        );
        assert_eq!(
            with("a", "wss://x", MAX_ACKED_BYTES + 1),
            Err(RecordError::OutOfRange("acked"))
        );
        assert_eq!(decode(b"{\"id\":1}"), Err(RecordError::Malformed));
        assert_eq!(
            decode(&vec![b' '; 10_000]),
            Err(RecordError::OutOfRange("length"))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused_without_panic(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&raw);
        }
    }
}
