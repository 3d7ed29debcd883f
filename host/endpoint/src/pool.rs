//! A per-partner connection pool with a hard maximum.
//!
//! Partners cap connections per IP and answer `421` beyond it. The pool never opens more than
//! its maximum; when a connect is still refused as busy (another process shares the cap), the
//! caller backs off with jitter and tries again, reusing any connection returned meanwhile, so
//! parallel work completes instead of deadlocking.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::RetryPolicy;
use crate::error::{Error, Result};

/// Idle connections older than this are closed rather than reused (servers drop idle sessions).
const MAX_IDLE: Duration = Duration::from_secs(20);

struct Inner<C> {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<(C, Instant)>>,
}

/// A bounded pool of connections of type `C`.
pub struct Pool<C> {
    inner: Arc<Inner<C>>,
    max: usize,
    connect_timeout: Duration,
    busy_backoff: RetryPolicy,
    busy: AtomicU64,
}

impl<C: Send + 'static> Pool<C> {
    /// A pool of at most `max` connections (at least 1).
    pub fn new(max: usize, connect_timeout: Duration) -> Self {
        let max = max.max(1);
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(max)),
                idle: Mutex::new(Vec::new()),
            }),
            max,
            connect_timeout,
            busy_backoff: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
            },
            busy: AtomicU64::new(0),
        }
    }

    /// The most connections this pool opens.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes an idle connection or opens one with `connect`. Waits for a free slot when
    /// `max` connections are in use. A `Busy` refusal is retried with backoff until the
    /// connect timeout has passed four times over; other connect errors are returned.
    pub async fn get<F, Fut>(&self, mut connect: F) -> Result<Pooled<C>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<C>>,
    {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config("connection pool closed".into()))?;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            if let Some(conn) = self.take_idle() {
                return Ok(self.wrap(conn, permit));
            }
            match self.connect_within(connect()).await {
                Ok(conn) => return Ok(self.wrap(conn, permit)),
                Err(Error::Busy(msg)) => {
                    self.busy.fetch_add(1, Ordering::Relaxed);
                    if started.elapsed() >= self.connect_timeout * 4 {
                        return Err(Error::Busy(msg));
                    }
                    let delay = self.busy_backoff.backoff(attempt);
                    tracing::debug!(%msg, ?delay, "server busy, backing off");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// An idle connection, if one is free now: never waits for a slot (nor takes one a
    /// waiting caller is due) and never connects.
    pub fn try_idle(&self) -> Option<Pooled<C>> {
        let permit = self.inner.permits.clone().try_acquire_owned().ok()?;
        let conn = self.take_idle()?;
        Some(self.wrap(conn, permit))
    }

    /// Opens one more connection with `connect` and leaves it idle, when none is idle and a
    /// slot is free now (it never waits for one, nor takes one a waiting caller is due).
    /// Returns whether it did. The new connection holds no slot while idle: whoever needs
    /// one next takes it.
    pub async fn add_idle<F, Fut>(&self, connect: F) -> Result<bool>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C>>,
    {
        if !self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Ok(false);
        }
        let Ok(permit) = self.inner.permits.clone().try_acquire_owned() else {
            return Ok(false);
        };
        let conn = self.connect_within(connect()).await?;
        drop(self.wrap(conn, permit));
        Ok(true)
    }

    /// `connect`, failed with a timeout after the pool's connect timeout.
    async fn connect_within(&self, connect: impl Future<Output = Result<C>>) -> Result<C> {
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or(Err(Error::Timeout {
                what: "connect",
                after: self.connect_timeout,
            }))
    }

    fn take_idle(&self) -> Option<C> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE {
                return Some(conn);
            }
        }
        None
    }

    fn wrap(&self, conn: C, permit: OwnedSemaphorePermit) -> Pooled<C> {
        Pooled {
            conn: Some(conn),
            inner: self.inner.clone(),
            _permit: permit,
            broken: false,
            in_flight: false,
        }
    }

    /// How many connects the server refused as busy (FTP 421) so far.
    pub fn busy_refusals(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Closes all idle connections (they are dropped).
    pub fn clear_idle(&self) {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A connection borrowed from a [`Pool`]; it goes back when dropped unless marked broken.
pub struct Pooled<C: Send + 'static> {
    conn: Option<C>,
    inner: Arc<Inner<C>>,
    _permit: OwnedSemaphorePermit,
    broken: bool,
    in_flight: bool,
}

impl<C: Send + 'static> Pooled<C> {
    /// Marks the connection unusable: it is closed instead of returned.
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Marks a command in flight and gives the connection to send it. Until the next
    /// [`Self::check`], dropping this connection closes it: a command cancelled before its
    /// reply was read (a caller's timeout, a failed sibling in a join) would leave that reply
    /// to the next user, who would take it for the answer to its own command.
    pub fn begin(&mut self) -> &mut C {
        self.in_flight = true;
        self.conn.as_mut().expect("connection present until drop")
    }

    /// Ends the command begun by [`Self::begin`] with its result `r`, and marks the
    /// connection broken when `r` failed in a way that leaves it unusable.
    pub fn check<T>(&mut self, r: Result<T>) -> Result<T> {
        self.in_flight = false;
        if let Err(e) = &r
            && e.breaks_connection()
        {
            self.broken = true;
        }
        r
    }
}

