//! The open connections of `serve`. When all `--max-connections` slots are taken, a new
//! connection is not turned away: the least recently active *idle* connections (no request
//! being handled: waiting for a first request, between keep-alive requests, in a TLS handshake,
//! or trickling header bytes) are closed to make room, a batch at a time. This is nginx's
//! "reusable connections" rule (`ngx_drain_connections`: idle keep-alive connections and those
//! still waiting for a request are closed, oldest first, up to 32 at once, when free connections
//! run out). A flood of idle connections thus costs the flooder its own oldest connections, and
//! a scraper's fresh connection survives until at least `max − busy − batch` newer connections
//! have arrived, far longer than it needs to send its request. Only when every slot is busy
//! handling a request (each bounded by --request-timeout) is a new connection closed at once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The most idle connections one admission closes (nginx closes up to 32).
const MAX_BATCH: usize = 32;

/// All open connections (admitted, not yet closed or evicted).
pub struct Table {
    max: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: FxHashMap<u64, Arc<Conn>>,
    /// Connections closed to make room, since the last `take_evicted`.
    evicted: u64,
}

/// One connection's shared state: what eviction looks at, and how it asks the connection's
/// task to close.
pub struct Conn {
    epoch: Instant,
    /// Milliseconds since the table's epoch of the last byte read or written.
    last_active: AtomicU64,
    /// Requests being handled right now (from the parsed request head until the response is
    /// handed to hyper).
    busy: AtomicU32,
    close: Notify,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_active.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Marks a request in progress until the guard drops: the connection is not evicted then.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(Arc::clone(self))
    }

    /// Completes when the table evicted this connection (at once if that already happened).
    pub async fn evicted(&self) {
        self.close.notified().await;
    }
}

pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place in the table; dropping it (the connection's task ended) frees it.
pub struct Slot {
    table: Arc<Table>,
    id: u64,
    conn: Arc<Conn>,
}

impl Slot {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().open.remove(&self.id);
    }
}

impl Table {
    pub fn new(max: usize) -> Arc<Table> {
        Arc::new(Table {
            max: max.max(1),
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Admits a new connection, closing idle ones first when the table is full; `None` when
    /// it is full of busy connections.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.open.len() >= self.max && evict(&mut inner) == 0 {
            return None;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let conn = Arc::new(Conn {
            epoch: self.epoch,
            last_active: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            close: Notify::new(),
        });
        conn.touch();
        inner.open.insert(id, Arc::clone(&conn));
        Some(Slot {
            table: Arc::clone(self),
            id,
            conn,
        })
    }

    /// Closes a batch of idle connections now (e.g. when accept() runs out of descriptors).
    pub fn evict_idle(&self) -> usize {
        evict(&mut self.lock())
    }

    /// Connections evicted since the last call.
    pub fn take_evicted(&self) -> u64 {
        std::mem::take(&mut self.lock().evicted)
    }
}

/// Closes the least recently active idle connections: an eighth of the idle ones, at least 1
/// and at most [`MAX_BATCH`] (nginx's batch). Returns how many.
fn evict(inner: &mut Inner) -> usize {
    let mut idle: Vec<(u64, u64)> = inner
        .open
        .iter()
        .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
        .map(|(id, c)| (c.last_active.load(Ordering::Relaxed), *id))
        .collect();
    if idle.is_empty() {
        return 0;
    }
    let n = (idle.len() / 8).clamp(1, MAX_BATCH);
    // Oldest activity first; among equals the older connection (smaller id).
    if n < idle.len() {
        idle.select_nth_unstable(n - 1);
    }
    for &(_, id) in &idle[..n] {
        if let Some(c) = inner.open.remove(&id) {
            c.close.notify_one();
        }
    }
    inner.evicted += n as u64;
    n
}

/// A connection's byte stream that records activity (any byte read or written) for eviction.
/// It wraps the TCP stream below TLS, so handshake bytes count too.
pub struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, conn: Arc<Conn>) -> Self {
        Tracked { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;

    use super::*;

    fn set_age(slot: &Slot, ms: u64) {
        slot.conn().last_active.store(ms, Ordering::Relaxed);
    }

    #[test]
    fn a_full_table_closes_the_least_recently_active_idle_connection() {
        let table = Table::new(3);
        let a = table.admit().expect("room");
        let b = table.admit().expect("room");
        let c = table.admit().expect("room");
        set_age(&a, 30);
        set_age(&b, 10); // least recently active
        set_age(&c, 20);
        let d = table.admit().expect("an idle connection makes room");
        assert_eq!(table.len(), 3);
        assert_eq!(table.take_evicted(), 1);
        // b was told to close (its notification is stored), the others were not.
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for (slot, want) in [(&a, false), (&b, true), (&c, false), (&d, false)] {
            let fut = slot.conn().evicted();
            let mut fut = std::pin::pin!(fut);
            assert_eq!(fut.as_mut().poll(&mut cx).is_ready(), want);
        }
        // Dropping an evicted slot does not free anyone else's place.
        drop(b);
        assert_eq!(table.len(), 3);
        drop(a);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn busy_connections_are_never_evicted_and_a_full_busy_table_refuses() {
        let table = Table::new(2);
        let a = table.admit().expect("room");
        let b = table.admit().expect("room");
        set_age(&a, 0);
        let busy_a = a.conn().busy();
        let busy_b = b.conn().busy();
        assert!(table.admit().is_none(), "all busy: refused");
        drop(busy_b);
        set_age(&b, 0);
        let _c = table.admit().expect("b is idle again");
        assert_eq!(table.len(), 2);
        assert!(table.lock().open.contains_key(&a.id), "busy a stays");
        drop(busy_a);
    }

    #[test]
    fn eviction_works_in_batches_of_an_eighth_of_the_idle_ones() {
        let table = Table::new(400);
        let slots: Vec<Slot> = (0..400).map(|_| table.admit().expect("room")).collect();
        for (i, s) in slots.iter().enumerate() {
            set_age(s, i as u64);
        }
        let _new = table.admit().expect("room made");
        // 400 / 8 = 50, capped at 32; the 32 oldest went.
        assert_eq!(table.take_evicted(), 32);
        assert_eq!(table.len(), 400 - 32 + 1);
        let open = &table.lock().open;
        for s in &slots[..32] {
            assert!(!open.contains_key(&s.id));
        }
        for s in &slots[32..] {
            assert!(open.contains_key(&s.id));
        }
    }
}
