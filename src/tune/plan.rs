//! Pure planning: from a snapshot and a goal to the changes, what each buys (via the capacity
//! model of [`crate::analysis`]), the exact commands, the risks, and refusals of unsafe plans.
//! No I/O: everything here is tested on fixture snapshots.

use serde::Serialize;

use crate::analysis::{self, Thresholds};
use crate::knobs::{self, Activation, Confidence, Knob, KnobError, KnobValue};
use crate::rules;
use crate::snapshot::{Os, PortRange, Settings, Snapshot, TcpState, ValueSource};

/// Lowest port an automatic plan (profile, target rate) puts into the range; explicit `--set`
/// may go down to 1024. Below 10000 live many registered service ports.
pub const AUTO_RANGE_FLOOR: u16 = 10_000;
/// Inbound connections above which `tcp_tw_reuse=1` earns a warning.
pub const MANY_INBOUND: u64 = 100;
/// TIME_WAIT buckets the proxy profile asks for at least.
pub const PROXY_TW_BUCKETS: u64 = 262_144;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Many short outbound connections: widest range from 10000, tcp_tw_reuse=1.
    ClientHeavy,
    /// Inbound and outbound: as client-heavy, plus room for more TIME_WAIT buckets.
    Proxy,
    /// Only a wider range (15000–65000), nothing that changes TCP behaviour.
    Conservative,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::ClientHeavy, Profile::Proxy, Profile::Conservative];

    pub fn name(self) -> &'static str {
        match self {
            Profile::ClientHeavy => "client-heavy",
            Profile::Proxy => "proxy",
            Profile::Conservative => "conservative",
        }
    }
}

/// What the user wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Goal {
    /// `--set KNOB=VALUE`, in the order given (knob as typed).
    pub sets: Vec<(String, String)>,
    pub profile: Option<Profile>,
    /// `--target-rate`: new outbound connections per second one pool must sustain.
    pub target_rate_per_s: Option<f64>,
    /// How long a connection stays open before it closes (L in U / (L + T)).
    pub lifetime_seconds: f64,
}

impl Goal {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.profile.is_none() && self.target_rate_per_s.is_none()
    }
}

/// What one pool can hold and sustain under some settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacityPoint {
    /// Usable ports per connect pool: range − reserved − bound (analysis::capacity).
    pub usable_ports: Option<u32>,
    /// How long a closed connection keeps its port for a new connect() to a remote (non-loopback)
    /// destination: 60 s, or the reuse delay with tcp_tw_reuse=1 and timestamps on.
    pub port_hold_seconds: f64,
    /// U / (L + T): sustainable new connections per second to one remote destination.
    pub rate_per_pool_per_s: Option<f64>,
}

/// One knob change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub knob: &'static str,
    /// As the snapshot read it; `None` when unknown or absent.
    pub current: Option<String>,
    pub proposed: String,
    #[serde(skip)]
    pub value: KnobValue,
    pub reason: String,
    pub activation: Activation,
    /// When it takes effect, in words.
    pub takes_effect: &'static str,
    pub confidence: Confidence,
    /// Capacity with this and every earlier change of the plan.
    pub capacity_after: CapacityPoint,
    pub risks: Vec<String>,
}

/// The persistent part: lines for a sysctl.d drop-in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DropIn {
    pub path: String,
    pub lines: Vec<String>,
}

/// A complete plan. Apply only when `refusals` is empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub os: Os,
    pub netns: Option<String>,
    pub hostname: Option<String>,
    pub os_version: Option<String>,
    pub goal: Goal,
    pub changes: Vec<Change>,
    /// Knobs the goal names that already have the wanted value.
    pub unchanged: Vec<String>,
    pub capacity_before: CapacityPoint,
    pub capacity_after: CapacityPoint,
    /// Why this plan must not be applied (empty = safe to apply).
    pub refusals: Vec<String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    /// Runtime commands, in order (Linux: `sysctl -w`).
    pub commands: Vec<String>,
    /// Linux: the drop-in lines that make the changes survive a reboot.
    pub dropin: Option<DropIn>,
    /// Windows: what is needed before the changes apply (reboot, service restart).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows_steps: Vec<String>,
}

