//! Builders of plausible snapshots for tests, benchmarks and examples: the pure core is tested
//! on these instead of on a live host.

use std::net::IpAddr;
use std::sync::Arc;

use crate::rules;
use crate::snapshot::{
    DynamicPorts, Os, PortRange, Settings, Snapshot, Socket, SocketSource, TcpState, TcpipEvents,
    TcpipRegistry, ValueSource, WindowsSettings,
};

pub struct SnapshotBuilder {
    snap: Snapshot,
    next_port: u16,
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("fixture address {s:?} must parse"))
}

impl SnapshotBuilder {
    /// A Linux host with the kernel defaults: range 32768–60999, tw_reuse 2, timestamps on.
    pub fn linux() -> Self {
        let mut snap = Snapshot::empty(Os::Linux);
        snap.source = SocketSource::Fixture;
        snap.host.hostname = Some("fixture".into());
        snap.host.os_version = Some("6.18.0".into());
        snap.settings = Settings {
            ephemeral_ports: Some(rules::LINUX_DEFAULT_RANGE),
            reserved_ports: Vec::new(),
            time_wait_seconds: Some(rules::LINUX_TIME_WAIT_SECONDS),
            time_wait_source: Some(ValueSource::Default),
            tw_reuse: Some(2),
            tw_reuse_delay_ms: Some(rules::TW_REUSE_DELAY_MS),
            tw_reuse_delay_source: Some(ValueSource::Read),
            max_tw_buckets: Some(131_072),
            tcp_timestamps: Some(1),
            fin_timeout_seconds: Some(60),
        };
        Self {
            snap,
            next_port: rules::LINUX_DEFAULT_RANGE.low,
        }
    }

    /// A Windows Server 2022 host with the defaults: dynamic range 49152–65535 for both IP
    /// versions, no exclusions, no Tcpip registry values (TIME_WAIT = the 120 s default), an
    /// event log without 4227/4231. Change it with [`Self::windows_settings`].
    pub fn windows() -> Self {
        let mut snap = Snapshot::empty(Os::Windows);
        snap.source = SocketSource::Fixture;
        snap.host.hostname = Some("fixture-win".into());
        snap.host.os_version = Some("10.0.20348".into());
        let default_range = DynamicPorts {
            start: rules::WINDOWS_DEFAULT_RANGE.low,
            count: rules::WINDOWS_DEFAULT_RANGE.len(),
        };
        let w = WindowsSettings {
            build: Some(20348),
            dynamic_ports_v4: Some(default_range),
            dynamic_ports_v6: Some(default_range),
            excluded_ports_v4: Vec::new(),
            excluded_ports_v6: Vec::new(),
            registry: Some(TcpipRegistry {
                key: crate::knobs::TCPIP_PARAMETERS_KEY.into(),
                ..TcpipRegistry::default()
            }),
            events: Some(TcpipEvents {
                window_hours: 24,
                ..TcpipEvents::default()
            }),
            auto_reuse_ports: None,
            previous: None,
            time_wait_measured: None,
        };
        snap.settings = crate::collect::windows_text::derive_settings(&w);
        snap.windows = Some(w);
        Self {
            snap,
            next_port: rules::WINDOWS_DEFAULT_RANGE.low,
        }
    }

    /// Edits the Windows block and re-derives the generic settings from it, as the collector
    /// does. No-op on a Linux builder.
    pub fn windows_settings(mut self, f: impl FnOnce(&mut WindowsSettings)) -> Self {
        if let Some(w) = self.snap.windows.as_mut() {
            f(w);
            self.snap.settings = crate::collect::windows_text::derive_settings(w);
            if let Some(r) = self.snap.settings.ephemeral_ports {
                self.next_port = r.low;
            }
        }
        self
    }

    pub fn range(mut self, low: u16, high: u16) -> Self {
        self.snap.settings.ephemeral_ports = PortRange::new(low, high);
        self.next_port = low;
        self
    }

    pub fn reserved(mut self, low: u16, high: u16) -> Self {
        if let Some(r) = PortRange::new(low, high) {
            self.snap.settings.reserved_ports.push(r);
        }
        self
    }

    pub fn tw_reuse(mut self, v: u8) -> Self {
        self.snap.settings.tw_reuse = Some(v);
        self
    }

    pub fn timestamps(mut self, v: u8) -> Self {
        self.snap.settings.tcp_timestamps = Some(v);
        self
    }

