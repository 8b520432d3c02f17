//! The cluster's directory of sessions (docs/ARCHITECTURE.md#cluster-mode): one Redis hash,
//! slug → the owner's newest snapshot, so `GET /api/sessions` on any instance lists every
//! live session wherever it is ingested. An entry lasts one lease after its owner last
//! renewed it: a dead owner's sessions drop out by themselves. Pure: encoding and judging.

use serde_json::Value;

/// The hash's key.
pub const KEY: &str = "rc:sessions";
/// The largest entry read back: a snapshot is a few hundred bytes.
const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// A session as its owner last announced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub slug: String,
    /// The owning instance.
    pub owner: String,
    pub snapshot: Value,
}

/// The hash field's value for `snapshot`, valid until `until_ms` (epoch ms).
pub fn encode(owner: &str, until_ms: i64, snapshot: &Value) -> String {
    serde_json::json!({ "owner": owner, "until": until_ms, "snapshot": snapshot }).to_string()
}

/// What a field says, judged at `now_ms`: `Ok(None)` once it expired (its owner stopped
/// renewing), `Err` for anything no instance writes.
pub fn decode(slug: &str, bytes: &[u8], now_ms: i64) -> Result<Option<Entry>, String> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(format!("a directory entry of {} bytes", bytes.len()));
    }
    ::actors::registry::validate_slug(slug).map_err(|e| e.to_string())?;
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a directory entry: {e}"))?;
    let (Some(owner), Some(until), Some(snapshot)) = (
        value["owner"].as_str(),
        value["until"].as_i64(),
        value.get("snapshot"),
    ) else {
        return Err("a directory entry needs owner, until and snapshot".into());
    };
    if snapshot["sessionSlug"].as_str() != Some(slug) {
        return Err("a directory entry for another session".into());
    }
    if snapshot.get("rtmpUrl").is_some() {
        // Never written: a publish URL is a credential and stays with the owner.
        return Err("a directory entry with a publish URL".into());
    }
    if until <= now_ms {
        return Ok(None);
    }
    Ok(Some(Entry {
        slug: slug.to_owned(),
        owner: owner.to_owned(),
        snapshot: snapshot.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(slug: &str) -> Value {
        serde_json::json!({ "sessionSlug": slug, "state": "live" })
    }

    #[test]
    fn an_entry_lasts_until_its_owner_stops_renewing_it() {
        let field = encode("i-1", 5_000, &snapshot("m"));
        let entry = decode("m", field.as_bytes(), 4_999).unwrap().unwrap();
        assert_eq!(entry.owner, "i-1");
        assert_eq!(entry.snapshot, snapshot("m"));
        assert_eq!(decode("m", field.as_bytes(), 5_000), Ok(None));
    }

    #[test]
    fn entries_no_instance_writes_are_refused() {
        let other = encode("i", 9, &snapshot("n"));
        assert!(decode("m", other.as_bytes(), 0).is_err());
        let with_url = encode(
            "i",
            9,
            &serde_json::json!({ "sessionSlug": "m", "rtmpUrl": "rtmp://x/live/k" }),
        );
        assert!(decode("m", with_url.as_bytes(), 0).is_err());
        assert!(decode("m", b"{}", 0).is_err());
        assert!(decode("../m", encode("i", 9, &snapshot("../m")).as_bytes(), 0).is_err());
        assert!(decode("m", &vec![b' '; MAX_ENTRY_BYTES + 1], 0).is_err());
    }
}