impl Plan {
    pub fn is_refused(&self) -> bool {
        !self.refusals.is_empty()
    }
}

/// A goal that cannot even be planned: the command line is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(#[from] KnobError),
    #[error("unknown knob {0:?}; known: {1}")]
    UnknownKnob(String, String),
    #[error("--set {0}: want KNOB=VALUE, e.g. --set net.ipv4.tcp_tw_reuse=1")]
    Syntax(String),
    #[error("{knob} is set twice (--set {first} and --set {second}); give it once")]
    Twice {
        knob: String,
        first: String,
        second: String,
    },
    #[error("--target-rate {0}: want a positive number of connections per second up to 10,000,000, e.g. 2000/s")]
    BadRate(String),
    #[error("nothing to plan: give --set KNOB=VALUE, --profile or --target-rate")]
    NoGoal,
}

/// Splits `KNOB=VALUE` (the value may itself contain `=`, as in `start=S num=N`).
pub fn parse_set(s: &str) -> Result<(String, String), PlanError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| PlanError::Syntax(s.to_string()))?;
    if k.trim().is_empty() {
        return Err(PlanError::Syntax(s.to_string()));
    }
    Ok((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
}

/// `--target-rate`: `2000`, `2000/s` → 2000.0 ([`crate::units::parse_rate`]).
pub fn parse_rate(s: &str) -> Result<f64, PlanError> {
    crate::units::parse_rate(s).map_err(|_| PlanError::BadRate(s.to_string()))
}

/// Resolves a `--set` knob name and checks its value.
pub fn resolve_set(
    os: Os,
    name: &str,
    value: &str,
) -> Result<(&'static Knob, KnobValue), PlanError> {
    let knob = knobs::find_knob(name).ok_or_else(|| {
        let known: Vec<&str> = knobs::KNOBS
            .iter()
            .filter(|k| k.os == os)
            .map(|k| k.id)
            .collect();
        PlanError::UnknownKnob(name.to_string(), known.join(", "))
    })?;
    let v = knob.validate(value)?;
    Ok((knob, v))
}

/// The value the snapshot has for a Linux knob (`None` = unknown or absent).
pub fn current_value(settings: &Settings, id: &str) -> Option<KnobValue> {
    match id {
        "net.ipv4.ip_local_port_range" => settings.ephemeral_ports.map(KnobValue::Range),
        "net.ipv4.ip_local_reserved_ports" => {
            Some(KnobValue::List(settings.reserved_ports.clone()))
        }
        "net.ipv4.tcp_tw_reuse" => settings.tw_reuse.map(|v| KnobValue::Int(v.into())),
        "net.ipv4.tcp_tw_reuse_delay" => match settings.tw_reuse_delay_source {
            Some(ValueSource::Read) => settings.tw_reuse_delay_ms.map(|v| KnobValue::Int(v.into())),
            _ => None,
        },
        "net.ipv4.tcp_max_tw_buckets" => settings.max_tw_buckets.map(KnobValue::Int),
        "net.ipv4.tcp_fin_timeout" => settings
            .fin_timeout_seconds
            .map(|v| KnobValue::Int(v.into())),
        "net.ipv4.tcp_timestamps" => settings.tcp_timestamps.map(|v| KnobValue::Int(v.into())),
        _ => None,
    }
}

/// Puts a Linux knob's value into settings (what the capacity model sees after the change).
fn set_value(settings: &mut Settings, id: &str, v: &KnobValue) {
    let int = |v: &KnobValue| match v {
        KnobValue::Int(i) => Some(*i),
        _ => None,
    };
    match (id, v) {
        ("net.ipv4.ip_local_port_range", KnobValue::Range(r)) => {
            settings.ephemeral_ports = Some(*r);
        }
        ("net.ipv4.ip_local_reserved_ports", KnobValue::List(l)) => {
            settings.reserved_ports.clone_from(l);
        }
        ("net.ipv4.tcp_tw_reuse", _) => settings.tw_reuse = int(v).map(|i| i as u8),
        ("net.ipv4.tcp_tw_reuse_delay", _) => {
            settings.tw_reuse_delay_ms = int(v).map(|i| i as u32);
            settings.tw_reuse_delay_source = Some(ValueSource::Read);
        }
        ("net.ipv4.tcp_max_tw_buckets", _) => settings.max_tw_buckets = int(v),
        ("net.ipv4.tcp_fin_timeout", _) => settings.fin_timeout_seconds = int(v).map(|i| i as u32),
        ("net.ipv4.tcp_timestamps", _) => settings.tcp_timestamps = int(v).map(|i| i as u8),
        _ => {}
    }
}

/// How long a closed connection blocks its port for a new connect() to a remote (not loopback)
/// destination: TIME_WAIT, or the reuse delay where [`rules::tw_reuse_applies`].
fn hold_seconds(s: &Settings) -> f64 {
    if rules::tw_reuse_applies(s.tw_reuse, s.tcp_timestamps, false) {
        f64::from(s.tw_reuse_delay_ms.unwrap_or(rules::TW_REUSE_DELAY_MS)) / 1000.0
    } else {
        f64::from(
            s.time_wait_seconds
                .unwrap_or(rules::LINUX_TIME_WAIT_SECONDS),
        )
    }
}

/// Capacity of one remote connect pool under `settings` (sockets from the snapshot).
pub fn capacity_point(snapshot: &Snapshot, settings: &Settings, lifetime: f64) -> CapacityPoint {
    let mut s = snapshot.clone();
    s.settings = settings.clone();
    let usable = analysis::capacity(&s).map(|c| c.usable);
    let hold = hold_seconds(settings);
    CapacityPoint {
        usable_ports: usable,
        port_hold_seconds: hold,
        rate_per_pool_per_s: usable.map(|u| f64::from(u) / (lifetime + hold)),
    }
}

/// Listeners inside `range` that `reserved` does not cover.
pub(crate) fn exposed_listeners(
    snapshot: &Snapshot,
    range: PortRange,
    reserved: &[PortRange],
) -> Vec<u16> {
    exposed_ports(&snapshot.listen_ports(), range, reserved)
}

fn exposed_ports(listening: &[u16], range: PortRange, reserved: &[PortRange]) -> Vec<u16> {
    listening
        .iter()
        .copied()
        .filter(|&p| range.contains(p) && !reserved.iter().any(|r| r.contains(p)))
        .collect()
}

/// The Linux settings that move the ephemeral range to `range` the way `tune` accepts it:
/// listening ports the new range would cover are reserved first (the refusal rule of
/// [`plan`]). The one planner of range fixes: `check`'s findings, the failure findings and
/// `capacity` print these settings, so what they print is what `tune plan` takes.
pub fn linux_range_sets(
    listening: &[u16],
    reserved: &[PortRange],
    range: PortRange,
) -> Vec<(&'static str, String)> {
    let exposed = exposed_ports(listening, range, reserved);
    let mut sets = Vec::new();
    if !exposed.is_empty() {
        sets.push((
            "net.ipv4.ip_local_reserved_ports",
            KnobValue::List(merge_with(reserved, &exposed)).text(),
        ));
    }
    sets.push((
        "net.ipv4.ip_local_port_range",
        KnobValue::Range(range).text(),
    ));
    sets
}

fn port_list(ports: &[u16]) -> String {
    let mut s: Vec<String> = ports.iter().take(10).map(u16::to_string).collect();
    if ports.len() > 10 {
        s.push(format!("… ({} in all)", ports.len()));
    }
    s.join(", ")
}

fn takes_effect(os: Os, a: Activation) -> &'static str {
    match (os, a) {
        (Os::Linux, Activation::NewConnections) => {
            "at once, for new connections (no reboot, no restart)"
        }
        (_, Activation::Immediate) => "at once",
        (Os::Windows, Activation::NewConnections) => "for new connections",
        (_, Activation::Reboot) => "after a reboot",
    }
}