    pub fn max_tw_buckets(mut self, v: u64) -> Self {
        self.snap.settings.max_tw_buckets = Some(v);
        self
    }

    pub fn tcp_ext(mut self, key: &str, v: i64) -> Self {
        self.snap.counters.tcp_ext.insert(key.to_string(), v);
        self
    }

    pub fn settings(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.snap.settings);
        self
    }

    pub fn socket(mut self, s: Socket) -> Self {
        Arc::make_mut(&mut self.snap.sockets).push(s);
        self
    }

    fn raw(state: TcpState, local: &str, lport: u16, remote: &str, rport: u16) -> Socket {
        Socket {
            state,
            local_ip: ip(local),
            local_port: lport,
            remote_ip: ip(remote),
            remote_port: rport,
            time_wait_left_ms: None,
            inode: 0,
            uid: Some(0),
            pid: None,
        }
    }

    pub fn listen(self, local: &str, port: u16) -> Self {
        let any = if ip(local).is_ipv4() { "0.0.0.0" } else { "::" };
        self.socket(Self::raw(TcpState::Listen, local, port, any, 0))
    }

    pub fn bound(self, local: &str, port: u16) -> Self {
        let any = if ip(local).is_ipv4() { "0.0.0.0" } else { "::" };
        self.socket(Self::raw(TcpState::Close, local, port, any, 0))
    }

    pub fn established(self, local: &str, lport: u16, remote: &str, rport: u16) -> Self {
        self.socket(Self::raw(
            TcpState::Established,
            local,
            lport,
            remote,
            rport,
        ))
    }

    pub fn time_wait(
        self,
        local: &str,
        lport: u16,
        remote: &str,
        rport: u16,
        left_ms: u32,
    ) -> Self {
        let mut s = Self::raw(TcpState::TimeWait, local, lport, remote, rport);
        s.time_wait_left_ms = Some(left_ms);
        self.socket(s)
    }

    /// Adds a pool with `established` open connections and `time_wait` TIME_WAIT sockets whose
    /// ages spread evenly over `tw_age_ms` (so the connect rate is `time_wait / age span`).
    /// Ports are taken from the range in order (the next free ones).
    pub fn pool(
        mut self,
        local: &str,
        remote: &str,
        rport: u16,
        established: u32,
        time_wait: u32,
        tw_age_ms: (u32, u32),
    ) -> Self {
        for _ in 0..established {
            let p = self.take_port();
            let mut s = Self::raw(TcpState::Established, local, p, remote, rport);
            s.inode = 1_000_000 + self.snap.sockets.len() as u64;
            Arc::make_mut(&mut self.snap.sockets).push(s);
        }
        let (from, to) = tw_age_ms;
        for i in 0..time_wait {
            let p = self.take_port();
            let age = if time_wait <= 1 {
                from
            } else {
                from + ((u64::from(to - from) * u64::from(i)) / u64::from(time_wait - 1)) as u32
            };
            let mut s = Self::raw(TcpState::TimeWait, local, p, remote, rport);
            s.time_wait_left_ms = Some(60_000u32.saturating_sub(age));
            Arc::make_mut(&mut self.snap.sockets).push(s);
        }
        self
    }

    /// The next port of the range, wrapping (pools to different destinations may share ports).
    fn take_port(&mut self) -> u16 {
        let r = self
            .snap
            .settings
            .ephemeral_ports
            .unwrap_or(rules::LINUX_DEFAULT_RANGE);
        let p = self.next_port;
        self.next_port = if p >= r.high { r.low } else { p + 1 };
        p
    }

    /// Restart port allocation at the range start (the next pool reuses the same ports, as
    /// connect() does across destinations).
    pub fn restart_ports(mut self) -> Self {
        self.next_port = self
            .snap
            .settings
            .ephemeral_ports
            .map_or(rules::LINUX_DEFAULT_RANGE.low, |r| r.low);
        self
    }

    /// Marks every socket with an inode as owned by `pid` called `name`.
    pub fn owned_by(mut self, pid: u32, name: &str) -> Self {
        let mut owners = self
            .snap
            .owners
            .take()
            .map(Arc::unwrap_or_clone)
            .unwrap_or_default();
        owners.processes.insert(pid, name.to_string());
        for s in self.snap.sockets.iter().filter(|s| s.inode != 0) {
            owners.by_inode.insert(s.inode, pid);
        }
        self.snap.owners = Some(Arc::new(owners));
        self
    }

    pub fn build(mut self) -> Snapshot {
        if self.snap.os == Os::Windows {
            // Like GetExtendedTcpTable: no TIME_WAIT timers, owners as pids on the rows.
            let owners = self.snap.owners.clone();
            for s in Arc::make_mut(&mut self.snap.sockets) {
                s.time_wait_left_ms = None;
                if s.state != TcpState::TimeWait {
                    s.pid = s
                        .pid
                        .or_else(|| owners.as_ref()?.by_inode.get(&s.inode).copied());
                }
                s.inode = 0;
                s.uid = None;
            }
            if let Some(o) = self.snap.owners.as_mut() {
                Arc::make_mut(o).by_inode.clear();
            }
        }
        self.snap
    }
}

