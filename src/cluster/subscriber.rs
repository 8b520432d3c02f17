//! The bus subscriber: one pub/sub connection per instance, subscribed to every session's
//! bus channel and to the control channel (docs/ARCHITECTURE.md#cluster-mode). It routes
//! each message to the local sessions of its slug through [`Membership`] and tells them when
//! the bus goes away and comes back (they then fill what they missed from the log).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::actors::messages::cluster::ClusterNotice;
use futures_util::StreamExt;

use super::envelope::{self, Control};
use super::keys;
use super::membership::Membership;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub async fn run(client: redis::Client, instance_id: String, membership: Arc<Mutex<Membership>>) {
    let members = || {
        membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut backoff = Duration::from_millis(100);
    // The first failure of each outage is logged, not every retry.
    let mut log_failure = true;
    loop {
        match subscribe(&client).await {
            Ok(pubsub) => {
                tracing::info!("cluster: bus subscribed");
                backoff = Duration::from_millis(100);
                log_failure = true;
                // Sessions fill whatever was published while nobody listened.
                members().notify_all(ClusterNotice::BusBack);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let channel = message.get_channel_name();
                    let payload = message.get_payload_bytes();
                    if channel == keys::CONTROL_CHANNEL {
                        match envelope::decode_control(payload) {
                            Ok(Control::LeaseTaken { slug, token, src }) if src != instance_id => {
                                members().taken_by_other(&slug, &token);
                            }
                            Ok(Control::Stop { slug, src }) if src != instance_id => {
                                members().notify(&slug, ClusterNotice::StopAsked);
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "cluster: control message refused")
                            }
                        }
                    } else if let Some(slug) = keys::slug_of_bus(channel) {
                        match envelope::decode(payload) {
                            Ok(decoded) if decoded.src != instance_id => {
                                members().route(slug, decoded.frame);
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(session = %slug.escape_debug(), %error, "cluster: bus message refused")
                            }
                        }
                    }
                }
                tracing::warn!("cluster: bus connection lost; reconnecting");
                members().notify_all(ClusterNotice::BusDown);
            }
            Err(error) => {
                if log_failure {
                    tracing::warn!(%error, "cluster: bus unreachable; retrying");
                    log_failure = false;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(client: &redis::Client) -> Result<redis::aio::PubSub, String> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(keys::BUS_PATTERN).await?;
        pubsub.subscribe(keys::CONTROL_CHANNEL).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(error.category().to_owned()),
        Err(_) => Err("timed out".into()),
    }
}