impl<C: Send + 'static> Deref for Pooled<C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl<C: Send + 'static> DerefMut for Pooled<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl<C: Send + 'static> Drop for Pooled<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.broken
            && !self.in_flight
        {
            self.inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((conn, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A pool of numbered stand-in connections, and a connect that counts.
    fn pool(max: usize) -> (Arc<Pool<u32>>, Arc<AtomicU32>) {
        (
            Arc::new(Pool::new(max, Duration::from_secs(5))),
            Arc::new(AtomicU32::new(0)),
        )
    }

    async fn connect(opened: &AtomicU32) -> Result<u32> {
        Ok(opened.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[tokio::test]
    async fn a_connection_dropped_mid_command_is_closed_not_reused() {
        let (pool, opened) = pool(1);
        let mut a = pool.get(|| connect(&opened)).await.unwrap();
        a.begin();
        drop(a);
        assert!(pool.try_idle().is_none(), "its reply may still be unread");
        // A command ended by its result, even a refusal, leaves the connection reusable.
        let mut b = pool.get(|| connect(&opened)).await.unwrap();
        assert_eq!(*b, 2);
        b.begin();
        let _ = b.check::<()>(Err(Error::Refused("550 no such file".into())));
        drop(b);
        assert_eq!(*pool.try_idle().expect("returned"), 2);
    }

    #[tokio::test]
    async fn try_idle_takes_only_an_idle_connection() {
        let (pool, opened) = pool(2);
        assert!(pool.try_idle().is_none(), "nothing idle yet");
        let a = pool.get(|| connect(&opened)).await.unwrap();
        assert!(pool.try_idle().is_none(), "the one connection is in use");
        drop(a);
        let again = pool.try_idle().expect("the returned connection");
        assert_eq!(*again, 1);
        assert_eq!(opened.load(Ordering::SeqCst), 1, "try_idle never connects");
    }

    #[tokio::test]
    async fn try_idle_leaves_a_returned_connection_to_a_waiting_caller() {
        let (pool, opened) = pool(1);
        let a = pool.get(|| connect(&opened)).await.unwrap();
        let waiter = {
            let (pool, opened) = (pool.clone(), opened.clone());
            tokio::spawn(async move { *pool.get(|| connect(&opened)).await.unwrap() })
        };
        // On this single-threaded runtime the waiter runs when the test yields: it queues
        // for the only slot.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        drop(a);
        assert!(
            pool.try_idle().is_none(),
            "the slot belongs to the caller that waited for it"
        );
        assert_eq!(waiter.await.unwrap(), 1, "the waiter reuses the connection");
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn add_idle_opens_one_spare_only_when_none_is_idle_and_a_slot_is_free() {
        let (pool, opened) = pool(2);
        let a = pool.get(|| connect(&opened)).await.unwrap();
        assert!(pool.add_idle(|| connect(&opened)).await.unwrap());
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        // One is idle already: no second spare.
        assert!(!pool.add_idle(|| connect(&opened)).await.unwrap());
        // The spare holds no slot while idle: a caller takes it without connecting.
        let b = pool.get(|| connect(&opened)).await.unwrap();
        assert_eq!(*b, 2);
        // Both slots in use: no spare.
        assert!(!pool.add_idle(|| connect(&opened)).await.unwrap());
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        drop((a, b));
    }

    #[tokio::test]
    async fn a_failed_spare_connect_is_reported_and_frees_its_slot() {
        let (pool, _) = pool(1);
        let err = pool
            .add_idle(|| async { Err::<u32, _>(Error::Busy("421 too many".into())) })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err}");
        assert_eq!(pool.inner.permits.available_permits(), 1);
    }
}