/// Named hosts shared by the report snapshots and the snapshot-file round trips, so each is
/// written once.
pub mod hosts {
    use super::SnapshotBuilder;
    use crate::snapshot::{EventStat, ExcludedRange, Snapshot};

    /// A critical Linux host: four pools (one 97% full), owners, listeners.
    pub fn critical_linux() -> Snapshot {
        SnapshotBuilder::linux()
            .tw_reuse(0)
            // Ramp: 27,410 used, 1,500 TIME_WAIT in the last 10 s.
            .pool("10.0.0.5", "10.0.0.9", 5432, 300, 27_110, (0, 59_000))
            .restart_ports()
            .pool("10.0.0.5", "10.0.0.12", 443, 128, 19_990, (0, 59_000))
            .restart_ports()
            .pool("10.0.0.5", "10.0.0.7", 6379, 69, 1_000, (0, 59_000))
            .restart_ports()
            .pool("2001:db8::5", "2001:db8::7", 443, 12, 40, (0, 59_000))
            .listen("0.0.0.0", 8080)
            .listen("127.0.0.1", 45000)
            .tcp_ext("TCPTimeWaitOverflow", 0)
            .owned_by(1234, "api-server")
            .build()
    }

    /// One local address, three destinations, ports never shared and all of bind()'s parity.
    pub fn bind_before_connect() -> Snapshot {
        let mut b = SnapshotBuilder::linux().tw_reuse(0);
        let mut port = 32769u16;
        for dst in 0..3u16 {
            for _ in 0..40 {
                b = b.time_wait("127.0.0.1", port, "127.0.0.1", 20_000 + dst, 30_000);
                port += 2;
            }
        }
        b.build()
    }

    fn excluded(low: u16, high: u16, administered: bool) -> ExcludedRange {
        ExcludedRange {
            low,
            high,
            administered,
        }
    }

    /// An IIS host that opens a connection per request to SQL Server and an API, on a Hyper-V
    /// machine (exclusions inside the range), with 4231 events in the log.
    pub fn iis() -> Snapshot {
        SnapshotBuilder::windows()
            .windows_settings(|w| {
                let hyperv = vec![
                    excluded(5357, 5357, false),
                    excluded(49671, 49770, false),
                    excluded(49871, 49970, false),
                    excluded(50000, 50059, true),
                    excluded(61117, 61216, false),
                ];
                w.excluded_ports_v4.clone_from(&hyperv);
                w.excluded_ports_v6 = hyperv;
                if let Some(r) = w.registry.as_mut() {
                    r.max_user_port = Some(65534);
                }
                if let Some(e) = w.events.as_mut() {
                    e.ports_exhausted_4231 = EventStat {
                        count: 12,
                        last_unix_ms: Some(1_795_814_043_512),
                    };
                }
            })
            .pool("10.0.0.5", "10.0.0.9", 1433, 200, 13_000, (0, 100_000))
            .pool("10.0.0.5", "10.0.0.12", 443, 40, 1_500, (0, 100_000))
            .restart_ports()
            .pool("10.0.0.6", "10.0.0.12", 443, 20, 300, (0, 100_000))
            .restart_ports()
            .pool("2001:db8::5", "2001:db8::9", 443, 8, 40, (0, 100_000))
            .listen("0.0.0.0", 80)
            .listen("0.0.0.0", 443)
            .listen("10.0.0.5", 65000)
            .owned_by(4242, "w3wp.exe")
            .build()
    }
}
