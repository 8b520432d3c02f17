//! What a caller may do: which sessions (from its token's `sessions` claim) and which actions
//! (from its `role` claim). Decided once per request, or once at the WebSocket upgrade, from
//! the token (docs/PROTOCOL.md#security, #roles); the HTTP handlers and the `ClientActor` (on
//! every later `subscribe`/`start`/`stop`) enforce it.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionAccess {
    /// No auth configured (loopback only) or a service token with `"sessions": "*"`.
    Any,
    /// The slugs listed in the token's `sessions` claim.
    Only(HashSet<String>),
}

impl SessionAccess {
    pub fn allows(&self, session_slug: &str) -> bool {
        match self {
            SessionAccess::Any => true,
            SessionAccess::Only(slugs) => slugs.contains(session_slug),
        }
    }
}

/// The token's `role` claim. Each role may do what the one before it may, and more; a token
/// without `role` is a viewer's, so a token minted before roles existed grants the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A meeting participant's browser: watch and read.
    Viewer,
    /// Whoever runs the meeting: also start and stop it, see its publish URL, hold the AI lock.
    Host,
    /// Another backend: everything, including reports that shape the transcript for everyone
    /// (active speaker) and relayed transcripts.
    Service,
}

/// What a request or command does, in the classes the role matrix is written in
/// (README "Roles", docs/PROTOCOL.md#roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Subscribe, resume, list sessions, read a session and its saved transcripts.
    Watch,
    /// Start and stop transcription, see the publish URL (`rtmpUrl`), take the AI lock.
    Control,
    /// Active-speaker reports and relayed transcripts: claims every viewer sees as fact.
    Report,
}

impl Role {
    /// The claim's values, as tokens carry them.
    pub const NAMES: [(Role, &'static str); 3] = [
        (Role::Viewer, "viewer"),
        (Role::Host, "host"),
        (Role::Service, "service"),
    ];

    pub fn name(self) -> &'static str {
        Role::NAMES
            .iter()
            .find(|(role, _)| *role == self)
            .map_or("viewer", |(_, name)| name)
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(role, _)| *role)
    }

    /// The least role that may do `action`.
    pub fn least_for(action: Action) -> Role {
        match action {
            Action::Watch => Role::Viewer,
            Action::Control => Role::Host,
            Action::Report => Role::Service,
        }
    }

    pub fn may(self, action: Action) -> bool {
        self >= Role::least_for(action)
    }
}

impl Action {
    /// How a refusal names what was attempted.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Watch => "watching a session",
            Action::Control => {
                "starting or stopping transcription, the publish URL and the AI lock"
            }
            Action::Report => "active-speaker reports and relayed transcripts",
        }
    }
}

/// Which sessions and which actions: what a WebSocket client keeps from its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub sessions: SessionAccess,
    pub role: Role,
}

impl Grant {
    /// No auth configured: loopback development, everything allowed.
    pub fn everything() -> Grant {
        Grant {
            sessions: SessionAccess::Any,
            role: Role::Service,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_the_one_below_may() {
        let table = [
            (Role::Viewer, [true, false, false]),
            (Role::Host, [true, true, false]),
            (Role::Service, [true, true, true]),
        ];
        for (role, expected) in table {
            let got = [Action::Watch, Action::Control, Action::Report].map(|a| role.may(a));
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn role_names_round_trip_and_unknown_names_are_none() {
        for (role, name) in Role::NAMES {
            assert_eq!(Role::from_name(name), Some(role));
            assert_eq!(role.name(), name);
        }
        assert_eq!(Role::from_name("admin"), None);
        assert_eq!(Role::from_name("Viewer"), None);
    }
}
