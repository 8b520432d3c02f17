//! Which local sessions follow which slug, and which leases this instance holds: shared by
//! the cluster actor (which changes it) and the bus subscriber (which routes by it).

use std::collections::HashMap;

use ::actors::messages::cluster::{BusFrame, BusKind, ClusterNotice, LeaseToken};
use ::actors::messages::SessionInstance;
use actix::prelude::*;

pub struct Member {
    pub instance: SessionInstance,
    pub notices: Recipient<ClusterNotice>,
    pub bus: Recipient<BusFrame>,
}

#[derive(Default)]
pub struct Membership {
    /// Usually one session per slug; a retiring one and its successor can overlap.
    members: HashMap<String, Vec<Member>>,
    leases: HashMap<String, LeaseToken>,
    /// The newest snapshot of each session held here, for the directory.
    announced: HashMap<String, serde_json::Value>,
}

impl Membership {
    pub fn join(&mut self, slug: String, member: Member) {
        self.members.entry(slug).or_default().push(member);
    }

    pub fn leave(&mut self, slug: &str, instance: SessionInstance) {
        if let Some(members) = self.members.get_mut(slug) {
            members.retain(|m| m.instance != instance);
            if members.is_empty() {
                self.members.remove(slug);
            }
        }
    }

    pub fn hold(&mut self, slug: String, token: LeaseToken) {
        self.leases.insert(slug, token);
    }

    /// Forgets the lease if it is `token` (a newer take of ours may have replaced it).
    pub fn release(&mut self, slug: &str, token: &LeaseToken) {
        if self.leases.get(slug) == Some(token) {
            self.leases.remove(slug);
            self.announced.remove(slug);
        }
    }

    /// Keeps the snapshot of a session whose lease is held here; `false` for any other.
    pub fn announce(&mut self, slug: &str, snapshot: serde_json::Value) -> bool {
        if !self.leases.contains_key(slug) {
            return false;
        }
        self.announced.insert(slug.to_owned(), snapshot);
        true
    }

    /// What the directory should say of the sessions held here.
    pub fn announced(&self) -> Vec<(String, serde_json::Value)> {
        self.announced
            .iter()
            .map(|(s, v)| (s.clone(), v.clone()))
            .collect()
    }

    pub fn leases(&self) -> Vec<(String, LeaseToken)> {
        self.leases
            .iter()
            .map(|(s, t)| (s.clone(), t.clone()))
            .collect()
    }

    /// Another instance took `slug`: if we held it, we do no longer, and its sessions hear so.
    pub fn taken_by_other(&mut self, slug: &str, token: &str) {
        if self.leases.get(slug).is_some_and(|held| &*held.0 != token) {
            self.leases.remove(slug);
            self.announced.remove(slug);
            self.notify(slug, ClusterNotice::LeaseLost);
        }
    }

    pub fn notify(&self, slug: &str, notice: ClusterNotice) {
        for member in self.members.get(slug).into_iter().flatten() {
            member.notices.do_send(notice.clone());
        }
    }

    pub fn notify_all(&self, notice: ClusterNotice) {
        for slug in self.members.keys() {
            self.notify(slug, notice.clone());
        }
    }

    /// A frame for `slug`'s local sessions. Finals and status frames always reach the
    /// broadcaster (they are few, and a lost one would cost a fill); a partial is dropped when
    /// the broadcaster's mailbox is full, as locally.
    pub fn route(&self, slug: &str, frame: BusFrame) {
        for member in self.members.get(slug).into_iter().flatten() {
            match frame.kind {
                BusKind::Partial => {
                    let _ = member.bus.try_send(frame.clone());
                }
                BusKind::Final | BusKind::Status => member.bus.do_send(frame.clone()),
            }
        }
    }
}
