//! `portdoctor serve`: a Prometheus exporter (HTTP/1 on a single-threaded tokio runtime, hyper),
//! or with `--textfile DIR` a writer of `portdoctor.prom` for node_exporter's textfile
//! collector. The metric families themselves are built in `portdoctor::serve` (pure).
//!
//! Threads and namespaces: the collector opens `--netns`/`--pid` once at start and enters it on
//! whichever blocking-pool thread runs a collection (setns is per thread), so the listener and
//! the event loop stay in the caller's namespace and the HTTP socket stays reachable from the
//! host.

use std::convert::Infallible;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

use portdoctor::analysis::{analyze, Thresholds};
#[cfg(target_os = "linux")]
use portdoctor::collect::linux::namespaces::{collect_all, Discovery};
use portdoctor::collect::{self, Collector};
#[cfg(target_os = "linux")]
use portdoctor::report::namespaces;
use portdoctor::serve::metrics::{self, Collection, ExporterCounters, MetricsOptions, Scraped};
use portdoctor::serve::textfmt;
use portdoctor::serve::webconfig::{self, WebConfig};

use super::EXIT_COLLECT;
use crate::cli::ServeArgs;

mod conns;

/// The most `--max-connections` may ask for.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// The file written by `--textfile DIR`.
pub const TEXTFILE_NAME: &str = "portdoctor.prom";

/// What a collection covers: one namespace, or every namespace of the host (`-A`).
#[derive(Clone)]
enum Scope {
    One(Arc<dyn Collector>),
    #[cfg(target_os = "linux")]
    All(Arc<(collect::CollectOptions, Discovery)>),
}

impl Scope {
    /// `-A`: every namespace, discovered anew at each collection (pods come and go).
    #[cfg(target_os = "linux")]
    #[allow(clippy::unnecessary_wraps)] // the same signature as elsewhere
    fn all(opts: collect::CollectOptions, pods_dir: Option<&Path>) -> Result<Scope, String> {
        let mut discovery = Discovery::default();
        if let Some(dir) = pods_dir {
            discovery.pods_dir = dir.to_path_buf();
        }
        Ok(Scope::All(Arc::new((opts, discovery))))
    }

    #[cfg(not(target_os = "linux"))]
    fn all(_opts: collect::CollectOptions, _pods_dir: Option<&Path>) -> Result<Scope, String> {
        Err(format!(
            "--all-namespaces reads Linux network namespaces; on {} leave it out",
            std::env::consts::OS
        ))
    }
}

/// What every request handler shares.
struct Shared {
    collector: Scope,
    thresholds: Thresholds,
    metrics: MetricsOptions,
    min_interval: Duration,
    counters: ExporterCounters,
    /// The last collection; the lock is held during a collection, so concurrent scrapes wait for
    /// the same one instead of starting their own.
    cache: tokio::sync::Mutex<Option<Cached>>,
    web: WebConfig,
    /// `Authorization` header values that passed bcrypt (a few), so a scraper pays once.
    auth_ok: Mutex<Vec<Vec<u8>>>,
    /// bcrypt runs at most this many at a time (wrong passwords cost CPU on purpose).
    bcrypt_slots: Semaphore,
}

#[derive(Clone)]
struct Cached {
    at: Instant,
    openmetrics: Bytes,
    classic: Bytes,
}

#[allow(clippy::unnecessary_wraps)] // every early return of `run` is one expression
fn usage_error(msg: &str) -> anyhow::Result<ExitCode> {
    Ok(super::usage(msg))
}

/// A stop asked for from outside the process's signals: the Windows service control handler
/// (SERVICE_CONTROL_STOP / SHUTDOWN) calls [`request_stop`], which ends the HTTP loop the way
/// Ctrl-C does (graceful) and wakes a `--textfile --loop` sleep.
struct StopRequest {
    flag: Mutex<bool>,
    wake: Condvar,
    notify: tokio::sync::Notify,
}

