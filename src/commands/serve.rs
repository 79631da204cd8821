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
use std::sync::{Arc, Mutex, PoisonError};
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
use portdoctor::collect::{self, Collector};
use portdoctor::serve::metrics::{self, Collection, ExporterCounters, MetricsOptions};
use portdoctor::serve::textfmt;
use portdoctor::serve::webconfig::{self, WebConfig};

use super::EXIT_COLLECT;
use crate::cli::ServeArgs;

/// The most `--max-connections` may ask for.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// The file written by `--textfile DIR`.
pub const TEXTFILE_NAME: &str = "portdoctor.prom";

/// What every request handler shares.
struct Shared {
    collector: Arc<dyn Collector>,
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

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
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
    // More than a process could hold open (and tokio's semaphore has a ceiling).
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
    let collector: Arc<dyn Collector> = Arc::from(collect::native(opts)?);
    let shared = Shared {
        collector,
        thresholds,
        metrics: MetricsOptions {
            max_pools: args.max_pools,
        },
        min_interval: Duration::from_secs_f64(args.min_interval),
        // Failed connect()/bind() calls of the target's namespace, traced while serve runs.
        counters: ExporterCounters {
            failures: portdoctor::serve::failures::start(&target, args.max_pools),
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
        Err(e) => return usage_error(&format!("--web-config: {e:#}")),
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
        max_connections: args.max_connections,
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

/// One collection, analysis and rendering (blocking: run it off the event loop).
fn collect_and_render(
    collector: &dyn Collector,
    thresholds: Thresholds,
    mopts: MetricsOptions,
    counters: &ExporterCounters,
) -> (String, Option<String>) {
    let t0 = Instant::now();
    counters.collections.inc();
    let result = collector.snapshot().map(|snap| {
        let a = analyze(&snap, thresholds);
        (snap, a)
    });
    let error = result.as_ref().err().map(ToString::to_string);
    if error.is_some() {
        counters.collection_errors.inc();
    }
    let collection = Collection {
        result: result.as_ref().ok().map(|(s, a)| (s, a)),
        duration_seconds: t0.elapsed().as_secs_f64(),
        timestamp_seconds: unix_now(),
    };
    (metrics::render(&collection, counters, mopts), error)
}

// ---------------------------------------------------------------------------------------------
// Textfile mode
// ---------------------------------------------------------------------------------------------

fn textfile(shared: &Shared, dir: &Path, interval: Option<f64>) -> anyhow::Result<ExitCode> {
    loop {
        let (text, error) = collect_and_render(
            shared.collector.as_ref(),
            shared.thresholds,
            shared.metrics,
            &shared.counters,
        );
        write_atomically(dir, &textfmt::to_classic(&text))?;
        if let Some(e) = &error {
            eprintln!("portdoctor: error: collecting: {e}");
        }
        match interval {
            None => {
                return Ok(ExitCode::from(if error.is_some() {
                    EXIT_COLLECT
                } else {
                    0
                }));
            }
            // SIGTERM/Ctrl-C end the process; the rename keeps the file whole whenever that is.
            Some(s) => std::thread::sleep(Duration::from_secs_f64(s)),
        }
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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _peer)) = accepted else {
            // Out of file descriptors or a connection reset before accept: back off a bit
            // instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: close at once rather than queue (the header timeout frees slots).
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stop_rx = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(TokioIo::new(stream), shared, limits, stop_rx).await,
                #[cfg(feature = "tls")]
                Some(acceptor) => {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        serve_connection(TokioIo::new(s), shared, limits, stop_rx).await;
                    }
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
            }
        });
    }
    // Graceful: no new connections; open ones finish their request (bounded).
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), slots.acquire_many(all)).await;
    Ok(())
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    shared: Arc<Shared>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move {
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
    let collector = Arc::clone(&shared.collector);
    let thresholds = shared.thresholds;
    let mopts = shared.metrics;
    let counters = shared.counters.clone();
    let job = tokio::task::spawn_blocking(move || {
        let (om, error) = collect_and_render(collector.as_ref(), thresholds, mopts, &counters);
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