/// A wanted value with where it came from.
struct Wanted {
    knob: &'static Knob,
    value: KnobValue,
    reason: String,
    /// From an explicit --set (explicit values are refused, not adjusted, when unsafe).
    explicit: bool,
}

fn want(list: &mut Vec<Wanted>, knob_id: &str, value: KnobValue, reason: String, explicit: bool) {
    let knob = knobs::knob(knob_id).unwrap_or_else(|| panic!("knob {knob_id} is in KNOBS"));
    if let Some(w) = list.iter_mut().find(|w| w.knob.id == knob_id) {
        w.value = value;
        w.reason = reason;
        w.explicit = explicit;
    } else {
        list.push(Wanted {
            knob,
            value,
            reason,
            explicit,
        });
    }
}

fn wanted_settings(base: &Settings, list: &[Wanted]) -> Settings {
    let mut s = base.clone();
    for w in list {
        set_value(&mut s, w.knob.id, &w.value);
    }
    s
}

/// Widens `cur` to at least `[low, high]` (never narrows).
fn widen(cur: PortRange, low: u16, high: u16) -> PortRange {
    PortRange {
        low: cur.low.min(low),
        high: cur.high.max(high),
    }
}

/// After the range is chosen automatically: reserve listener ports it would cover.
fn reserve_listeners(snapshot: &Snapshot, list: &mut Vec<Wanted>, base: &Settings) {
    let s = wanted_settings(base, list);
    let Some(range) = s.ephemeral_ports else {
        return;
    };
    let exposed = exposed_listeners(snapshot, range, &s.reserved_ports);
    if exposed.is_empty() {
        return;
    }
    let mut reserved = s.reserved_ports.clone();
    reserved.extend(exposed.iter().map(|&p| PortRange { low: p, high: p }));
    let Some(Ok(merged)) = knobs::knob("net.ipv4.ip_local_reserved_ports")
        .map(|k| k.validate(&KnobValue::List(reserved).text()))
    else {
        return;
    };
    want(
        list,
        "net.ipv4.ip_local_reserved_ports",
        merged,
        format!(
            "keep the listening port(s) {} inside the new range out of outbound use",
            port_list(&exposed)
        ),
        false,
    );
}