static STOP: StopRequest = StopRequest {
    flag: Mutex::new(false),
    wake: Condvar::new(),
    notify: tokio::sync::Notify::const_new(),
};

/// Stops `serve` as Ctrl-C does; callable from any thread, before or after the loop starts.
#[cfg_attr(not(windows), allow(dead_code))]
pub fn request_stop() {
    *STOP.flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
    STOP.wake.notify_all();
    // Stores a permit when nothing waits yet, so an early stop is not lost.
    STOP.notify.notify_one();
}

/// Sleeps `d`, or less when a stop is requested; true when one was.
fn sleep_unless_stopped(d: Duration) -> bool {
    let guard = STOP.flag.lock().unwrap_or_else(PoisonError::into_inner);
    let (guard, _) = STOP
        .wake
        .wait_timeout_while(guard, d, |stopped| !*stopped)
        .unwrap_or_else(PoisonError::into_inner);
    *guard
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if args.service {
        return run_as_service(args);
    }
    let thresholds = match args.thresholds.thresholds() {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    let mut opts = match args.target.collect_options() {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    if args.max_pools == 0 || args.max_connections == 0 {
        return usage_error("--max-pools and --max-connections must be at least 1");
    }
    // More than a process could hold open.
    if args.max_connections > MAX_CONNECTIONS_LIMIT {
        return usage_error(&format!(
            "--max-connections {} is more than a process can hold: at most {MAX_CONNECTIONS_LIMIT}",
            args.max_connections
        ));
    }
    let web = match &args.web_config {
        Some(path) => match WebConfig::load(path) {
            Ok(w) => w,
            Err(e) => return usage_error(&e.to_string()),
        },
        None => WebConfig::default(),
    };
    #[cfg(not(feature = "tls"))]
    if web.tls_server_config.is_some() {
        return usage_error("this portdoctor was built without the `tls` feature; rebuild with it or remove tls_server_config");
    }
    // Metrics carry no process names: skip the /proc owner scan (fast, no privileges).
    opts.owners = false;
    // Opens the target namespace now (a missing one fails here, exit 3) and keeps it open;
    // collections enter it on the blocking-pool thread that runs them, so the listener and
    // the event loop stay in the caller's namespace.
    let target = opts.target.clone();
    let collector = if args.scope.all_namespaces {
        match Scope::all(opts, args.scope.pods_dir.as_deref()) {
            Ok(s) => s,
            Err(e) => return usage_error(&e),
        }
    } else {
        Scope::One(Arc::from(collect::native(opts)?))
    };
    let shared = Shared {
        collector,
        thresholds,
        metrics: MetricsOptions {
            max_pools: args.max_pools,
        },
        min_interval: Duration::from_secs_f64(args.min_interval),
        // Failed connect()/bind() calls of the target's namespace, traced while serve runs.
        counters: ExporterCounters {
            failures: portdoctor::serve::failures::start(
                (!args.scope.all_namespaces).then_some(&target),
                args.scope.pods_dir.as_deref(),
                args.max_pools,
            ),
            ..ExporterCounters::default()
        },
        cache: tokio::sync::Mutex::new(None),
        web,
        auth_ok: Mutex::new(Vec::new()),
        bcrypt_slots: Semaphore::new(2),
    };
    if let Some(dir) = &args.textfile {
        return textfile(&shared, dir, args.loop_interval);
    }

    // A web config whose certificate or key cannot be used is a configuration error (exit 4),
    // found before anything listens.
    let tls = match load_tls(&shared.web) {
        Ok(t) => t,
        Err(e) => return usage_error(&format!("--web-config: {}", super::error_text(&e))),
    };
    // The listener lives in the caller's namespace (collections enter the target's).
    let listener = match std::net::TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Ok(super::failed(format!(
                "cannot listen on {}: the port is taken by another program; pick another with --listen ADDR:PORT",
                args.listen
            )));
        }
        Err(e) => {
            return Ok(super::failed(format!(
                "cannot listen on {}: {e}",
                args.listen
            )));
        }
    };
    listener
        .set_nonblocking(true)
        .context("setting the listener non-blocking")?;
    let local = listener.local_addr().unwrap_or(args.listen);
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("portdoctor: serving {scheme}://{local}/metrics");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the async runtime")?;
    let limits = Limits {
        max_connections: connections_the_fd_limit_allows(args.max_connections),
        header_timeout: Duration::from_secs_f64(args.header_timeout),
        request_timeout: Duration::from_secs_f64(args.request_timeout),
    };
    rt.block_on(serve(listener, Arc::new(shared), tls, limits))?;
    eprintln!("portdoctor: stopped");
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `serve --service`: hand the same options (without `--service`) to the Service Control
/// Manager's dispatcher, which runs them on its service thread.
#[cfg(windows)]
#[allow(clippy::unnecessary_wraps)] // the same signature as elsewhere
fn run_as_service(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut plain = args.clone();
    plain.service = false;
    Ok(super::service::dispatch(Box::new(move || {
        run(&plain).unwrap_or_else(|e| super::failed(super::error_text(&e)))
    })))
}

#[cfg(not(windows))]
fn run_as_service(_args: &ServeArgs) -> anyhow::Result<ExitCode> {
    usage_error(&format!(
        "--service runs serve under the Windows Service Control Manager; on {} run `portdoctor serve` under your service manager (systemd unit: deploy/)",
        std::env::consts::OS
    ))
}

/// One collection, analysis and rendering (blocking: run it off the event loop).
fn collect_and_render(
    scope: &Scope,
    thresholds: Thresholds,
    mopts: MetricsOptions,
    counters: &ExporterCounters,
) -> (String, Option<String>) {
    let t0 = Instant::now();
    counters.collections.inc();
    let render = |result: Option<Scraped<'_>>| {
        let collection = Collection {
            result,
            duration_seconds: t0.elapsed().as_secs_f64(),
            timestamp_seconds: unix_now(),
        };
        metrics::render(&collection, counters, mopts)
    };
    let failed = |e: String| {
        counters.collection_errors.inc();
        (render(None), Some(e))
    };
    match scope {
        Scope::One(collector) => match collector.snapshot() {
            Ok(snap) => {
                let a = analyze(&snap, thresholds);
                (render(Some(Scraped::One(&snap, &a))), None)
            }
            Err(e) => failed(e.to_string()),
        },
        #[cfg(target_os = "linux")]
        Scope::All(all) => match collect_all(&all.0, &all.1) {
            Ok(found) => {
                let mut analyses: Vec<_> =
                    found.each().map(|(_, s)| analyze(s, thresholds)).collect();
                portdoctor::analysis::snat::attribute(&mut analyses, found.each());
                let inspected = namespaces::inspect(found.each(), &analyses);
                log_notes_once(&found.notes);
                (
                    render(Some(Scraped::All {
                        namespaces: &inspected,
                        skipped: found.skipped,
                    })),
                    None,
                )
            }
            Err(e) => failed(e.to_string()),
        },
    }
}

