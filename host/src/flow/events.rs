//! Audit events on their way from the ledger's outbox to the repository.
//!
//! A step that must leave an audit event (a file done with, filed or
//! quarantined) puts the event into the ledger's outbox in the step's own
//! commit, dated then. [`EventSender`] sends what waits in batches: when
//! enough wait, when the oldest has waited long enough, or when a pipeline
//! has nothing in flight. A batch read from the outbox is made durable
//! before it is sent, so an event the repository holds can never be lost
//! from the ledger and sent again under a new key; the embedded repository
//! keeps each key once, so a batch sent again after a crash records
//! nothing twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_ecm::{self as ecm, ErrorKind, Repository};

use crate::ledger::Ledger;

/// Events are sent once this many wait…
pub const EVENTS_BATCH: usize = 64;

/// …or once the oldest has waited this long (checked as files finish and
/// at every poll), or once no file of the pipeline is in flight.
pub const EVENTS_WAIT: Duration = Duration::from_secs(1);

/// Events read from the outbox per repository call.
const SEND_BATCH: usize = 256;

/// What waits, as far as this process knows.
#[derive(Debug, Default)]
struct Waiting {
    count: usize,
    since: Option<Instant>,
}

/// Sends one partner's waiting audit events; shared by the partner's
/// pipelines (its inbox and its acknowledgement folder).
#[derive(Debug, Default)]
pub struct EventSender {
    waiting: Mutex<Waiting>,
    /// Held while a send runs: one at a time.
    sending: tokio::sync::Mutex<()>,
}

impl EventSender {
    /// A sender with nothing waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// One more event is about to be committed to the outbox.
    pub fn adding(&self) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.count += 1;
        w.since.get_or_insert_with(Instant::now);
    }

    /// The event announced with [`EventSender::adding`] was not committed.
    pub fn not_added(&self) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.count = w.count.saturating_sub(1);
        if w.count == 0 {
            w.since = None;
        }
    }

    /// Whether a send is due; when `idle` one always is (the outbox may
    /// hold events this process did not count, left by an earlier one).
    fn due(&self, idle: bool) -> bool {
        let w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        idle || (w.count > 0
            && (w.count >= EVENTS_BATCH || w.since.is_some_and(|t| t.elapsed() >= EVENTS_WAIT)))
    }

    /// Send `partner`'s events if they are due; `idle` when no file of the
    /// calling pipeline is in flight. A sender that would wait for a send in
    /// progress leaves it to that one, unless it is `idle`: the last file
    /// out waits, then sends what came after.
    pub async fn send_if_due<R: Repository>(
        &self,
        ledger: &Arc<Ledger>,
        repo: &R,
        partner: &str,
        idle: bool,
    ) {
        if !self.due(idle) {
            return;
        }
        let _sending = if idle {
            self.sending.lock().await
        } else {
            match self.sending.try_lock() {
                Ok(g) => g,
                Err(_) => return,
            }
        };
        if let Err(e) = self.send(ledger, repo, partner).await {
            tracing::warn!(partner, "audit events wait in the ledger: {e}");
        }
    }

    /// Send every event of `partner` waiting in the outbox. On failure they
    /// stay there, to be sent by a later poll or the next start.
    pub async fn flush<R: Repository>(
        &self,
        ledger: &Arc<Ledger>,
        repo: &R,
        partner: &str,
    ) -> Result<(), String> {
        let _sending = self.sending.lock().await;
        self.send(ledger, repo, partner).await
    }

    async fn send<R: Repository>(
        &self,
        ledger: &Arc<Ledger>,
        repo: &R,
        partner: &str,
    ) -> Result<(), String> {
        let outcome = send_outbox(ledger, repo, partner).await;
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            // Everything committed before the send is sent (what was being
            // committed meanwhile counts again with the next one).
            Ok(sent) => {
                w.count = w.count.saturating_sub(sent);
                w.since = (w.count > 0).then(Instant::now);
                Ok(())
            }
            // Something waits (perhaps left by an earlier process): the
            // next poll tries again.
            Err(e) => {
                w.count = w.count.max(1);
                w.since.get_or_insert_with(Instant::now);
                Err(e)
            }
        }
    }
}

/// Send every event of `partner` waiting in `ledger`'s outbox to `repo`;
/// returns how many left the outbox.
pub async fn send_outbox<R: Repository>(
    ledger: &Arc<Ledger>,
    repo: &R,
    partner: &str,
) -> Result<usize, String> {
    let mut sent = 0;
    loop {
        let batch = {
            let (ledger, partner) = (ledger.clone(), partner.to_string());
            tokio::task::spawn_blocking(move || {
                let batch = ledger.outbox(&partner, SEND_BATCH)?;
                // Durable before it can reach the repository: otherwise a
                // power loss could take the event (and its key) back out
                // of the ledger after the repository recorded it. (Every
                // step read is counted before its rows can be read.)
                if !batch.is_empty() {
                    ledger.make_durable()?;
                }
                Ok::<_, crate::ledger::LedgerError>(batch)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
        };
        if batch.is_empty() {
            return Ok(sent);
        }
        let events: Vec<ecm::KeyedEvent> = batch.iter().map(|o| o.event.clone()).collect();
        match repo.record_events(&events).await {
            Ok(()) => {}
            // Content Server has no audit write; the delivery log carries
            // these transfers.
            Err(e) if e.kind == ErrorKind::Unsupported => {}
            Err(e) => return Err(e.to_string()),
        }
        let ids: Vec<i64> = batch.iter().map(|o| o.id).collect();
        let ledger2 = ledger.clone();
        tokio::task::spawn_blocking(move || ledger2.outbox_sent(&ids))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        sent += batch.len();
        if batch.len() < SEND_BATCH {
            return Ok(sent);
        }
    }
}
