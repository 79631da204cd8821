//! The failure tracer: kernel tracepoints read through perf_event_open(2), no BPF compiled.
//!
//! Per CPU, four tracepoint events share one ring buffer (`PERF_EVENT_IOC_SET_OUTPUT`):
//! `sock:inet_sock_set_state` filtered to `sport == 0 && newstate == 7` (a connect() that found
//! no port), `syscalls:sys_exit_connect` to `ret == -99`, `syscalls:sys_exit_bind` to
//! `ret == -98`, and `sched:sched_process_exit` (for the names of processes that exit before
//! they are looked up). The kernel filters, so an idle or healthy host writes nothing; the
//! tracer drains the buffers every few milliseconds and the pure half
//! ([`crate::collect::failures`]) pairs and counts. Needs root or CAP_PERFMON plus read access
//! to tracefs (mounted at /sys/kernel/tracing when it is not).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::collect::failures::{
    self, aggregate, parse_format, Correlator, ExitLayout, Failure, Layouts, ProcessExitLayout,
    ProcessInfo, RawSample, StateLayout, BIND_EXIT_FILTER, CONNECT_EXIT_FILTER,
    PROCESS_EXIT_FILTER, STATE_FILTER,
};
use crate::snapshot::{ConnectFailures, FailureCount, NetnsId};

use super::netns::{id_of, NETNS_RUN_DIR};

/// What `source` says in reports.
pub const SOURCE: &str = "tracepoints sock:inet_sock_set_state + syscalls:sys_exit_connect/sys_exit_bind (perf_event_open)";

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