/// `-A`: what could not be collected (namespaces skipped for want of privileges, unreadable
/// processes) goes to stderr when it differs from the last collection's, not at every scrape.
#[cfg(target_os = "linux")]
fn log_notes_once(notes: &[String]) {
    static LAST: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    if last.as_slice() != notes {
        for n in notes {
            eprintln!("portdoctor: note: {n}");
        }
        *last = notes.to_vec();
    }
}

// ---------------------------------------------------------------------------------------------
// Textfile mode
// ---------------------------------------------------------------------------------------------

fn textfile(shared: &Shared, dir: &Path, interval: Option<f64>) -> anyhow::Result<ExitCode> {
    loop {
        let round = Instant::now();
        let (text, error) = collect_and_render(
            &shared.collector,
            shared.thresholds,
            shared.metrics,
            &shared.counters,
        );
        if let Some(e) = &error {
            eprintln!("portdoctor: error: collecting: {e}");
        }
        if let Err(e) = write_atomically(dir, &textfmt::to_classic(&text)) {
            let stale = withdraw_stale(dir, shared);
            match interval {
                None => return Ok(super::failed(format!("{}; {stale}", super::error_text(&e)))),
                Some(s) => {
                    eprintln!(
                        "portdoctor: error: {}; {stale}; retrying in {s} s",
                        super::error_text(&e)
                    );
                }
            }
        }
        let Some(every) = interval else {
            return Ok(ExitCode::from(if error.is_some() {
                EXIT_COLLECT
            } else {
                0
            }));
        };
        // A failed round (collection or write) is retried at the next one. SIGTERM/Ctrl-C end
        // the process; the rename keeps the file whole whenever that is.
        let every = Duration::from_secs_f64(every);
        if sleep_unless_stopped(every.saturating_sub(round.elapsed())) {
            eprintln!("portdoctor: stopped");
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// After the full file could not be written: the file in DIR still holds the previous round's
/// numbers, which node_exporter would go on exporting as current. Replace it in place (no new
/// inode or second copy needed, so this works on a full disk) by a short one with
/// `portdoctor_collection_success 0` and the current time, else remove it. Says what happened.
fn withdraw_stale(dir: &Path, shared: &Shared) -> String {
    let dest = dir.join(TEXTFILE_NAME);
    let failed = Collection {
        result: None,
        duration_seconds: 0.0,
        timestamp_seconds: unix_now(),
    };
    let text = textfmt::to_classic(&metrics::render(&failed, &shared.counters, shared.metrics));
    let overwrite = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).truncate(true);
        // Never write through a symlink someone put in the directory.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
        let mut f = opts.open(&dest)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    match overwrite() {
        Ok(()) => format!(
            "{} now says portdoctor_collection_success 0",
            dest.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no previous file".to_string(),
        Err(e) => match std::fs::remove_file(&dest) {
            Ok(()) => format!(
                "removed the previous {} (cannot overwrite it either: {e})",
                dest.display()
            ),
            Err(e2) if e2.kind() == std::io::ErrorKind::NotFound => "no previous file".to_string(),
            Err(e2) => format!(
                "the previous {} stays (cannot overwrite it: {e}; nor remove it: {e2})",
                dest.display()
            ),
        },
    }
}

/// Writes DIR/portdoctor.prom through a temporary file in DIR and a rename, so node_exporter
/// never reads half a file (it ignores names not ending in .prom).
pub fn write_atomically(dir: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{TEXTFILE_NAME}.{}.tmp", std::process::id()));
    let dest = dir.join(TEXTFILE_NAME);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", dest.display())
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    request_timeout: Duration,
}

#[cfg(feature = "tls")]
type Tls = tokio_rustls::TlsAcceptor;
#[cfg(not(feature = "tls"))]
type Tls = Infallible;

#[cfg(feature = "tls")]
fn load_tls(web: &WebConfig) -> anyhow::Result<Option<Tls>> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let Some(cfg) = &web.tls_server_config else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading the certificate {}", cfg.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .with_context(|| format!("reading the private key {}", cfg.key_file.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the TLS certificate and key do not fit together")?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

#[cfg(not(feature = "tls"))]
#[allow(clippy::unnecessary_wraps)]
fn load_tls(_web: &WebConfig) -> anyhow::Result<Option<Tls>> {
    Ok(None)
}

async fn shutdown_signal() {
    tokio::select! {
        () = os_shutdown_signal() => {}
        () = STOP.notify.notified() => {}
    }
}

async fn os_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<Tls>,
    limits: Limits,
) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::from_std(listener).context("registering the listener")?;
    let table = conns::Table::new(limits.max_connections);
    let mut eviction_log = EvictionLog::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors: close idle connections to get some back. Otherwise
                // (a connection reset before accept, …) back off a bit instead of spinning.
                if out_of_descriptors(&e) {
                    table.evict_idle();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = table.admit() else {
            // Every slot is handling a request (each bounded by --request-timeout): close
            // at once rather than queue.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let evicted = table.take_evicted();
        eviction_log.add(evicted, limits.max_connections);
        let stream = conns::Tracked::new(stream, Arc::clone(slot.conn()));
        let shared = shared.clone();
        let stop_rx = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let conn = Arc::clone(slot.conn());
            let work = async {
                match tls {
                    None => {
                        serve_connection(TokioIo::new(stream), shared, &conn, limits, stop_rx)
                            .await;
                    }
                    #[cfg(feature = "tls")]
                    Some(acceptor) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(limits.header_timeout, acceptor.accept(stream))
                                .await
                        {
                            serve_connection(TokioIo::new(s), shared, &conn, limits, stop_rx).await;
                        }
                    }
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match never {},
                }
            };
            // Evicted (idle while the table was full): dropping the connection closes it.
            tokio::select! {
                () = work => {}
                () = conn.evicted() => {}
            }
            drop(slot);
        });
        if evicted > 0 {
            // Under a flood, let the connections just accepted read their requests (and so
            // become busy) before more arrivals push them towards the eviction end.
            tokio::task::yield_now().await;
        }
    }
    // Graceful: no new connections; open ones finish their request (bounded).
    drop(listener);
    let _ = stop_tx.send(true);
    let t0 = Instant::now();
    while table.len() > 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Says on stderr, at most once a minute, that the connection limit made room by closing