fn profile_wants(snapshot: &Snapshot, p: Profile, list: &mut Vec<Wanted>) {
    let s = wanted_settings(&snapshot.settings, list);
    let cur = s.ephemeral_ports.unwrap_or(rules::LINUX_DEFAULT_RANGE);
    let (low, high, why) = match p {
        Profile::Conservative => (
            rules::LINUX_SUGGESTED_RANGE.low,
            rules::LINUX_SUGGESTED_RANGE.high,
            "profile conservative: a wider range (ports below 15000 and above 65000 stay free for services)",
        ),
        Profile::ClientHeavy | Profile::Proxy => (
            AUTO_RANGE_FLOOR,
            65_535,
            "profile: the widest range that keeps ports below 10000 free for services",
        ),
    };
    let range = widen(cur, low, high);
    if Some(range) != s.ephemeral_ports {
        want(
            list,
            "net.ipv4.ip_local_port_range",
            KnobValue::Range(range),
            why.replace("profile:", &format!("profile {}:", p.name())),
            false,
        );
    }
    if matches!(p, Profile::ClientHeavy | Profile::Proxy) {
        if s.tcp_timestamps == Some(0) {
            want(
                list,
                "net.ipv4.tcp_timestamps",
                KnobValue::Int(1),
                format!("profile {}: tcp_tw_reuse needs TCP timestamps", p.name()),
                false,
            );
        }
        want(
            list,
            "net.ipv4.tcp_tw_reuse",
            KnobValue::Int(1),
            format!(
                "profile {}: outbound connections may take over TIME_WAIT ports older than the reuse delay",
                p.name()
            ),
            false,
        );
    }
    if p == Profile::Proxy && s.max_tw_buckets.is_some_and(|m| m < PROXY_TW_BUCKETS) {
        want(
            list,
            "net.ipv4.tcp_max_tw_buckets",
            KnobValue::Int(PROXY_TW_BUCKETS),
            "profile proxy: room for the TIME_WAIT of both sides before the kernel drops them"
                .into(),
            false,
        );
    }
}

