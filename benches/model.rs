//! Criterion benchmarks of the pure part of `portdoctor check`: the pool model
//! (`analysis::analyze`), the JSON report (`report::json::render`) and the snapshot file
//! (`snapshot::file`: what `check --save` and `--load` add) on synthetic snapshots built in
//! memory, so no root, namespace or kernel is involved (bench/check.sh measures the whole command
//! against `ss` and a raw netlink dump, bench/save.sh the whole `check --save`).
//!
//! Run: `cargo bench --bench model` (about a minute). Quick look: `cargo bench --bench model --
//! --quick`. Only one size: `cargo bench --bench model -- 300k`.
//!
//! The population mimics a busy client host under port pressure:
//! - 4 local addresses × 250 destinations (5 servers × 50 ports) = 1,000 destination pools, plus
//!   one pool kept at ~92% of the range (26,000 sockets) so findings and fixes are rendered;
//! - one local address with a bind()-before-connect pattern over 8 destinations (2,000 sockets),
//!   so the per-local-address detection runs on real data;
//! - 80% TIME_WAIT (ages spread over the 60 s), the rest ESTABLISHED, half of those inbound to
//!   40 listeners (wildcard and exact addresses, some inside the ephemeral range).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portdoctor::analysis::{analyze, Thresholds};
use portdoctor::report::json;
use portdoctor::snapshot::{
    file, Os, Owners, PortRange, Settings, Snapshot, Socket, SocketSource, TcpState, ValueSource,
};

/// The Linux default range: 28,232 ports per pool.
const RANGE: (u16, u16) = (32768, 60999);
const HOT_POOL_SOCKETS: usize = 26_000;
const BIND_STYLE_SOCKETS: usize = 2_000;
const LISTENERS: u16 = 40;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn settings() -> Settings {
    Settings {
        ephemeral_ports: PortRange::new(RANGE.0, RANGE.1),
        reserved_ports: vec![PortRange::new(40000, 40009).expect("valid range")],
        time_wait_seconds: Some(60),
        time_wait_source: Some(ValueSource::Default),
        // The kernel default: reuse only for loopback, so these (non-loopback) pools block.
        tw_reuse: Some(2),
        tw_reuse_delay_ms: Some(1000),
        tw_reuse_delay_source: Some(ValueSource::Read),
        max_tw_buckets: Some(262_144),
        tcp_timestamps: Some(1),
        fin_timeout_seconds: Some(60),
    }
}

/// A client-side socket in `state`; TIME_WAIT gets a random remaining lifetime.
fn client(
    rng: &mut Rng,
    state: TcpState,
    local: IpAddr,
    port: u16,
    remote: IpAddr,
    rport: u16,
) -> Socket {
    let tw = state == TcpState::TimeWait;
    Socket {
        state,
        local_ip: local,
        local_port: port,
        remote_ip: remote,
        remote_port: rport,
        time_wait_left_ms: tw.then(|| rng.below(60_000) as u32),
        inode: if tw { 0 } else { 100_000 + rng.below(1 << 30) },
        uid: Some(1000),
        pid: None,
    }
}