/// idle connections (a flood, or a limit too low for the scrapers).
#[derive(Default)]
struct EvictionLog {
    since_last: u64,
    last: Option<Instant>,
}

impl EvictionLog {
    fn add(&mut self, evicted: u64, max: usize) {
        self.since_last += evicted;
        if self.since_last == 0
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        eprintln!(
            "portdoctor: connection limit ({max}) reached: closed {} idle connections (least recently active first) to admit new ones{}",
            self.since_last,
            if self.last.is_some() { " in the last minute" } else { "" }
        );
        self.since_last = 0;
        self.last = Some(Instant::now());
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(windows)]
    {
        // WSAEMFILE
        e.raw_os_error() == Some(10024)
    }
}

/// Descriptors kept for everything but connections: the listener, the runtime, the netlink
/// sockets and /proc files of a collection, namespace handles, stdio.
#[cfg(target_os = "linux")]
const FD_RESERVE: u64 = 64;

/// How many connections the open-file limit allows, at most `want`. Like Go programs (since
/// 1.19) it first raises the soft `RLIMIT_NOFILE` towards the hard one when `want` needs it: a
/// soft limit of 1024 (systemd's default) below the cap would let a flood exhaust descriptors
/// before the cap is reached, and then accept() fails instead of closing idle connections.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // getrlimit/setrlimit(2) on a local struct
fn connections_the_fd_limit_allows(want: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return want;
    }
    let need = (want as u64).saturating_add(FD_RESERVE);
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < need {
        let raised = libc::rlimit {
            rlim_cur: need.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one needs no
        // privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= need {
        return want;
    }
    let fit = usize::try_from(lim.rlim_cur.saturating_sub(FD_RESERVE))
        .unwrap_or(want)
        .max(1);
    eprintln!(
        "portdoctor: warning: the open-file limit ({}) allows {fit} connections, not --max-connections {want}; raise it (ulimit -n, LimitNOFILE=) or lower --max-connections",
        lim.rlim_cur
    );
    fit
}