/// The smallest range (same low, higher high; then lower low down to [`AUTO_RANGE_FLOOR`])
/// whose capacity holds `need` ports, or `None`.
fn smallest_range(snapshot: &Snapshot, base: &Settings, need: f64) -> Option<PortRange> {
    let cur = base.ephemeral_ports?;
    let usable = |r: PortRange| {
        let mut s = base.clone();
        s.ephemeral_ports = Some(r);
        // Listeners that the wider range covers get reserved (same count as bound).
        capacity_point(snapshot, &s, 0.0)
            .usable_ports
            .map_or(0.0, f64::from)
    };
    if usable(cur) >= need {
        return Some(cur);
    }
    // Raise high first: binary search over high in cur.high..=65535.
    let top = PortRange {
        low: cur.low,
        high: 65_535,
    };
    if usable(top) >= need {
        let (mut lo, mut hi) = (cur.high, 65_535u16);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if usable(PortRange {
                low: cur.low,
                high: mid,
            }) >= need
            {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        return Some(PortRange {
            low: cur.low,
            high: lo,
        });
    }
    let floor = AUTO_RANGE_FLOOR.min(cur.low);
    if usable(PortRange {
        low: floor,
        high: 65_535,
    }) < need
    {
        return None;
    }
    let (mut lo, mut hi) = (floor, cur.low);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if usable(PortRange {
            low: mid,
            high: 65_535,
        }) >= need
        {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(PortRange {
        low: lo,
        high: 65_535,
    })
}

fn target_wants(
    snapshot: &Snapshot,
    rate: f64,
    lifetime: f64,
    list: &mut Vec<Wanted>,
    refusals: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let base = wanted_settings(&snapshot.settings, list);
    let now = capacity_point(snapshot, &base, lifetime);
    if now.rate_per_pool_per_s.is_some_and(|r| r >= rate) {
        notes.push(format!(
            "--target-rate {rate}/s: the settings already sustain {:.0}/s per remote destination; no change needed for it",
            now.rate_per_pool_per_s.unwrap_or(0.0)
        ));
        return;
    }
    let need = |s: &Settings| rate * (lifetime + hold_seconds(s));
    let why_range = |need: f64, hold: f64| {
        format!(
            "--target-rate {rate}/s: needs {need:.0} usable ports per pool ({rate}/s × ({lifetime} s open + {hold} s port hold)); the smallest wider range that has them"
        )
    };
    if let Some(r) = smallest_range(snapshot, &base, need(&base).ceil()) {
        want(
            list,
            "net.ipv4.ip_local_port_range",
            KnobValue::Range(r),
            why_range(need(&base).ceil(), hold_seconds(&base)),
            false,
        );
        return;
    }
    // The range alone cannot do it: TIME_WAIT reuse turns 60 s of hold into the reuse delay.
    if base.tw_reuse != Some(1) || base.tcp_timestamps == Some(0) {
        let mut with_reuse = base.clone();
        with_reuse.tw_reuse = Some(1);
        if with_reuse.tcp_timestamps == Some(0) {
            with_reuse.tcp_timestamps = Some(1);
            want(
                list,
                "net.ipv4.tcp_timestamps",
                KnobValue::Int(1),
                "tcp_tw_reuse needs TCP timestamps".into(),
                false,
            );
        }
        let n = need(&with_reuse).ceil();
        if let Some(r) = smallest_range(snapshot, &with_reuse, n) {
            want(
                list,
                "net.ipv4.tcp_tw_reuse",
                KnobValue::Int(1),
                format!(
                    "--target-rate {rate}/s: no range below 65536 holds {:.0} ports for 60 s of TIME_WAIT; with reuse a port is free again after {} s",
                    need(&base).ceil(),
                    hold_seconds(&with_reuse)
                ),
                false,
            );
            if Some(r) != base.ephemeral_ports {
                want(
                    list,
                    "net.ipv4.ip_local_port_range",
                    KnobValue::Range(r),
                    why_range(n, hold_seconds(&with_reuse)),
                    false,
                );
            }
            return;
        }
    }
    refusals.push(format!(
        "--target-rate {rate}/s cannot be reached with sysctls alone (at most {:.0}/s per destination with range {}-65535 and tcp_tw_reuse=1): reuse connections in the application (keep-alive, pools) or spread over more destinations or source addresses",
        {
            let mut best = base.clone();
            best.tw_reuse = Some(1);
            best.tcp_timestamps = Some(1);
            best.ephemeral_ports = best
                .ephemeral_ports
                .map(|r| widen(r, AUTO_RANGE_FLOOR, 65_535));
            capacity_point(snapshot, &best, lifetime)
                .rate_per_pool_per_s
                .unwrap_or(0.0)
        },
        AUTO_RANGE_FLOOR
    ));
}

/// Checks a set of Linux changes against the snapshot: `(refusals, warnings)`.
/// Every plan that [`plan`] emits without refusals passes this again (property-tested).
pub fn validate(snapshot: &Snapshot, changes: &[Change]) -> (Vec<String>, Vec<String>) {
    let mut refusals = Vec::new();
    let mut warnings = Vec::new();
    let mut after = snapshot.settings.clone();
    for c in changes {
        let Some(knob) = knobs::knob(c.knob) else {
            refusals.push(format!("{}: not a known knob", c.knob));
            continue;
        };
        if knob.os != snapshot.os {
            refusals.push(format!(
                "{} is a {} setting; this host runs {}",
                knob.id,
                os_name(knob.os),
                os_name(snapshot.os)
            ));
            continue;
        }
        match knob.validate(&c.proposed) {
            Ok(v) if v == c.value => {}
            Ok(_) => refusals.push(format!(
                "{}: value {} does not round-trip",
                knob.id, c.proposed
            )),
            Err(e) => refusals.push(e.to_string()),
        }
        set_value(&mut after, knob.id, &c.value);
    }
    let touched = |id: &str| changes.iter().any(|c| c.knob == id);
    if snapshot.os == Os::Linux {
        if touched("net.ipv4.tcp_tw_reuse_delay")
            && snapshot.settings.tw_reuse_delay_source != Some(ValueSource::Read)
        {
            refusals.push("net.ipv4.tcp_tw_reuse_delay does not exist on this kernel (it is a sysctl since Linux 6.14; before, the delay is fixed at 1000 ms): it cannot be set here".into());
        }
        if touched("net.ipv4.ip_local_port_range") || touched("net.ipv4.ip_local_reserved_ports") {
            if let Some(range) = after.ephemeral_ports {
                let exposed = exposed_listeners(snapshot, range, &after.reserved_ports);
                if !exposed.is_empty() {
                    refusals.push(format!(
                        "range {}-{} covers port(s) {} that services listen on: a client could take such a port while the service is down. Reserve them too (--set net.ipv4.ip_local_reserved_ports={}) or choose a range without them",
                        range.low,
                        range.high,
                        port_list(&exposed),
                        KnobValue::List(merge_with(&after.reserved_ports, &exposed)).text()
                    ));
                }
                if range.low < 1024 {
                    refusals.push(format!(
                        "range low {} is below 1024 (privileged ports)",
                        range.low
                    ));
                }
            }
        }
        if touched("net.ipv4.tcp_tw_reuse") && after.tw_reuse == Some(1) {
            if after.tcp_timestamps == Some(0) {
                warnings.push("tcp_tw_reuse=1 does nothing while net.ipv4.tcp_timestamps=0: add --set net.ipv4.tcp_timestamps=1".into());
            }
            let a = analysis::analyze(snapshot, Thresholds::default());
            if a.inbound >= MANY_INBOUND {
                warnings.push(format!(
                    "this host has {} inbound connections: tcp_tw_reuse=1 only helps its outbound connections, and peers behind NAT that share one address see reused 4-tuples guarded only by timestamps; keep it if most churn is outbound",
                    a.inbound
                ));
            }
        }
        if touched("net.ipv4.tcp_fin_timeout") {
            warnings.push("net.ipv4.tcp_fin_timeout limits orphaned FIN_WAIT2 only: it does NOT shorten TIME_WAIT (fixed at 60 s) and frees no ephemeral port sooner".into());
        }
        if touched("net.ipv4.tcp_timestamps") && after.tcp_timestamps == Some(0) {
            warnings
                .push("tcp_timestamps=0 disables TIME_WAIT reuse (tcp_tw_reuse) and PAWS".into());
        }
        if let (true, Some(max)) = (touched("net.ipv4.tcp_max_tw_buckets"), after.max_tw_buckets) {
            let tw = snapshot
                .sockets
                .iter()
                .filter(|s| s.state == TcpState::TimeWait)
                .count() as u64;
            if max < tw {
                warnings.push(format!(
                    "tcp_max_tw_buckets={max} is below the {tw} TIME_WAIT sockets now: new ones will be dropped at once (TCPTimeWaitOverflow), losing TIME_WAIT's protection"
                ));
            }
        }
    }
    (refusals, warnings)
}

pub(crate) fn merge_with(reserved: &[PortRange], ports: &[u16]) -> Vec<PortRange> {
    let mut v = reserved.to_vec();
    v.extend(ports.iter().map(|&p| PortRange { low: p, high: p }));
    match knobs::Check::PortList.parse(&KnobValue::List(v.clone()).text()) {
        Ok(KnobValue::List(l)) => l,
        _ => v,
    }
}

fn os_name(os: Os) -> &'static str {
    match os {
        Os::Linux => "Linux",
        Os::Windows => "Windows",
    }
}

/// Plans the goal against the snapshot. `Err` only for a wrong command line (unknown knob,
/// invalid value, bad rate); unsafe plans come back with `refusals`.
pub fn plan(snapshot: &Snapshot, goal: &Goal) -> Result<Plan, PlanError> {
    if goal.is_empty() {
        return Err(PlanError::NoGoal);
    }
    if let Some(r) = goal.target_rate_per_s {
        if !(r.is_finite() && r > 0.0) {
            return Err(PlanError::BadRate(r.to_string()));
        }
    }
    let lifetime = if goal.lifetime_seconds.is_finite() {
        goal.lifetime_seconds.max(0.0)
    } else {
        0.0
    };
    let mut list: Vec<Wanted> = Vec::new();
    let mut refusals = Vec::new();
    let mut notes = Vec::new();
    if let Some(p) = goal.profile {
        if snapshot.os == Os::Linux {
            profile_wants(snapshot, p, &mut list);
        }
    }
    let mut seen: Vec<(&'static str, String)> = Vec::new();
    for (name, value) in &goal.sets {
        let (knob, v) = resolve_set(snapshot.os, name, value)?;
        let typed = format!("{name}={value}");
        if let Some((_, first)) = seen.iter().find(|(id, _)| *id == knob.id) {
            return Err(PlanError::Twice {
                knob: knob.id.to_string(),
                first: first.clone(),
                second: typed,
            });
        }
        seen.push((knob.id, typed));
        want(&mut list, knob.id, v, "asked with --set".into(), true);
    }
    if let Some(rate) = goal.target_rate_per_s {
        if snapshot.os == Os::Linux {
            target_wants(
                snapshot,
                rate,
                lifetime,
                &mut list,
                &mut refusals,
                &mut notes,
            );
        }
    }
    // Automatic range changes reserve the listeners they would cover; explicit ones are refused.
    let auto_range = list
        .iter()
        .any(|w| w.knob.id == "net.ipv4.ip_local_port_range" && !w.explicit);
    let explicit_reserved = list
        .iter()
        .any(|w| w.knob.id == "net.ipv4.ip_local_reserved_ports" && w.explicit);
    if auto_range && !explicit_reserved && snapshot.os == Os::Linux {
        reserve_listeners(snapshot, &mut list, &snapshot.settings);
    }
    if snapshot.os == Os::Windows {
        return Ok(super::windows::plan(
            snapshot,
            goal,
            &list_into(list),
            lifetime,
            notes,
        ));
    }

    // Keep a stable order: the knowledge base's.
    list.sort_by_key(|w| knobs::KNOBS.iter().position(|k| k.id == w.knob.id));
    let mut settings = snapshot.settings.clone();
    let capacity_before = capacity_point(snapshot, &settings, lifetime);
    let mut changes = Vec::new();
    let mut unchanged = Vec::new();
    for w in list {
        let current = current_value(&snapshot.settings, w.knob.id);
        if current.as_ref() == Some(&w.value) {
            unchanged.push(format!("{} is already {}", w.knob.id, w.value));
            continue;
        }
        set_value(&mut settings, w.knob.id, &w.value);
        let mut risks = vec![w.knob.tradeoff.to_string()];
        if w.knob.confidence == Confidence::Unverified {
            risks.push("unverified: measure before relying on it".into());
        }
        changes.push(Change {
            knob: w.knob.id,
            current: current.map(|c| c.text()),
            proposed: w.value.text(),
            value: w.value,
            reason: w.reason,
            activation: w.knob.activation,
            takes_effect: takes_effect(Os::Linux, w.knob.activation),
            confidence: w.knob.confidence,
            capacity_after: capacity_point(snapshot, &settings, lifetime),
            risks,
        });
    }
    let capacity_after = capacity_point(snapshot, &settings, lifetime);
    let (more_refusals, warnings) = validate(snapshot, &changes);
    refusals.extend(more_refusals);
    let ns_prefix = snapshot.host.target.exec_prefix();
    let commands = changes
        .iter()
        .map(|c| {
            format!(
                "{ns_prefix}sysctl -w {}={}",
                c.knob,
                rules::sysctl_shell_value(&c.value.text())
            )
        })
        .collect();
    let dropin = Some(DropIn {
        path: rules::sysctl_dropin_path(),
        lines: changes
            .iter()
            .map(|c| format!("{} = {}", c.knob, c.proposed))
            .collect(),
    });
    if !snapshot.host.target.is_host() {
        notes.push("sysctl.d files are applied to the host's own namespace at boot, not to named namespaces: `tune apply --netns` changes the runtime values only, unless --sysctl-dir names a directory that the namespace's own setup loads".into());
    }
    if changes.is_empty() && refusals.is_empty() {
        notes.push("nothing to change: every value is already as planned".into());
    }
    Ok(Plan {
        schema: "portdoctor.tune-plan/v1",
        os: snapshot.os,
        netns: snapshot.host.target.label(),
        hostname: snapshot.host.hostname.clone(),
        os_version: snapshot.host.os_version.clone(),
        goal: goal.clone(),
        changes,
        unchanged,
        capacity_before,
        capacity_after,
        refusals,
        warnings,
        notes,
        commands,
        dropin,
        windows_steps: Vec::new(),
    })
}

/// What the Windows planner receives: the wanted values with their reasons.
pub struct WantedValue {
    pub knob: &'static Knob,
    pub value: KnobValue,
    pub reason: String,
}

fn list_into(list: Vec<Wanted>) -> Vec<WantedValue> {
    list.into_iter()
        .map(|w| WantedValue {
            knob: w.knob,
            value: w.value,
            reason: w.reason,
        })
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
