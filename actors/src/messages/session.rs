//! A session's state as clients, the HTTP API and the database see it, and the message a
//! supervisor sends when it retires.

use actix::prelude::*;

/// The session states of docs/PROTOCOL.md "Session states". The one mapping to their wire
/// names is [`SessionState::NAMES`]: the WebSocket `status` frames, the HTTP API (through
/// serde) and the `sessions.state` column all take the string from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    WaitingForEgress,
    Live,
    Reconnecting,
    Ended,
    /// The session cannot transcribe (the audio decoder failed for good, or the provider
    /// refused it); the detail says why.
    Error,
}

impl SessionState {
    /// Every state with its wire name.
    pub const NAMES: [(SessionState, &'static str); 5] = [
        (SessionState::WaitingForEgress, "waiting_for_egress"),
        (SessionState::Live, "live"),
        (SessionState::Reconnecting, "reconnecting"),
        (SessionState::Ended, "ended"),
        (SessionState::Error, "error"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(state, _)| *state == self)
            .map_or("error", |(_, name)| name)
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`SessionState::NAMES`] (e.g. a row written by a newer version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown session state {0:?}")]
pub struct UnknownSessionState(pub String);

impl std::str::FromStr for SessionState {
    type Err = UnknownSessionState;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(state, _)| *state)
            .ok_or_else(|| UnknownSessionState(name.to_owned()))
    }
}

impl serde::Serialize for SessionState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SessionState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Which supervisor a slug had: the registry numbers each one it starts, so a retirement that
/// arrives after the slug was opened again cannot remove the new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionInstance(pub u64);

/// Sent by a supervisor that has nothing left to do, to the registry.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SessionRetired {
    pub session_slug: String,
    pub instance: SessionInstance,
    /// Keys the session revoked: the registry keeps refusing them after the session is gone,
    /// without asking the database (docs/PROTOCOL.md#stream-keys).
    pub revoked_keys: Vec<crate::stream_keys::RevokedKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_one_name() {
        for (state, name) in SessionState::NAMES {
            assert_eq!(state.as_str(), name);
            assert_eq!(name.parse::<SessionState>(), Ok(state));
            let json = serde_json::to_string(&state).expect("serialise");
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<SessionState>(&json).ok(),
                Some(state)
            );
        }
        assert!("paused".parse::<SessionState>().is_err());
        assert!(serde_json::from_str::<SessionState>("\"LIVE\"").is_err());
    }
}
