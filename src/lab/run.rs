//! The experiment: inside the lab's own namespace, a loopback server, a paced client and a
//! sampler that looks at the pools exactly as `check` does. Every loop is bounded by the
//! configured duration (plus a fixed grace) and stops on SIGINT/SIGTERM.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::sys::{self, LabNamespace};
use super::{
    compare, prediction, server_ports, LabConfig, LabError, LabReport, Latency, Observed,
    PoolSample, Second, SCHEMA,
};
use crate::analysis::{analyze, Thresholds};
use crate::collect::linux::LinuxCollector;
use crate::collect::{Collector, SourcePreference};

/// How often the sampler takes a snapshot.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Extra time any loop may run past the configured duration before it gives up.
const GRACE: Duration = Duration::from_secs(3);
use crate::collect::linux::failures::{FailureTracer, DRAIN_EVERY};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Counts this process's failed connect()/bind() calls until `done`, then drains once more
/// (the last samples may still be in flight).
fn trace_own_failures(mut t: FailureTracer, done: &AtomicBool) -> u64 {
    let me = std::process::id();
    let mut n = 0u64;
    let count = |t: &mut FailureTracer| t.drain().iter().filter(|f| f.pid == me).count() as u64;
    while !done.load(Ordering::Relaxed) {
        thread::sleep(DRAIN_EVERY);
        n += count(&mut t);
    }
    thread::sleep(Duration::from_millis(100));
    n + count(&mut t)
}

/// Creates the namespace, runs the experiment inside it, removes it, and reports.
/// `progress` gets one line per second (for a human watching).
pub fn run(cfg: &LabConfig, mut progress: impl FnMut(&Second)) -> Result<LabReport, LabError> {
    cfg.validate()?;
    sys::install_signal_handlers()?;
    let mut ns = LabNamespace::create()?;
    let result = experiment(&ns, cfg, &mut progress);
    let removed = ns.remove();
    let mut report = result?;
    report.namespace_removed = removed;
    Ok(report)
}

fn experiment(
    ns: &LabNamespace,
    cfg: &LabConfig,
    progress: &mut dyn FnMut(&Second),
) -> Result<LabReport, LabError> {
    ns.verify()?;
    ns.sysctl(
        "net.ipv4.ip_local_port_range",
        &format!("{} {}", cfg.range.low, cfg.range.high),
    )?;
    ns.sysctl("net.ipv4.tcp_tw_reuse", &cfg.tw_reuse.to_string())?;
    ns.sysctl("net.ipv4.tcp_timestamps", "1")?;
    let delay_ms: u32 = ns
        .read_sysctl("net.ipv4.tcp_tw_reuse_delay")
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::rules::TW_REUSE_DELAY_MS);
    let model = prediction(cfg, f64::from(delay_ms) / 1000.0);
    let ports = server_ports(cfg);
    let listeners = ports
        .iter()
        .map(|&p| {
            let l =
                TcpListener::bind(SocketAddrV4::new(LOCALHOST, p)).map_err(|e| LabError::Os {
                    what: format!("listening on 127.0.0.1:{p} in the lab namespace"),
                    source: e,
                })?;
            l.set_nonblocking(true).map_err(|e| LabError::Os {
                what: "making the listener non-blocking".into(),
                source: e,
            })?;
            Ok(l)
        })
        .collect::<Result<Vec<_>, LabError>>()?;

    let start = Instant::now();
    let hard_end = start + Duration::from_secs_f64(cfg.duration_s) + GRACE;
    let done = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<PoolSample>>> = Arc::default();

    let server = {
        let done = Arc::clone(&done);
        let closes_first = cfg.server_closes_first;
        thread::Builder::new()
            .name("lab-server".into())
            .spawn(move || serve(&listeners, closes_first, &done, hard_end))
            .map_err(|e| LabError::Os {
                what: "starting the server thread".into(),
                source: e,
            })?
    };
    let sampler = {
        let done = Arc::clone(&done);
        let samples = Arc::clone(&samples);
        let ports = ports.clone();
        thread::Builder::new()
            .name("lab-sampler".into())
            .spawn(move || sample(&ports, start, &done, hard_end, &samples))
            .map_err(|e| LabError::Os {
                what: "starting the sampler thread".into(),
                source: e,
            })?
    };

    let tracer = FailureTracer::start().map(|t| {
        let done = Arc::clone(&done);
        thread::spawn(move || trace_own_failures(t, &done))
    });
    let outcome = client(cfg, &ports, start, hard_end, &samples, progress);
    done.store(true, Ordering::Relaxed);
    let _ = server.join();
    let _ = sampler.join();
    let (seconds, mut observed) = outcome;
    match tracer {
        Ok(h) => observed.traced_failures = h.join().ok(),
        Err(e) => observed.tracing_note = Some(e.to_string()),
    }
    let pool_samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let comparison = compare(model.onset_s, observed.onset_s);
    Ok(LabReport {
        schema: SCHEMA,
        namespace: ns.name.clone(),
        namespace_removed: false,
        kernel: ns.read_sysctl("kernel.osrelease"),
        config: cfg.clone(),
        server_ports: ports,
        tw_reuse_delay_ms: delay_ms,
        model,
        observed,
        comparison,
        seconds,
        pool_samples,
        chart: None,
    })
}

