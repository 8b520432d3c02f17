//! `BroadcastActor`: numbers finals, attributes speakers, serialises each message once and
//! hands it to every client of the session without ever waiting on one (SPEC §4.3, §4.4).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;

use crate::client::{ClientId, Deliver};
use crate::events::{now_ms, TranscriptEvent};
use crate::outbound_frames::status_frame;
use crate::outbox::Outbound;
use crate::persistence::{FinalRecord, LoadLastSeq, SaveFinal, Storage};
use crate::wire::{to_json, TranscriptMessage};

/// How many utterance ids are remembered as finalized (duplicate finals are ignored).
const FINALIZED_MEMORY: usize = 4096;

#[derive(Message)]
#[rtype(result = "()")]
pub struct AddClient {
    pub id: ClientId,
    pub deliver: Recipient<Deliver>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveClient {
    pub id: ClientId,
}

/// A session state change, sent to every client as `{"type":"status"}`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BroadcastStatus {
    pub state: &'static str,
    pub detail: String,
}

enum Numbering {
    /// Waiting for the stored last `seq`; events wait too so numbering never restarts at 1.
    Loading {
        pending: Vec<TranscriptEvent>,
    },
    Ready {
        last_seq: i64,
    },
}

pub struct BroadcastActor {
    session_slug: Arc<str>,
    storage: Storage,
    numbering: Numbering,
    clients: HashMap<ClientId, Recipient<Deliver>>,
    finalized: HashSet<String>,
    finalized_order: VecDeque<String>,
    /// Partials dropped because a client's mailbox was full.
    pub dropped_partials: u64,
}

impl BroadcastActor {
    pub fn new(session_slug: &str, storage: Storage) -> Self {
        BroadcastActor {
            session_slug: session_slug.into(),
            storage,
            numbering: Numbering::Loading {
                pending: Vec::new(),
            },
            clients: HashMap::new(),
            finalized: HashSet::new(),
            finalized_order: VecDeque::new(),
            dropped_partials: 0,
        }
    }

    fn load_last_seq(&mut self, ctx: &mut Context<Self>) {
        let request = self.storage.load_last_seq.send(LoadLastSeq {
            session_slug: self.session_slug.to_string(),
        });
        request
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(Ok(last_seq)) => {
                    let pending = match std::mem::replace(&mut act.numbering, Numbering::Ready { last_seq }) {
                        Numbering::Loading { pending } => pending,
                        Numbering::Ready { .. } => Vec::new(),
                    };
                    for event in pending {
                        act.publish(event);
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(session = %act.session_slug, %error, "cannot read last seq; retrying");
                    ctx.run_later(std::time::Duration::from_secs(1), |act, ctx| act.load_last_seq(ctx));
                }
                Err(error) => {
                    tracing::warn!(session = %act.session_slug, %error, "storage unavailable; retrying");
                    ctx.run_later(std::time::Duration::from_secs(1), |act, ctx| act.load_last_seq(ctx));
                }
            })
            .spawn(ctx);
    }

    fn publish(&mut self, event: TranscriptEvent) {
        let last_seq = match &mut self.numbering {
            Numbering::Loading { pending } => {
                pending.push(event);
                return;
            }
            Numbering::Ready { last_seq } => last_seq,
        };
        if self.finalized.contains(&event.utterance_id) {
            // A partial after its final, or a repeated final: never shown, never renumbered.
            return;
        }
        let (speaker, speaker_id) = match &event.provider_speaker {
            Some(s) => (s.as_str(), s.as_str()),
            None => ("room", "room"),
        };
        let seq = if event.is_final {
            *last_seq += 1;
            Some(*last_seq)
        } else {
            None
        };
        let message = TranscriptMessage {
            kind: "transcript",
            session_slug: &self.session_slug,
            utterance_id: &event.utterance_id,
            text: &event.text,
            is_final: event.is_final,
            speaker,
            speaker_id,
            ts: now_ms(),
            transcript_type: if event.is_final { "final" } else { "partial" },
            seq,
            started_at: event.started_at_ms,
            ended_at: event.ended_at_ms,
            language: event.language.as_deref(),
        };
        let frame = ByteString::from(to_json(&message));
        let utterance_id: Arc<str> = event.utterance_id.as_str().into();
        if let Some(seq) = seq {
            self.storage.save_final.do_send(SaveFinal(FinalRecord {
                session_slug: self.session_slug.to_string(),
                seq,
                utterance_id: event.utterance_id.clone(),
                text: event.text.clone(),
                speaker: speaker.to_owned(),
                speaker_id: speaker_id.to_owned(),
                started_at_ms: event.started_at_ms,
                ended_at_ms: event.ended_at_ms,
                language: event.language.clone(),
            }));
            self.remember_final(event.utterance_id);
            self.fan_out(Outbound::Final {
                seq,
                utterance_id,
                frame,
            });
        } else {
            self.fan_out(Outbound::Partial {
                utterance_id,
                frame,
            });
        }
    }

    fn fan_out(&mut self, outbound: Outbound) {
        let mut gone = Vec::new();
        for (id, client) in &self.clients {
            match client.try_send(Deliver(outbound.clone())) {
                Ok(()) => {}
                Err(SendError::Full(_)) => {
                    // The client actor drains its mailbox into its own outbox at once; a full
                    // mailbox means its arbiter is starved. Partials may go; finals may not.
                    if matches!(outbound, Outbound::Partial { .. }) {
                        self.dropped_partials += 1;
                    } else {
                        client.do_send(Deliver(outbound.clone()));
                    }
                }
                Err(SendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            self.clients.remove(&id);
        }
    }

    fn remember_final(&mut self, utterance_id: String) {
        if self.finalized.insert(utterance_id.clone()) {
            self.finalized_order.push_back(utterance_id);
            if self.finalized_order.len() > FINALIZED_MEMORY {
                if let Some(old) = self.finalized_order.pop_front() {
                    self.finalized.remove(&old);
                }
            }
        }
    }
}

impl Actor for BroadcastActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.load_last_seq(ctx);
    }
}

impl Handler<TranscriptEvent> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, event: TranscriptEvent, _: &mut Self::Context) {
        self.publish(event);
    }
}

impl Handler<AddClient> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, msg: AddClient, _: &mut Self::Context) {
        self.clients.insert(msg.id, msg.deliver);
    }
}

impl Handler<RemoveClient> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveClient, _: &mut Self::Context) {
        self.clients.remove(&msg.id);
    }
}

impl Handler<BroadcastStatus> for BroadcastActor {
    type Result = ();

    fn handle(&mut self, msg: BroadcastStatus, _: &mut Self::Context) {
        let frame = status_frame(&self.session_slug, msg.state, &msg.detail);
        self.fan_out(Outbound::Control(frame));
    }
}
