//! Wake-ups for instances waiting on another's exchange. One subscriber
//! connection per tier carries the per-key channels that have local waiters;
//! a message on a channel wakes that key's waiters, who then read Redis. The
//! subscription is a shortcut, never a requirement: waiters also poll, so a
//! lost message or a dropped subscriber only makes them slower.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::PubSubSink;
use tokio::sync::Notify;

use super::client::Backend;
use super::Inner;

struct Channel {
    waiters: usize,
    notify: Arc<Notify>,
}

type Channels = Arc<Mutex<HashMap<String, Channel>>>;

struct Subscriber {
    sink: PubSubSink,
    alive: Arc<AtomicBool>,
    /// Owns the stream, hence the connection: a tier that is replaced or
    /// dropped must not leave a subscriber connection behind.
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Default)]
pub(crate) struct Subscriptions {
    channels: Channels,
    /// Held across SUBSCRIBE/UNSUBSCRIBE so that they reach Redis in the order
    /// the waiter counts changed.
    subscriber: tokio::sync::Mutex<Option<Subscriber>>,
}

/// One waiter's interest in a channel; dropping it unsubscribes the channel
/// when it was the last local waiter.
pub(crate) struct Registration {
    tier: Arc<Inner>,
    channel: String,
    notify: Arc<Notify>,
}

impl Registration {
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let subscriptions = &self.tier.subscriptions;
        let last = {
            let mut channels = subscriptions.channels.lock();
            let Some(entry) = channels.get_mut(&self.channel) else { return };
            entry.waiters -= 1;
            entry.waiters == 0 && channels.remove(&self.channel).is_some()
        };
        if !last {
            return;
        }
        let (tier, channel) = (self.tier.clone(), std::mem::take(&mut self.channel));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let budget = tier.timeout;
                let _ = tokio::time::timeout(budget, tier.subscriptions.unsubscribe(&channel)).await;
            });
        }
    }
}

impl Subscriptions {
    /// Registers a waiter on `channel`, subscribing it first when it is the
    /// channel's first local waiter. Returns once Redis confirmed the
    /// subscription, or once that failed or ran out of time.
    pub async fn register(tier: &Arc<Inner>, channel: &str) -> Registration {
        let (notify, first) = {
            let mut channels = tier.subscriptions.channels.lock();
            let entry = channels
                .entry(channel.to_owned())
                .or_insert_with(|| Channel { waiters: 0, notify: Arc::new(Notify::new()) });
            entry.waiters += 1;
            (entry.notify.clone(), entry.waiters == 1)
        };
        let registration = Registration { tier: tier.clone(), channel: channel.to_owned(), notify };
        if first {
            let _ = tokio::time::timeout(tier.timeout, tier.subscriptions.subscribe(&tier.backend, channel)).await;
        }
        registration
    }

    async fn subscribe(&self, backend: &Backend, channel: &str) {
        let mut subscriber = self.subscriber.lock().await;
        if let Some(current) = subscriber.as_mut() {
            if current.alive.load(Ordering::Acquire) && current.sink.subscribe(channel).await.is_ok() {
                return;
            }
            *subscriber = None;
        }
        let Some(pubsub) = backend.subscriber().await else { return };
        let (mut sink, mut stream) = pubsub.split();
        // A new connection starts with no subscription: take every channel that has waiters.
        let wanted: Vec<String> = self.channels.lock().keys().cloned().collect();
        if wanted.is_empty() || sink.subscribe(&wanted).await.is_err() {
            return;
        }
        let alive = Arc::new(AtomicBool::new(true));
        let (channels, reader_alive) = (self.channels.clone(), alive.clone());
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let notify = channels.lock().get(message.get_channel_name()).map(|c| c.notify.clone());
                if let Some(notify) = notify {
                    notify.notify_waiters();
                }
            }
            reader_alive.store(false, Ordering::Release);
        });
        *subscriber = Some(Subscriber { sink, alive, reader });
    }

    async fn unsubscribe(&self, channel: &str) {
        let mut subscriber = self.subscriber.lock().await;
        if self.channels.lock().contains_key(channel) {
            return; // a new waiter came for it meanwhile
        }
        if let Some(current) = subscriber.as_mut() {
            let _ = current.sink.unsubscribe(channel).await;
        }
    }

    #[cfg(test)]
    pub fn local_channels(&self) -> usize {
        self.channels.lock().len()
    }
}