/// Accepts on every listener; closes at once (server closes first) or reads until EOF and
/// closes, echoing what arrives (keep-alive requests).
fn serve(listeners: &[TcpListener], closes_first: bool, done: &AtomicBool, hard_end: Instant) {
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 64];
    while !done.load(Ordering::Relaxed) && Instant::now() < hard_end {
        let mut busy = false;
        for l in listeners {
            // Bounded per round so one busy listener cannot starve the rest.
            for _ in 0..256 {
                match l.accept() {
                    Ok((s, _)) => {
                        busy = true;
                        if closes_first {
                            drop(s);
                        } else if s.set_nonblocking(true).is_ok()
                            && conns.len() < super::limits::MAX_OPEN_SOCKETS * 2
                        {
                            conns.push(s);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        conns.retain_mut(|s| match s.read(&mut buf) {
            Ok(0) => {
                busy = true;
                false
            }
            Ok(n) => {
                busy = true;
                s.write_all(&buf[..n]).is_ok()
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            Err(_) => false,
        });
        if !busy {
            thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Every [`SAMPLE_EVERY`]: one snapshot of the namespace through the same collector and model
/// as `check`, reduced to the pools that lead to the lab's server ports.
fn sample(
    ports: &[u16],
    start: Instant,
    done: &AtomicBool,
    hard_end: Instant,
    out: &Mutex<Vec<PoolSample>>,
) {
    // The sampler thread inherited the lab's namespace: collect where it stands.
    let collector = LinuxCollector::here(SourcePreference::Netlink, false);
    let mut next = start;
    while !done.load(Ordering::Relaxed) && Instant::now() < hard_end {
        let now = Instant::now();
        if now < next {
            thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += SAMPLE_EVERY;
        let t = start.elapsed().as_secs_f64();
        let Ok(snap) = collector.snapshot() else {
            continue;
        };
        let a = analyze(&snap, Thresholds::default());
        let ours: Vec<_> = a
            .pools
            .iter()
            .filter(|p| {
                p.key.remote_port.is_none_or(|rp| ports.contains(&rp))
                    && p.key.local_ip.is_loopback()
            })
            .collect();
        let dest = ours
            .iter()
            .filter(|p| p.scope == crate::analysis::Scope::Destination);
        let in_use = dest.clone().map(|p| p.in_use).sum();
        let time_wait = dest.map(|p| p.time_wait).sum();
        // Pools are sorted fullest first.
        let top = ours.first();
        let s = PoolSample {
            t,
            in_use,
            time_wait,
            used: top.map_or(0, |p| p.used()),
            capacity: top.and_then(|p| p.capacity),
            utilization: top.and_then(|p| p.utilization),
            scope: top.map(|p| p.scope),
            pools: ours.len(),
        };
        out.lock().unwrap_or_else(PoisonError::into_inner).push(s);
    }
}

#[derive(Default)]
struct Bucket {
    attempts: u64,
    connects: u64,
    requests: u64,
    eaddrnotavail: u64,
    eaddrinuse: u64,
    other: u64,
    latencies: Vec<u64>,
}

struct ClientState {
    buckets: Vec<Bucket>,
    onset: Option<f64>,
    first_failure: Option<String>,
    other_example: Option<String>,
}

impl ClientState {
    fn bucket(&mut self, t: f64) -> &mut Bucket {
        let i = (t.max(0.0) as usize).min(self.buckets.len() - 1);
        &mut self.buckets[i]
    }

    fn record_error(&mut self, t: f64, e: &std::io::Error, latency_us: u64) {
        let b = self.bucket(t);
        b.attempts += 1;
        b.latencies.push(latency_us);
        let port_failure = match e.raw_os_error() {
            Some(libc::EADDRNOTAVAIL) => {
                b.eaddrnotavail += 1;
                true
            }
            Some(libc::EADDRINUSE) => {
                b.eaddrinuse += 1;
                true
            }
            _ => {
                b.other += 1;
                false
            }
        };
        if port_failure && self.onset.is_none() {
            self.onset = Some(t);
            self.first_failure = Some(match e.raw_os_error() {
                Some(libc::EADDRINUSE) => format!("EADDRINUSE from bind(): {e}"),
                _ => format!("EADDRNOTAVAIL from connect(): {e}"),
            });
        }
        if !port_failure && self.other_example.is_none() {
            self.other_example = Some(e.to_string());
        }
    }
}

/// Opens connections on schedule; returns the per-second record and the totals.
#[allow(clippy::many_single_char_names)]
fn client(
    cfg: &LabConfig,
    ports: &[u16],
    start: Instant,
    hard_end: Instant,
    samples: &Mutex<Vec<PoolSample>>,
    progress: &mut dyn FnMut(&Second),
) -> (Vec<Second>, Observed) {
    let secs = cfg.duration_s.ceil() as usize;
    let mut st = ClientState {
        buckets: (0..secs.max(1)).map(|_| Bucket::default()).collect(),
        onset: None,
        first_failure: None,
        other_example: None,
    };
    let dests: Vec<SocketAddrV4> = ports
        .iter()
        .map(|&p| SocketAddrV4::new(LOCALHOST, p))
        .collect();
    let bind_from = cfg
        .bind_before_connect
        .then(|| SocketAddrV4::new(LOCALHOST, 0));
    let lifetime = Duration::from_secs_f64(cfg.lifetime_s);
    let mut held: std::collections::VecDeque<(Instant, TcpStream)> =
        std::collections::VecDeque::new();
    let mut keep: Vec<Option<TcpStream>> = dests.iter().map(|_| None).collect();
    let mut stop_reason = None;
    let mut reported = 0usize;
    let mut i: u64 = 0;
    loop {
        let due = cfg.due_at(i);
        if due >= cfg.duration_s {
            break;
        }
        if sys::stop_requested() {
            stop_reason = Some("interrupted by SIGINT/SIGTERM".to_string());
            break;
        }
        if Instant::now() >= hard_end {
            stop_reason = Some("the client fell too far behind its schedule".to_string());
            break;
        }
        let due_at = start + Duration::from_secs_f64(due);
        // Close what has lived long enough while waiting.
        loop {
            let now = Instant::now();
            while held.front().is_some_and(|(d, _)| *d <= now) {
                held.pop_front();
            }
            if now >= due_at {
                break;
            }
            let wake = held.front().map_or(due_at, |(d, _)| (*d).min(due_at));
            thread::sleep(
                wake.saturating_duration_since(now)
                    .min(Duration::from_millis(20)),
            );
        }
        // Per-second progress, once a second has passed.
        let now_s = start.elapsed().as_secs_f64() as usize;
        while reported < now_s.min(st.buckets.len()) {
            progress(&second(cfg, &mut st.buckets[reported], reported, samples));
            reported += 1;
        }
        let d = (i % dests.len() as u64) as usize;
        let t = start.elapsed().as_secs_f64();
        if cfg.keepalive {
            if keep[d].is_none() {
                let t0 = Instant::now();
                match sys::connect(dests[d], None) {
                    Ok(s) => {
                        let b = st.bucket(t);
                        b.connects += 1;
                        b.latencies.push(t0.elapsed().as_micros() as u64);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        keep[d] = Some(s);
                    }
                    Err(e) => st.record_error(t, &e, t0.elapsed().as_micros() as u64),
                }
            }
            if let Some(s) = keep[d].as_mut() {
                let mut b1 = [0u8; 1];
                let ok = s.write_all(b"x").is_ok() && s.read_exact(&mut b1).is_ok();
                let b = st.bucket(t);
                b.attempts += 1;
                if ok {
                    b.requests += 1;
                } else {
                    b.other += 1;
                    keep[d] = None;
                }
            }
        } else {
            let t0 = Instant::now();
            match sys::connect(dests[d], bind_from) {
                Ok(s) => {
                    let lat = t0.elapsed().as_micros() as u64;
                    let b = st.bucket(t);
                    b.attempts += 1;
                    b.connects += 1;
                    b.latencies.push(lat);
                    if cfg.server_closes_first {
                        // Read to EOF (the server's FIN), then close: no TIME_WAIT here.
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut sink = [0u8; 16];
                        let mut s = s;
                        for _ in 0..16 {
                            match s.read(&mut sink) {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {}
                            }
                        }
                    } else if lifetime.is_zero() {
                        drop(s);
                    } else if held.len() < super::limits::MAX_OPEN_SOCKETS {
                        held.push_back((Instant::now() + lifetime, s));
                    } else {
                        stop_reason = Some(format!(
                            "more than {} sockets held open (limit)",
                            super::limits::MAX_OPEN_SOCKETS
                        ));
                        break;
                    }
                }
                Err(e) => st.record_error(t, &e, t0.elapsed().as_micros() as u64),
            }
        }
        i += 1;
    }
    drop(held);
    drop(keep);
    // Let the sampler see the last second.
    let end = start + Duration::from_secs_f64(cfg.duration_s);
    while Instant::now() < end && !sys::stop_requested() {
        thread::sleep(Duration::from_millis(20));
    }
    let mut seconds = Vec::new();
    for idx in 0..st.buckets.len() {
        let s = second(cfg, &mut st.buckets[idx], idx, samples);
        if idx >= reported {
            progress(&s);
        }
        seconds.push(s);
    }
    let attempts = seconds.iter().map(|s| s.attempts).sum();
    let observed = Observed {
        onset_s: st.onset,
        first_failure: st.first_failure,
        attempts,
        connects: seconds.iter().map(|s| s.connects).sum(),
        failures: seconds.iter().map(Second::failures).sum(),
        other_errors: seconds.iter().map(|s| s.other_errors).sum(),
        completed: stop_reason.is_none(),
        stop_reason,
        other_error_example: st.other_example,
        traced_failures: None,
        tracing_note: None,
    };
    (seconds, observed)
}

fn second(cfg: &LabConfig, b: &mut Bucket, idx: usize, samples: &Mutex<Vec<PoolSample>>) -> Second {
    let t = idx as f64;
    let pool = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .rfind(|s| s.t >= t && s.t < t + 1.0)
        .cloned();
    Second {
        t: idx as u32,
        target_rate: cfg.rate_at(t + 0.5),
        attempts: b.attempts,
        connects: b.connects,
        requests: b.requests,
        eaddrnotavail: b.eaddrnotavail,
        eaddrinuse: b.eaddrinuse,
        other_errors: b.other,
        connect_latency: Latency::of(&mut b.latencies),
        pool,
    }
}
