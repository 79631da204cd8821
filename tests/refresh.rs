//! The refresher behind `top` against real kernel sockets: it reuses a dump only while the
//! kernel's state counters stand still, and what it returns then equals a fresh full dump.
//! Needs root (network namespaces); `PORTDOCTOR_SKIP_NETNS=1` skips.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{socket_key, socket_table, Netns, SocketKey};
use portdoctor::collect::refresh::{Policy, RefreshInfo, Refresher};
use portdoctor::collect::{self, CollectOptions, Target};
use portdoctor::snapshot::{Snapshot, TcpState};

fn table(s: &Snapshot) -> Vec<SocketKey> {
    socket_table(&s.sockets)
}

/// TIME_WAIT timers by 4-tuple.
fn timers(s: &Snapshot) -> BTreeMap<SocketKey, u32> {
    s.sockets
        .iter()
        .filter_map(|x| x.time_wait_left_ms.map(|t| (socket_key(x), t)))
        .collect()
}

fn fresh(ns: &str) -> Snapshot {
    let opts = CollectOptions {
        target: Target::Netns(ns.to_string()),
        ..CollectOptions::default()
    };
    collect::native(opts)
        .and_then(|c| c.snapshot())
        .expect("full snapshot")
}

#[test]
fn refresher_reuses_dumps_only_while_state_counters_stand_still() {
    if !common::require_root("refresher_reuses_dumps_only_while_state_counters_stand_still") {
        return;
    }
    let ns = Netns::new("refresh");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40999");
    // A bound-only socket: found by full dumps only, carried over by the partial ones. Bound
    // first and outside the range, so no connection of the population can hold its port.
    let mut bound = ns.python_bound(&[("127.0.0.1", 30600)]);
    let mut pop = ns.sockpop(&[
        "--ports",
        "20000-20001",
        "--dst",
        "127.0.0.1",
        "--established",
        "40",
    ]);
    let name = ns.name.clone();
    let my_pid = std::process::id();
    // setns() moves only the calling thread; the collector reads /proc/thread-self/net.
    thread::spawn(move || {
        let opts = CollectOptions {
            target: Target::Netns(name.clone()),
            owners: true,
            ..CollectOptions::default()
        };
        let collector = collect::native(opts).expect("collector");
        // Every owner scan allowed (no pacing) and dumps reused for up to a minute, so what
        // decides is only whether the counters moved.
        let policy = Policy {
            max_reuse: Duration::from_secs(60),
            owner_budget: 1.0,
            owner_min_gap: Duration::ZERO,
            ..Policy::default()
        };
        let mut r = Refresher::new(collector, true, policy);
        let refresh = |r: &mut Refresher| -> (Snapshot, RefreshInfo) {
            r.refresh(Instant::now()).expect("refresh")
        };

        let (first, info) = refresh(&mut r);
        assert!(info.dumped && info.owners_scanned, "{info:?}");
        // 2 listeners + 40 × 2 established ends + 1 bound-only.
        assert_eq!(first.sockets.len(), 83, "{:?}", table(&first));
        assert_eq!(table(&first), table(&fresh(&name)));
        let owners = first.owners.as_ref().expect("owners");
        assert!(first
            .sockets
            .iter()
            .all(|s| owners.by_inode.contains_key(&s.inode)));

        // Nothing changed: the dump is reused and equals a new one.
        thread::sleep(Duration::from_millis(100));
        let (second, info) = refresh(&mut r);
        assert!(!info.dumped && !info.owners_scanned, "{info:?}");
        assert_eq!(table(&second), table(&fresh(&name)));
        assert_eq!(second.owners, first.owners);

        // A new connection (listener, two ends) moves the counters: dumped (without the
        // bound-only walk, whose socket is carried over), owners scanned.
        let listener = TcpListener::bind("127.0.0.1:30000").expect("listen");
        let mut client = TcpStream::connect("127.0.0.1:30000").expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let (third, info) = refresh(&mut r);
        assert!(info.dumped && info.owners_scanned, "{info:?}");
        assert_eq!(third.sockets.len(), 86);
        assert_eq!(table(&third), table(&fresh(&name)));
        let mine = third
            .sockets
            .iter()
            .filter(|s| s.local_port == 30000 || s.remote_port == 30000)
            .map(|s| third.owners.as_ref().and_then(|o| o.by_inode.get(&s.inode)))
            .collect::<Vec<_>>();
        assert_eq!(
            mine,
            vec![Some(&my_pid); 3],
            "the test owns the new sockets"
        );

        // Traffic alone moves packet counters, not state counters: no dump needed.
        client.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).expect("read");
        let (fourth, info) = refresh(&mut r);
        assert!(!info.dumped, "traffic forced a dump: {info:?}");
        assert_eq!(table(&fourth), table(&fresh(&name)));

        // The client closes first: its end goes to TIME_WAIT (a state change, dumped).
        drop(client);
        thread::sleep(Duration::from_millis(50));
        drop(server);
        let tw_seen = common::wait_until(Duration::from_secs(5), || {
            let (s, info) = refresh(&mut r);
            // Settled: only the listener and the client's TIME_WAIT are left on port 30000.
            let mut ours: Vec<TcpState> = s
                .sockets
                .iter()
                .filter(|x| x.local_port == 30000 || x.remote_port == 30000)
                .map(|x| x.state)
                .collect();
            ours.sort_unstable_by_key(|st| *st as u8);
            let settled = ours.len() == 2 && ours.contains(&TcpState::TimeWait);
            (info.dumped && settled).then_some(s)
        });
        let mut fifth = tw_seen.expect("the closed connection's TIME_WAIT was never dumped");
        // A late state change (the server's LAST_ACK → CLOSE) may force one more dump: the
        // baseline is the last dump before a refresh that reuses.
        let settled = common::wait_until(Duration::from_secs(5), || {
            let (s, info) = refresh(&mut r);
            if info.dumped {
                fifth = s;
                None
            } else {
                Some(())
            }
        });
        assert!(
            settled.is_some(),
            "every refresh dumped although nothing changed"
        );

        // Reused later: TIME_WAIT timers run down like the kernel's own.
        thread::sleep(Duration::from_millis(700));
        let refreshed_at = Instant::now();
        let (sixth, info) = refresh(&mut r);
        let now = fresh(&name);
        // The kernel's timers are read `gap` later than the refresh's clock.
        let gap = refreshed_at.elapsed().as_millis() as u32;
        assert!(!info.dumped, "{info:?}");
        assert_eq!(table(&sixth), table(&now));
        let (before, aged, kernel) = (timers(&fifth), timers(&sixth), timers(&now));
        assert_eq!(before.len(), 1);
        for (k, left) in &aged {
            assert!(*left + 600 <= before[k], "aged {left} vs {}", before[k]);
            // Within 100 ms (jiffies and the dump's own time) of the kernel's, allowing for gap.
            assert!(
                kernel[k] <= left + 100 && kernel[k] + gap + 100 >= *left,
                "aged {left} kernel {} gap {gap} ms",
                kernel[k]
            );
        }

        // A restarted service (close + listen: the counters end where they were) is seen
        // through the listening table.
        drop(listener);
        let listener = TcpListener::bind("127.0.0.1:30000").expect("listen again");
        let (restarted, info) = refresh(&mut r);
        assert!(info.dumped, "a replaced listener went unnoticed: {info:?}");
        assert_eq!(table(&restarted), table(&fresh(&name)));
        drop(listener);
    })
    .join()
    .expect("refresh thread");
    assert_eq!(pop.stop(), Some(0));
    bound.stop();
}