/// Builds a snapshot of about `n` sockets (`n` ≥ 40,000).
fn snapshot(n: usize) -> Snapshot {
    assert!(n >= 40_000, "the fixed pools need at least 40k sockets");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let mut sockets = Vec::with_capacity(n);
    let server = |i: u16| v4(10, 1, (i / 250) as u8, (i % 250) as u8 + 1);

    // Listeners: half on 0.0.0.0, half on one address; a few ports inside the range.
    for i in 0..LISTENERS {
        let port = if i % 10 == 0 {
            RANGE.0 + 100 + i
        } else {
            8000 + i
        };
        let ip = if i % 2 == 0 {
            v4(0, 0, 0, 0)
        } else {
            v4(10, 0, 0, 1)
        };
        sockets.push(Socket {
            state: TcpState::Listen,
            local_ip: ip,
            local_port: port,
            remote_ip: v4(0, 0, 0, 0),
            remote_port: 0,
            time_wait_left_ms: None,
            inode: 10_000 + u64::from(i),
            uid: Some(0),
            pid: None,
        });
    }

    // The hot pool: 10.0.0.1 → 10.2.0.1:5432, mostly TIME_WAIT.
    let hot_dst = v4(10, 2, 0, 1);
    for k in 0..HOT_POOL_SOCKETS {
        let state = if k % 20 == 0 {
            TcpState::Established
        } else {
            TcpState::TimeWait
        };
        let port = RANGE.0 + (k as u16);
        sockets.push(client(
            &mut rng,
            state,
            v4(10, 0, 0, 1),
            port,
            hot_dst,
            5432,
        ));
    }

    // bind()-before-connect from 10.0.0.9: ports unique across its 8 destinations, all of the
    // parity bind() prefers (opposite to the range start's).
    for k in 0..BIND_STYLE_SOCKETS {
        let port = RANGE.0 + 1 + 2 * (k as u16);
        let dst = server(k as u16 % 8);
        sockets.push(client(
            &mut rng,
            TcpState::TimeWait,
            v4(10, 0, 0, 9),
            port,
            dst,
            443,
        ));
    }

    // Inbound ESTABLISHED to the listeners: 10% of the rest.
    let rest = n - sockets.len();
    for k in 0..rest / 10 {
        let i = (k % usize::from(LISTENERS)) as u16;
        let lport = if i % 10 == 0 {
            RANGE.0 + 100 + i
        } else {
            8000 + i
        };
        let peer = v4(192, 168, (k / 60_000) as u8, (k % 250) as u8 + 1);
        sockets.push(Socket {
            state: TcpState::Established,
            local_ip: v4(10, 0, 0, 1),
            local_port: lport,
            remote_ip: peer,
            remote_port: 1024 + (k % 60_000) as u16,
            time_wait_left_ms: None,
            inode: 500_000_000 + k as u64,
            uid: Some(0),
            pid: None,
        });
    }

    // 1,000 ordinary pools: 4 local addresses × 5 servers × 50 ports; 90% TIME_WAIT.
    let pools = 1000;
    let mut next_port = vec![RANGE.0; pools];
    let mut k = 0usize;
    while sockets.len() < n {
        let p = k % pools;
        let local = v4(10, 0, 0, 1 + (p % 4) as u8);
        let dst = server(((p / 4) % 5) as u16);
        let rport = 6000 + (p / 20) as u16;
        let state = if rng.below(10) == 0 {
            TcpState::Established
        } else {
            TcpState::TimeWait
        };
        sockets.push(client(&mut rng, state, local, next_port[p], dst, rport));
        next_port[p] += 1;
        k += 1;
    }

    let mut snap = Snapshot::empty(Os::Linux);
    snap.source = SocketSource::Fixture;
    snap.taken_at_unix_ms = 1_790_000_000_000;
    snap.settings = settings();
    snap.sockets = sockets.into();
    snap
}

fn bench_model(c: &mut Criterion) {
    for (label, n) in [("100k", 100_000), ("300k", 300_000)] {
        let snap = snapshot(n);
        let thresholds = Thresholds::default();
        let analysis = analyze(&snap, thresholds);
        assert!(
            analysis.pools.len() > 1000,
            "expected ~1,000 pools, got {}",
            analysis.pools.len()
        );
        assert!(
            !analysis.bind_before_connect.is_empty(),
            "bind pattern not detected"
        );
        assert!(
            !analysis.verdict.findings.is_empty(),
            "hot pool should give findings"
        );

        let mut g = c.benchmark_group(format!("model/{label}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(snap.sockets.len() as u64));
        g.bench_function("analyze", |b| {
            b.iter(|| analyze(black_box(&snap), black_box(thresholds)));
        });
        // `check --json` renders every pool (top = None).
        g.bench_function("render_json", |b| {
            b.iter(|| json::render(black_box(&snap), black_box(&analysis), None));
        });
        g.bench_function("analyze+render_json", |b| {
            b.iter(|| {
                let a = analyze(black_box(&snap), thresholds);
                json::render(&snap, &a, None)
            });
        });
        g.finish();
    }
}

/// `check --save` and `--load` on top of `check`: the snapshot file written to a temporary file
/// (serialize + write, as `file::save` does) and parsed back, with owners for every socket that
/// has an inode (4 processes).
fn bench_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (label, n) in [("100k", 100_000), ("300k", 300_000)] {
        let mut snap = snapshot(n);
        let mut owners = Owners::default();
        for pid in 1..=4u32 {
            owners.processes.insert(pid, format!("worker-{pid}"));
        }
        for s in snap.sockets.iter().filter(|s| s.inode != 0) {
            owners.by_inode.insert(s.inode, 1 + (s.inode % 4) as u32);
        }
        snap.owners = Some(owners.into());
        let bytes = file::to_vec(&snap);
        eprintln!(
            "snapshot file, {label}: {} bytes, {:.1} bytes per socket",
            bytes.len(),
            bytes.len() as f64 / snap.sockets.len() as f64
        );
        let path = dir.path().join(format!("{label}.json"));

        let mut g = c.benchmark_group(format!("file/{label}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(snap.sockets.len() as u64));
        g.bench_function("save", |b| {
            b.iter(|| file::save(black_box(&snap), &path).expect("save"));
        });
        g.bench_function("load", |b| {
            b.iter(|| file::from_slice(black_box(&bytes), &path).expect("load"));
        });
        g.finish();
    }
}

criterion_group!(benches, bench_model, bench_file);
criterion_main!(benches);