// linux/perf_event.h
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
const PERF_RECORD_NAMESPACES: u32 = 16;
/// `perf_event_attr.namespaces`: PERF_RECORD_NAMESPACES when a task is created or changes
/// namespaces (clone, setns, unshare), so a process that exits before it is looked up still has
/// a known namespace when it entered it during the window (`ip netns exec`, containers).
const ATTR_NAMESPACES: u64 = 1 << 28;
/// `perf_event_attr.comm`: PERF_RECORD_COMM on exec. Its records are skipped; it is set because
/// a CPU-wide event receives side-band records (namespaces included) only when it asks for one
/// of the classic kinds (`is_sb_event` in kernel/events/core.c).
const ATTR_COMM: u64 = 1 << 9;
/// `perf_event_attr.watermark`: `wakeup_events` is then a byte count (`wakeup_watermark`).
const ATTR_WATERMARK: u64 = 1 << 14;
/// `NET_NS_INDEX` in PERF_RECORD_NAMESPACES' link_info array.
const NET_NS_INDEX: usize = 0;
/// `_IOW('$', 6, char *)`
const PERF_EVENT_IOC_SET_FILTER: libc::Ioctl = 0x4008_2406;
/// `_IO('$', 5)`
const PERF_EVENT_IOC_SET_OUTPUT: libc::Ioctl = 0x2405;
/// `_IO('$', 0)`
const PERF_EVENT_IOC_ENABLE: libc::Ioctl = 0x2400;
/// `PERF_ATTR_SIZE_VER5`: the layout below.
const ATTR_SIZE: u32 = 112;
/// Data pages per CPU buffer (a power of two): 256 KiB, about 1,700 failures (two samples each).
const DATA_PAGES: usize = 64;
/// How often the buffers are drained.
pub const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5`.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit field: disabled (0), inherit (1), …; all zero: enabled, all CPUs' tasks.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

/// Why the tracer cannot run; its text is the note the report shows.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("failure tracing needs tracefs: {0}")]
    NoTracefs(String),
    #[error(
        "failure tracing needs the tracepoint {name}, which this kernel does not offer ({why})"
    )]
    NoTracepoint { name: &'static str, why: String },
    #[error("failure tracing needs root or CAP_PERFMON (perf_event_open on {name}: {source})")]
    Denied {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("failure tracing could not set up {what}: {source}")]
    Setup {
        what: String,
        source: std::io::Error,
    },
}

/// One CPU's ring buffer.
struct Ring {
    base: *mut u8,
    len: usize,
    data_size: usize,
    /// The events writing into this buffer (the first owns the mapping and is polled); closed
    /// on drop.
    fds: Vec<OwnedFd>,
}

// SAFETY: the mapping is owned by this struct alone and only read/written through &mut self.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `Ring::open`, unmapped once here.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

impl Ring {
    // The mapping is page-aligned, so offsets 1024 and 1032 are 8-aligned.
    #[allow(clippy::cast_ptr_alignment)]
    fn head(&self) -> &AtomicU64 {
        // SAFETY: data_head sits at offset 1024 of the mapped perf_event_mmap_page, 8-aligned,
        // written by the kernel; read atomically.
        unsafe { &*self.base.add(1024).cast::<AtomicU64>() }
    }

    #[allow(clippy::cast_ptr_alignment)]
    fn tail(&self) -> &AtomicU64 {
        // SAFETY: data_tail at offset 1032 of the same page, written only by us.
        unsafe { &*self.base.add(1032).cast::<AtomicU64>() }
    }

    /// Copies out every record written since the last drain.
    fn drain(
        &mut self,
        out: &mut Vec<RawSample>,
        namespaces: &mut FxHashMap<u32, u64>,
        lost: &mut u64,
    ) {
        let head = self.head().load(Ordering::Acquire);
        let mut tail = self.tail().load(Ordering::Relaxed);
        let page = page_size();
        // SAFETY: the data area follows the first page and is `data_size` bytes long.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(page), self.data_size) };
        let mut record = Vec::new();
        while tail < head {
            let at = |i: u64| data[((tail + i) as usize) % self.data_size];
            let header: Vec<u8> = (0..8).map(at).collect();
            let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
            let size = u64::from(u16::from_ne_bytes([header[6], header[7]]));
            if size < 8 || size > head - tail {
                break;
            }
            record.clear();
            record.extend((0..size).map(at));
            match kind {
                PERF_RECORD_SAMPLE => {
                    if let Some(s) = parse_sample(&record[8..]) {
                        out.push(s);
                    }
                }
                PERF_RECORD_NAMESPACES => {
                    if let Some((pid, ino)) = parse_namespaces(&record[8..]) {
                        namespaces.insert(pid, ino);
                    }
                }
                PERF_RECORD_LOST if record.len() >= 24 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&record[16..24]);
                    *lost += u64::from_ne_bytes(n);
                }
                _ => {}
            }
            tail += size;
        }
        self.tail().store(tail, Ordering::Release);
    }
}

/// The body of a `PERF_RECORD_NAMESPACES`: (pid, inode of its network namespace).
fn parse_namespaces(b: &[u8]) -> Option<(u32, u64)> {
    let u64_at = |i: usize| Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let pid = u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?);
    let nr = u64_at(8)? as usize;
    if nr < NET_NS_INDEX + 1 {
        return None;
    }
    // link_info[i] = {dev: u64, ino: u64} from offset 16.
    let ino = u64_at(16 + NET_NS_INDEX * 16 + 8)?;
    Some((pid, ino))
}

/// The body of a `PERF_RECORD_SAMPLE` with TID, TIME and RAW.
fn parse_sample(b: &[u8]) -> Option<RawSample> {
    let u32_at = |i: usize| Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let pid = u32_at(0)?;
    let tid = u32_at(4)?;
    let time_ns = u64::from_ne_bytes(b.get(8..16)?.try_into().ok()?);
    let raw_len = u32_at(16)? as usize;
    let data = b.get(20..20 + raw_len)?.to_vec();
    Some(RawSample {
        pid,
        tid,
        time_ns,
        data,
    })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// The tracefs directory, mounting it when nothing offers one (needs root).
fn tracefs() -> Result<PathBuf, TracerError> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = CString::new(TRACEFS).map_err(|e| TracerError::NoTracefs(e.to_string()))?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(TracerError::NoTracefs(format!(
            "not mounted, and mounting it at {TRACEFS} failed: {e} (run as root, or `mount -t tracefs tracefs {TRACEFS}`)"
        )));
    }
    Ok(PathBuf::from(TRACEFS))
}

fn read_format(root: &Path, name: &'static str) -> Result<failures::Format, TracerError> {
    let path = root.join("events").join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => TracerError::Denied { name, source: e },
        _ => TracerError::NoTracepoint {
            name,
            why: format!("{}: {e}", path.display()),
        },
    })?;
    parse_format(&text).map_err(|e| TracerError::NoTracepoint {
        name,
        why: format!("{}: {e}", path.display()),
    })
}

fn perf_open(
    id: u64,
    cpu: i32,
    name: &'static str,
    namespaces: bool,
) -> Result<OwnedFd, TracerError> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: ATTR_SIZE,
        config: id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_RAW,
        // The tracer sleeps in poll(2) between drains (`FailureTracer::wait`): woken by its
        // 20 ms timer, or at once when a burst has filled a quarter of a buffer, so the other
        // three quarters absorb the time it takes to run; never a wakeup per sample.
        wakeup_events: (page_size() * DATA_PAGES / 4) as u32,
        flags: ATTR_WATERMARK
            | if namespaces {
                ATTR_NAMESPACES | ATTR_COMM
            } else {
                0
            },
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr of `ATTR_SIZE` bytes that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1 as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => TracerError::Denied { name, source: e },
            Some(libc::ENOENT | libc::ENODEV | libc::EINVAL) => TracerError::NoTracepoint {
                name,
                why: e.to_string(),
            },
            _ => TracerError::Setup {
                what: format!("{name} on CPU {cpu}"),
                source: e,
            },
        });
    }
    // SAFETY: perf_event_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `req` is `libc::Ioctl`: `c_ulong` in glibc, `c_int` in musl (the static build).
fn ioctl(
    fd: &OwnedFd,
    req: libc::Ioctl,
    arg: libc::c_ulong,
    what: String,
) -> Result<(), TracerError> {
    // SAFETY: `fd` is a live perf event; `arg` is what `req` expects (a C string pointer that
    // outlives the call, another perf descriptor, or 0).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if rc != 0 {
        return Err(TracerError::Setup {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn online_cpus() -> Vec<i32> {
    // /sys/devices/system/cpu/online: "0-3,5"
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            cpus.extend(a..=b);
        }
    }
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        cpus.extend(0..n as i32);
    }
    cpus
}

/// Traces failed connect()/bind() calls host-wide while it lives.
pub struct FailureTracer {
    layouts: Layouts,
    rings: Vec<Ring>,
    correlator: Correlator,
    /// Every process that failed, looked up when its first failure was read.
    processes: FxHashMap<u32, ProcessInfo>,
    /// Network namespace inode per pid, from PERF_RECORD_NAMESPACES.
    namespaces: FxHashMap<u32, u64>,
    /// The nsfs device (one for all namespaces), to make ids of those inodes.
    netns_dev: u64,
    samples: Vec<RawSample>,
    lost: u64,
}

impl FailureTracer {
    /// Opens the tracepoints on every online CPU, or says what is missing.
    pub fn start() -> Result<Self, TracerError> {
        let root = tracefs()?;
        let state = read_format(&root, "sock/inet_sock_set_state")?;
        let connect = read_format(&root, "syscalls/sys_exit_connect")?;
        let bind = read_format(&root, "syscalls/sys_exit_bind")?;
        let pexit = read_format(&root, "sched/sched_process_exit")?;
        let bad = |name: &'static str| {
            move |e: failures::FormatError| TracerError::NoTracepoint {
                name,
                why: e.to_string(),
            }
        };
        let layouts = Layouts {
            state: StateLayout::new(&state).map_err(bad("sock/inet_sock_set_state"))?,
            connect_exit: ExitLayout::new(&connect).map_err(bad("syscalls/sys_exit_connect"))?,
            bind_exit: ExitLayout::new(&bind).map_err(bad("syscalls/sys_exit_bind"))?,
            process_exit: ProcessExitLayout::new(&pexit)
                .map_err(bad("sched/sched_process_exit"))?,
        };
        let events: [(&'static str, u64, &str); 4] = [
            ("sock/inet_sock_set_state", layouts.state.id, STATE_FILTER),
            (
                "syscalls/sys_exit_connect",
                layouts.connect_exit.id,
                CONNECT_EXIT_FILTER,
            ),
            (
                "syscalls/sys_exit_bind",
                layouts.bind_exit.id,
                BIND_EXIT_FILTER,
            ),
            (
                "sched/sched_process_exit",
                layouts.process_exit.id,
                PROCESS_EXIT_FILTER,
            ),
        ];
        let page = page_size();
        let mut rings = Vec::new();
        for cpu in online_cpus() {
            let mut fds = Vec::new();
            for (i, (name, id, filter)) in events.into_iter().enumerate() {
                let fd = perf_open(id, cpu, name, i == 0)?;
                let filter = CString::new(filter).map_err(|e| TracerError::Setup {
                    what: format!("the filter of {name}"),
                    source: std::io::Error::other(e),
                })?;
                ioctl(
                    &fd,
                    PERF_EVENT_IOC_SET_FILTER,
                    filter.as_ptr() as libc::c_ulong,
                    format!("the filter `{}` on {name}", filter.to_string_lossy()),
                )?;
                fds.push(fd);
            }
            let len = page * (1 + DATA_PAGES);
            // SAFETY: maps the first event's ring buffer; checked against MAP_FAILED below.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fds[0].as_raw_fd(),
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(TracerError::Setup {
                    what: format!("the ring buffer of CPU {cpu}"),
                    source: std::io::Error::last_os_error(),
                });
            }
            // Owned from here: an error below unmaps it on drop.
            let mut ring = Ring {
                base: base.cast(),
                len,
                data_size: page * DATA_PAGES,
                fds: Vec::new(),
            };
            for fd in &fds[1..] {
                ioctl(
                    fd,
                    PERF_EVENT_IOC_SET_OUTPUT,
                    fds[0].as_raw_fd() as libc::c_ulong,
                    format!("the shared ring buffer of CPU {cpu}"),
                )?;
            }
            for fd in &fds {
                ioctl(
                    fd,
                    PERF_EVENT_IOC_ENABLE,
                    0,
                    format!("the events of CPU {cpu}"),
                )?;
            }
            ring.fds = fds;
            rings.push(ring);
        }
        Ok(Self {
            layouts,
            rings,
            correlator: Correlator::default(),
            processes: FxHashMap::default(),
            namespaces: FxHashMap::default(),
            netns_dev: super::netns::current_id().map_or(0, |id| id.dev),
            samples: Vec::new(),
            lost: 0,
        })
    }

    /// Reads every buffer and returns the failures completed since the last call, each
    /// failing process looked up (name, namespace) the first time it is seen.
    pub fn drain(&mut self) -> Vec<Failure> {
        self.samples.clear();
        for ring in &mut self.rings {
            ring.drain(&mut self.samples, &mut self.namespaces, &mut self.lost);
        }
        self.samples.sort_by_key(|s| s.time_ns);
        let mut out = Vec::new();
        let mut last = 0;
        for s in &self.samples {
            last = s.time_ns;
            if let Some(e) = self.layouts.decode(s) {
                out.extend(self.correlator.push(e));
            }
        }
        if last > 0 {
            self.correlator.expire(last);
        }
        for f in &out {
            let info = self.processes.entry(f.pid).or_insert_with(|| lookup(f.pid));
            if info.netns.is_none() {
                info.netns = self.namespaces.get(&f.pid).map(|&ino| NetnsId {
                    dev: self.netns_dev,
                    ino,
                });
            }
        }
        for (pid, comm) in self.correlator.take_exits() {
            if let Some(p) = self.processes.get_mut(&pid) {
                p.exited = true;
                p.name.get_or_insert(comm);
            }
        }
        out
    }

    /// Sleeps until a buffer is a quarter full or `timeout` has passed, whichever comes first:
    /// drains come every `timeout` while failures are few, and as fast as a burst needs.
    pub fn wait(&self, timeout: Duration) {
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .filter_map(|r| r.fds.first())
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries for the call; an error
        // (EINTR) only ends the wait early.
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
        }
    }

    /// Samples the kernel dropped (buffer full) so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// What is known of a failing process (after [`Self::drain`] returned its failure).
    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.processes.get(&pid)
    }

    /// Marks processes gone since they were looked up, and returns the table.
    pub fn refresh_exited(&mut self) -> &FxHashMap<u32, ProcessInfo> {
        for (pid, p) in &mut self.processes {
            if !p.exited && !Path::new(&format!("/proc/{pid}")).exists() {
                p.exited = true;
            }
        }
        &self.processes
    }
}

impl FailureTracer {
    /// Forgets processes that have exited (for tracers that run for days: `serve`).
    pub fn forget_exited(&mut self) {
        self.refresh_exited();
        self.processes.retain(|_, p| !p.exited);
        let alive = &self.processes;
        self.namespaces.retain(|pid, _| {
            alive.contains_key(pid) || Path::new(&format!("/proc/{pid}")).exists()
        });
    }
}

/// The namespace a target names (the caller's own for the host).
pub fn target_id(target: &crate::snapshot::Target) -> Option<NetnsId> {
    use crate::snapshot::Target;
    match target {
        Target::Host => super::netns::current_id(),
        Target::Netns(name) => id_of(&Path::new(NETNS_RUN_DIR).join(name)),
        Target::Process(pid) => id_of(Path::new(&format!("/proc/{pid}/ns/net"))),
    }
}

/// Name and namespace of a live process (`exited` when it is already gone).
fn lookup(pid: u32) -> ProcessInfo {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string());
    let netns = id_of(Path::new(&format!("/proc/{pid}/ns/net")));
    ProcessInfo {
        exited: name.is_none(),
        name,
        netns,
    }
}

/// Names of the namespaces under /run/netns.
pub fn netns_names() -> FxHashMap<NetnsId, String> {
    let mut names = FxHashMap::default();
    if let Ok(dir) = std::fs::read_dir(NETNS_RUN_DIR) {
        for e in dir.flatten() {
            if let (Some(id), Some(name)) = (id_of(&e.path()), e.file_name().to_str()) {
                names.insert(id, name.to_string());
            }
        }
    }
    names
}

/// Traces for `window`, then counts what failed in namespace `target` (every namespace when
/// `None`). The error is the note to show instead.
pub fn observe(window: Duration, target: Option<NetnsId>) -> Result<ConnectFailures, TracerError> {
    let mut tracer = FailureTracer::start()?;
    let started = Instant::now();
    let mut failures = Vec::new();
    loop {
        let left = window.saturating_sub(started.elapsed());
        tracer.wait(left.min(DRAIN_EVERY));
        failures.extend(tracer.drain());
        if started.elapsed() >= window {
            break;
        }
    }
    let window_seconds = started.elapsed().as_secs_f64();
    let lost = tracer.lost();
    let processes = tracer.refresh_exited();
    let all: Vec<FailureCount> = aggregate(&failures, processes, &netns_names());
    Ok(failures::report(SOURCE, window_seconds, all, target, lost))
}
