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

#[cfg(test)]
mod tests {
    //! Routing by slug, and who hears that a lease was taken.

    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records what one local session was told.
    #[derive(Default, Clone)]
    struct Heard(Arc<Mutex<(Vec<ClusterNotice>, Vec<BusFrame>)>>);

    struct Session(Heard);
    impl Actor for Session {
        type Context = Context<Self>;
    }
    impl Handler<ClusterNotice> for Session {
        type Result = ();
        fn handle(&mut self, notice: ClusterNotice, _: &mut Self::Context) {
            self.0 .0.lock().unwrap().0.push(notice);
        }
    }
    impl Handler<BusFrame> for Session {
        type Result = ();
        fn handle(&mut self, frame: BusFrame, _: &mut Self::Context) {
            self.0 .0.lock().unwrap().1.push(frame);
        }
    }

    fn member(instance: u64, heard: &Heard) -> Member {
        let addr = Session(heard.clone()).start();
        Member {
            instance: SessionInstance(instance),
            notices: addr.clone().recipient(),
            bus: addr.recipient(),
        }
    }

    fn frame(kind: BusKind) -> BusFrame {
        BusFrame {
            kind,
            seq: (kind == BusKind::Final).then_some(1),
            utterance_id: "u".into(),
            frame: "{}".into(),
        }
    }

    async fn settle() {
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    #[actix_rt::test]
    async fn frames_reach_the_sessions_of_their_slug_only() {
        let (a, b) = (Heard::default(), Heard::default());
        let mut members = Membership::default();
        members.join("a".into(), member(1, &a));
        members.join("b".into(), member(2, &b));
        members.route("a", frame(BusKind::Final));
        members.route("a", frame(BusKind::Partial));
        members.route("nobody", frame(BusKind::Status));
        settle().await;
        assert_eq!(a.0.lock().unwrap().1.len(), 2);
        assert!(b.0.lock().unwrap().1.is_empty());
        members.leave("a", SessionInstance(1));
        members.route("a", frame(BusKind::Final));
        settle().await;
        assert_eq!(
            a.0.lock().unwrap().1.len(),
            2,
            "a session that left still hears"
        );
    }

    #[actix_rt::test]
    async fn only_the_holder_of_a_lease_hears_that_another_instance_took_it() {
        let (held, followed) = (Heard::default(), Heard::default());
        let mut members = Membership::default();
        members.join("held".into(), member(1, &held));
        members.join("followed".into(), member(2, &followed));
        let token = LeaseToken("me:3".into());
        members.hold("held".into(), token.clone());
        assert!(members.announce("held", serde_json::json!({})));
        assert!(
            !members.announce("followed", serde_json::json!({})),
            "not held here"
        );
        // Our own take, echoed on the control channel, changes nothing.
        members.taken_by_other("held", "me:3");
        members.taken_by_other("followed", "other:9");
        settle().await;
        assert!(held.0.lock().unwrap().0.is_empty());
        assert!(
            followed.0.lock().unwrap().0.is_empty(),
            "a follower holds no lease to lose"
        );
        members.taken_by_other("held", "other:4");
        settle().await;
        assert_eq!(held.0.lock().unwrap().0, vec![ClusterNotice::LeaseLost]);
        assert!(members.leases().is_empty());
        assert!(
            members.announced().is_empty(),
            "a lost session is no longer announced"
        );
    }
}
