//! What instances say to each other over Redis (docs/ARCHITECTURE.md#cluster-mode): the bus
//! envelope around a client frame, and control messages. Another instance is a peer like any
//! other: everything read is size-checked and range-checked, and refused with a reason.

use std::sync::Arc;

use ::actors::messages::cluster::{BusFrame, BusKind};
use ::actors::wire::MAX_SEQ;
use bytestring::ByteString;

/// The largest envelope read from Redis: a client frame is a few KB.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
const MAX_ID: usize = 256;

#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    v: u8,
    /// The publishing instance: an instance ignores its own messages.
    #[serde(borrow)]
    src: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    #[serde(borrow, default)]
    utterance_id: std::borrow::Cow<'a, str>,
    /// The client frame, exactly as the owner's clients got it.
    #[serde(borrow)]
    frame: std::borrow::Cow<'a, str>,
}

/// The bus message for `frame`.
pub fn encode(src: &str, frame: &BusFrame) -> String {
    serde_json::to_string(&Envelope {
        v: 1,
        src: src.into(),
        kind: frame.kind.as_str().into(),
        seq: frame.seq,
        utterance_id: (&*frame.utterance_id).into(),
        frame: (&*frame.frame).into(),
    })
    .unwrap_or_default()
}

/// A bus message read back: who sent it, and the frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub src: String,
    pub frame: BusFrame,
}

/// Checks what serde cannot: sizes, the kind, `seq` on finals only and in range.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(format!(
            "a bus message of {} bytes (at most {MAX_ENVELOPE_BYTES})",
            bytes.len()
        ));
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a bus message: {e}"))?;
    if envelope.v != 1 {
        return Err(format!(
            "bus message version {} (this instance reads 1)",
            envelope.v
        ));
    }
    let kind = match envelope.kind.as_ref() {
        "final" => BusKind::Final,
        "partial" => BusKind::Partial,
        "status" => BusKind::Status,
        other => return Err(format!("unknown bus message kind {:?}", truncate(other))),
    };
    match (kind, envelope.seq) {
        (BusKind::Final, Some(seq)) if (1..=MAX_SEQ).contains(&seq) => {}
        (BusKind::Final, _) => return Err(format!("a final needs seq from 1 to {MAX_SEQ}")),
        (_, Some(_)) => return Err("only finals carry seq".into()),
        (_, None) => {}
    }
    if envelope.src.len() > MAX_ID || envelope.utterance_id.len() > MAX_ID {
        return Err(format!("src or utteranceId longer than {MAX_ID} bytes"));
    }
    Ok(Decoded {
        src: envelope.src.into_owned(),
        frame: BusFrame {
            kind,
            seq: envelope.seq,
            utterance_id: Arc::from(envelope.utterance_id.as_ref()),
            frame: ByteString::from(envelope.frame.into_owned()),
        },
    })
}

/// A message on the control channel.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// `src` took the lease of `slug` with `token` (written by the take script).
    LeaseTaken {
        slug: String,
        token: String,
        src: String,
    },
    /// A stop of `slug` was asked on `src`.
    Stop { slug: String, src: String },
}

pub fn decode_control(bytes: &[u8]) -> Result<Control, String> {
    if bytes.len() > 4096 {
        return Err(format!("a control message of {} bytes", bytes.len()));
    }
    let control: Control =
        serde_json::from_slice(bytes).map_err(|e| format!("not a control message: {e}"))?;
    let (Control::LeaseTaken { slug, src, .. } | Control::Stop { slug, src }) = &control;
    ::actors::registry::validate_slug(slug).map_err(|e| e.to_string())?;
    if src.len() > MAX_ID {
        return Err(format!("src longer than {MAX_ID} bytes"));
    }
    Ok(control)
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_frame(seq: i64) -> BusFrame {
        BusFrame {
            kind: BusKind::Final,
            seq: Some(seq),
            utterance_id: "p:1".into(),
            frame: r#"{"type":"transcript","seq":3}"#.into(),
        }
    }

    #[test]
    fn a_frame_survives_the_bus_with_its_sender() {
        let encoded = encode("i-1", &final_frame(3));
        assert_eq!(
            decode(encoded.as_bytes()),
            Ok(Decoded {
                src: "i-1".into(),
                frame: final_frame(3)
            })
        );
    }

    #[test]
    fn what_another_instance_must_not_send_is_refused_with_a_reason() {
        let bad = [
            (
                r#"{"v":1,"src":"a","kind":"final","frame":"x"}"#,
                "needs seq",
            ),
            (
                r#"{"v":1,"src":"a","kind":"final","seq":0,"frame":"x"}"#,
                "needs seq",
            ),
            (
                r#"{"v":1,"src":"a","kind":"final","seq":9007199254740992,"frame":"x"}"#,
                "needs seq",
            ),
            (
                r#"{"v":1,"src":"a","kind":"partial","seq":4,"frame":"x"}"#,
                "only finals",
            ),
            (
                r#"{"v":1,"src":"a","kind":"shout","frame":"x"}"#,
                "unknown bus message kind",
            ),
            (
                r#"{"v":2,"src":"a","kind":"status","frame":"x"}"#,
                "version 2",
            ),
            (r#"[1,2]"#, "not a bus message"),
        ];
        for (bytes, why) in bad {
            let error = decode(bytes.as_bytes()).expect_err(bytes);
            assert!(error.contains(why), "{bytes}: {error}");
        }
        let huge = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn control_messages_name_a_valid_session() {
        let taken = r#"{"kind":"lease_taken","slug":"m-1","token":"i:4","src":"i"}"#;
        assert_eq!(
            decode_control(taken.as_bytes()),
            Ok(Control::LeaseTaken {
                slug: "m-1".into(),
                token: "i:4".into(),
                src: "i".into()
            })
        );
        let stop = serde_json::to_string(&Control::Stop {
            slug: "m-1".into(),
            src: "j".into(),
        })
        .unwrap();
        assert!(decode_control(stop.as_bytes()).is_ok());
        assert!(decode_control(br#"{"kind":"stop","slug":"../x","src":"j"}"#).is_err());
        assert!(decode_control(br#"{"kind":"reboot"}"#).is_err());
    }
}

#[cfg(test)]
mod properties {
    //! Whatever another instance (or anything else that can write to Redis) publishes.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_are_refused_or_read_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = decode_control(&bytes);
        }

        #[test]
        fn every_frame_an_owner_publishes_reads_back_the_same(
            seq in 1i64..=MAX_SEQ,
            utterance in "[a-z0-9:_]{0,40}",
            text in "\\PC{0,200}",
            kind in 0u8..3,
        ) {
            let kind = [BusKind::Final, BusKind::Partial, BusKind::Status][kind as usize];
            let frame = BusFrame {
                kind,
                seq: (kind == BusKind::Final).then_some(seq),
                utterance_id: utterance.as_str().into(),
                frame: text.into(),
            };
            let decoded = decode(encode("instance", &frame).as_bytes()).expect("its own encoding");
            prop_assert_eq!(decoded.frame, frame);
        }
    }
}