#[cfg(not(target_os = "linux"))]
fn connections_the_fd_limit_allows(want: usize) -> usize {
    want
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    shared: Arc<Shared>,
    conn: &Arc<conns::Conn>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::clone(conn);
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        // Not evicted while a request is handled.
        let busy = conn.busy();
        async move {
            let _busy = busy;
            let resp =
                match tokio::time::timeout(limits.request_timeout, handle(&shared, &req)).await {
                    Ok(r) => r,
                    Err(_) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "collection took longer than --request-timeout\n",
                    ),
                };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Headers beyond 16 KiB get 431; scrapers send well under 1 KiB.
        .max_buf_size(16 * 1024)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        r = stop.wait_for(|s| *s) => r.is_ok(),
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

const INDEX: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>portdoctor exporter</title></head>\n<body><h1>portdoctor exporter</h1>\n<p>TCP ephemeral-port pools as Prometheus metrics.</p>\n<ul><li><a href=\"metrics\">metrics</a></li><li><a href=\"healthz\">healthz</a></li></ul>\n</body></html>\n";

async fn handle(shared: &Arc<Shared>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // Liveness probes need no credentials; it tells nothing about the host.
    if path == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    if shared.web.auth_required() && !authorized(shared, req).await {
        let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portdoctor\""),
        );
        return r;
    }
    match path {
        "/" => {
            let mut r = Response::new(Full::new(Bytes::from_static(INDEX.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        "/metrics" => {
            // A detached task: if this request times out, the collection still completes and
            // fills the cache, and the lock is not given up halfway.
            let s = shared.clone();
            let Ok(cached) = tokio::spawn(async move { current_metrics(&s).await }).await else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "collection failed\n");
            };
            let openmetrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.contains("application/openmetrics-text"))
            });
            let (body, ctype) = if openmetrics {
                (cached.openmetrics, metrics::CONTENT_TYPE)
            } else {
                (cached.classic, textfmt::CONTENT_TYPE)
            };
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
}

async fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    if shared
        .auth_ok
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .any(|ok| ok == value)
    {
        return true;
    }
    let Some((user, pass)) = webconfig::parse_basic(value) else {
        return false;
    };
    let Ok(_slot) = shared.bcrypt_slots.acquire().await else {
        return false;
    };
    let web = shared.web.clone();
    let ok = tokio::task::spawn_blocking(move || webconfig::verify(&web, &user, &pass))
        .await
        .unwrap_or(false);
    if ok {
        let mut cache = shared
            .auth_ok
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push(value.to_vec());
    }
    ok
}

/// The cached metrics if younger than --min-interval, else a fresh collection. Concurrent
/// callers queue on the cache lock and all get the one collection the first of them started.
async fn current_metrics(shared: &Shared) -> Cached {
    let mut cache = shared.cache.lock().await;
    if let Some(c) = cache.as_ref() {
        if c.at.elapsed() < shared.min_interval {
            return c.clone();
        }
    }
    let collector = shared.collector.clone();
    let thresholds = shared.thresholds;
    let mopts = shared.metrics;
    let counters = shared.counters.clone();
    let job = tokio::task::spawn_blocking(move || {
        let (om, error) = collect_and_render(&collector, thresholds, mopts, &counters);
        let classic = textfmt::to_classic(&om);
        (om, classic, error)
    });
    let fresh = if let Ok((om, classic, error)) = job.await {
        if let Some(e) = error {
            eprintln!("portdoctor: collecting: {e}");
        }
        Cached {
            at: Instant::now(),
            openmetrics: Bytes::from(om),
            classic: Bytes::from(classic),
        }
    } else {
        shared.counters.collection_errors.inc();
        let om = "# collection task failed\n# EOF\n".to_string();
        Cached {
            at: Instant::now(),
            classic: Bytes::from(textfmt::to_classic(&om)),
            openmetrics: Bytes::from(om),
        }
    };
    *cache = Some(fresh.clone());
    fresh
}
