//! Draws an [`App`] with ratatui: header (host, range, TIME_WAIT vs buckets, verdict,
//! interval), the pools table, the detail pane of the selected pool, and a footer with keys.
//! Pure over a [`Buffer`], so tests render on `TestBackend` and `--once` prints the same frame.

use std::time::Duration;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Paragraph, Row, Sparkline, StatefulWidget, Table, TableState, Widget,
    Wrap,
};

use super::state::{namespace_label, App, PoolStats};
use std::fmt::Write as _;

use crate::analysis::{Level, Pool, Scope, Severity};
use crate::report::namespaces::identity_line;
use crate::snapshot::Os;
use crate::units::{group, human_duration};

#[derive(Debug, Clone, Copy)]
pub struct ViewOptions {
    pub color: bool,
}

struct Theme(bool);

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.0 {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
    fn level(&self, l: Level) -> Style {
        match l {
            Level::Ok => self.fg(Color::Green),
            Level::Warning => self.fg(Color::Yellow),
            Level::Critical => self.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }
    fn severity(&self, s: Severity) -> Style {
        match s {
            Severity::Info => self.fg(Color::Cyan),
            Severity::Warning => self.level(Level::Warning),
            Severity::Critical => self.level(Level::Critical),
        }
    }
    fn dim(&self) -> Style {
        if self.0 {
            Style::default().add_modifier(Modifier::DIM)
        } else {
            Style::default()
        }
    }
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// The pool as people say it: who → whom.
pub fn pool_label(p: &Pool, os: Os) -> String {
    match p.scope {
        Scope::LocalAddress if os == Os::Windows => format!("{} → any", p.key.local_ip),
        Scope::LocalAddress => format!("{} → any (bind)", p.key.local_ip),
        Scope::Udp => format!(
            "{} (all addresses)",
            crate::analysis::udp::udp_pool_name(p.key.local_ip)
        ),
        _ => p.key.to_string(),
    }
}

/// The owner column: `name (pid)`, or the name alone when that does not fit `width`.
fn owner_cell(p: &Pool, scanned: bool, width: usize) -> String {
    let full = owner_text(p, scanned);
    if full.chars().count() <= width {
        return full;
    }
    let name = match p.processes.as_slice() {
        [one] => one.name.clone(),
        _ => full,
    };
    if name.chars().count() <= width {
        name
    } else {
        let mut cut: String = name.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn owner_text(p: &Pool, scanned: bool) -> String {
    match p.processes.as_slice() {
        _ if !scanned => "—".into(),
        [] => "—".into(),
        [one] => format!("{} ({})", one.name, one.pid),
        [first, rest @ ..] if rest.iter().all(|o| o.name == first.name) => {
            format!("{} ×{}", first.name, rest.len() + 1)
        }
        [first, rest @ ..] => format!("{} +{}", first.name, rest.len()),
    }
}

fn rate(r: Option<f64>) -> String {
    let Some(r) = r else {
        return "—".into();
    };
    let a = r.abs();
    let s = if a < 10.0 && a.fract() != 0.0 {
        format!("{a:.1}")
    } else {
        group(a.round() as u64)
    };
    if r < 0.0 && s != "0" && s != "0.0" {
        format!("-{s}")
    } else {
        s
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "INFO",
        Severity::Warning => "WARNING",
        Severity::Critical => "CRITICAL",
    }
}

fn signed_rate(r: Option<f64>) -> String {
    match r {
        Some(r) if r > 0.0 => format!("+{}", rate(Some(r))),
        other => rate(other),
    }
}

/// `███░░░ 62%`: a bar of `width` cells and the percentage.
fn bar(u: Option<f64>, width: usize) -> String {
    let Some(u) = u else {
        return format!("{:>w$}", "—", w = width + 5);
    };
    let filled = ((u.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!(
        "{}{} {:>3.0}%",
        "█".repeat(filled),
        "░".repeat(width - filled),
        (u * 100.0).min(999.0)
    )
}

/// The last `n` utilization points as one-line block characters.
fn trend(stats: Option<&PoolStats>, n: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(s) = stats else {
        return String::new();
    };
    let skip = s.history.len().saturating_sub(n);
    s.history
        .iter()
        .skip(skip)
        .map(|p| match p.utilization() {
            Some(u) => BARS[((u.clamp(0.0, 1.0) * 7.0).round() as usize).min(7)],
            None => ' ',
        })
        .collect()
}

/// Joins `parts` with " · " in their order, leaving out the least important (highest number)
/// until the line fits `width`.
fn fit_parts(parts: &[(u8, String)], width: usize) -> String {
    let mut keep: Vec<&(u8, String)> = parts.iter().collect();
    loop {
        let line = keep
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" · ");
        if line.chars().count() <= width || keep.len() <= 1 {
            return line;
        }
        let drop = keep
            .iter()
            .enumerate()
            .max_by_key(|(i, (prio, _))| (*prio, *i))
            .map_or(0, |(i, _)| i);
        keep.remove(drop);
    }
}

/// Draws the whole screen into `buf`.
pub fn render(app: &App, opts: ViewOptions, area: Rect, buf: &mut Buffer) {
    let t = Theme(opts.color);
    let detail_height = if app.detail && app.selected_pool().is_some() {
        (area.height / 2).clamp(6, 12)
    } else {
        0
    };
    let [header, table, detail, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(2),
        Constraint::Length(detail_height),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(app, &t, header, buf);
    render_table(app, &t, table, buf);
    if detail_height > 0 {
        render_detail(app, &t, detail, buf);
    }
    render_footer(app, &t, footer, buf);
}

fn render_header(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let Some(cur) = &app.current else {
        let msg = app
            .error
            .clone()
            .unwrap_or_else(|| "portdoctor top · collecting…".into());
        Paragraph::new(msg).render(area, buf);
        return;
    };
    let (snap, a) = (&cur.snapshot, &cur.analysis);
    let os = match snap.os {
        Os::Linux => "linux",
        Os::Windows => "windows",
    };
    let mut who = format!(
        "portdoctor top · {} · {os} {}",
        snap.host.hostname.as_deref().unwrap_or("?"),
        snap.host.os_version.as_deref().unwrap_or("")
    )
    .trim_end()
    .to_string();
    if let Some(ns) = snap.host.target.label() {
        who = format!("{who} · netns {ns}");
    }
    let verdict = a.verdict.level.name().to_uppercase();
    let state = if app.paused {
        "PAUSED".to_string()
    } else {
        let every = |d: Duration| {
            if d.as_secs_f64() < 1.0 {
                format!("{} ms", d.as_millis())
            } else {
                human_duration(d.as_secs_f64())
            }
        };
        match app.cycle {
            // Stretched so refreshing stays a small share of the time (big table, slow host).
            Some(c) if c > app.interval.mul_f64(1.1) => {
                format!("every {} (slow: {})", every(app.interval), every(c))
            }
            _ => format!("every {}", every(app.interval)),
        }
    };
    let right = format!("{state}  {verdict}");
    let gap = (area.width as usize).saturating_sub(who.chars().count() + right.chars().count());
    let line1 = Line::from(vec![
        Span::styled(who, bold()),
        Span::raw(" ".repeat(gap.max(1))),
        Span::styled(
            state,
            if app.paused {
                t.fg(Color::Yellow)
            } else {
                t.dim()
            },
        ),
        Span::raw("  "),
        Span::styled(verdict, t.level(a.verdict.level)),
    ]);

    // (priority, text): what does not fit the width goes, least important first.
    let mut parts: Vec<(u8, String)> = Vec::new();
    match &a.capacity {
        Some(c) => {
            parts.push((
                0,
                format!("range {} ({})", c.range, group(u64::from(c.range.len()))),
            ));
            let word = if snap.os == Os::Windows {
                "excluded"
            } else {
                "reserved"
            };
            parts.push((
                2,
                format!("{word} {}", group(u64::from(c.reserved_in_range))),
            ));
            if !c.bound_in_range.is_empty() {
                parts.push((3, format!("bound {}", group(c.bound_in_range.len() as u64))));
            }
        }
        None => parts.push((0, "range unknown".into())),
    }
    parts.push((
        1,
        match snap.settings.max_tw_buckets {
            Some(m) => format!(
                "TIME_WAIT {} of {} buckets",
                group(a.time_wait_total),
                group(m)
            ),
            None => format!("TIME_WAIT {}", group(a.time_wait_total)),
        },
    ));
    if let Some(s) = snap.settings.time_wait_seconds {
        parts.push((4, format!("held {s} s")));
    }
    match (&app.failures, &app.failure_note) {
        (Some(f), _) => parts.push((3, format!("failed connects {}", group(f.total)))),
        (None, Some(_)) => parts.push((5, "failures not traced (needs root)".into())),
        (None, None) => {}
    }
    if snap.os == Os::Linux {
        parts.push((
            2,
            match snap.settings.tw_reuse {
                Some(v) => format!("tw_reuse {v}"),
                None => "tw_reuse ?".into(),
            },
        ));
    }
    parts.extend(super::snat::header_parts(snap, a, app.nat_drops));
    let line2 = Line::from(fit_parts(&parts, area.width as usize));

    // SNAT pools count too (as in check's `pools:` line): the header names the fullest.
    let snat_levels = || {
        std::iter::once(&cur.analysis)
            .chain(cur.others.iter().map(|n| &n.analysis))
            .filter_map(|a| a.snat.as_ref())
            .flat_map(|s| s.pools.iter().map(|p| p.level))
    };
    let count = |l: Level| {
        cur.rows().filter(|p| p.level == l).count() + snat_levels().filter(|&s| s == l).count()
    };
    let shown = app.visible().len();
    let filtering = !app.filter.is_empty() || app.editing_filter;
    let narrow = area.width < 100 || (filtering && area.width < 120);
    let mut line3 = vec![
        Span::raw(if narrow {
            format!("sockets {} · pools ", group(snap.sockets.len() as u64))
        } else {
            format!(
                "sockets {} · outbound {} · pools ",
                group(snap.sockets.len() as u64),
                group(a.outbound),
            )
        }),
        Span::styled(
            format!("{} critical", count(Level::Critical)),
            t.level(Level::Critical),
        ),
        Span::raw(", "),
        Span::styled(
            format!("{} warning", count(Level::Warning)),
            t.level(Level::Warning),
        ),
        Span::raw(format!(", {} ok", count(Level::Ok))),
    ];
    if cur.all_namespaces() {
        let worst = cur
            .others
            .iter()
            .map(|n| n.analysis.verdict.level)
            .chain([a.verdict.level])
            .max()
            .unwrap_or(Level::Ok);
        line3.push(Span::raw(" · "));
        line3.push(Span::styled(
            format!("{} netns, worst {}", cur.others.len() + 1, worst.name()),
            t.level(worst),
        ));
    }
    line3.push(Span::styled(
        format!(" · sort {}", app.sort.name()),
        t.dim(),
    ));
    if filtering {
        let cursor = if app.editing_filter { "_" } else { "" };
        line3.push(Span::styled(
            format!(
                " · filter \"{}{cursor}\" {shown}/{}",
                app.filter,
                cur.rows().count()
            ),
            t.fg(Color::Cyan),
        ));
    }
    Paragraph::new(vec![line1, line2, Line::from(line3)]).render(area, buf);
}

fn render_table(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let Some(cur) = &app.current else {
        return;
    };
    let rows_data = app.visible();
    if rows_data.is_empty() {
        let msg = if cur.rows().next().is_none() {
            "no outbound connections use the ephemeral range"
        } else {
            "no pool matches the filter (Esc clears it)"
        };
        Paragraph::new(Line::styled(msg, t.dim())).render(area, buf);
        return;
    }
    let wide = area.width >= 120;
    let medium = area.width >= 100;
    let os = cur.snapshot.os;
    let bar_w: usize = if medium { 6 } else { 4 };
    let all = cur.all_namespaces();

    let mut header = Vec::new();
    let mut widths = Vec::new();
    if all {
        header.push("NAMESPACE/POD");
        widths.push(Constraint::Length(if wide {
            22
        } else if medium {
            16
        } else {
            12
        }));
    }
    header.extend(["POOL local → remote", "IN USE"]);
    widths.extend([Constraint::Min(18), Constraint::Length(7)]);
    if medium {
        header.push("TIME_WAIT");
        widths.push(Constraint::Length(9));
    }
    if wide {
        header.push("CAPACITY");
        widths.push(Constraint::Length(8));
    }
    header.extend(["USE", "NEW/s"]);
    widths.extend([Constraint::Length(bar_w as u16 + 5), Constraint::Length(6)]);
    // Failed connect() calls per second, while the tracer runs (docs/failures.md).
    let traced = app.failures.is_some();
    if traced {
        header.push("FAIL/s");
        widths.push(Constraint::Length(6));
    }
    // With -A as well, FAIL/s takes 4 more columns from TREND.
    let trend_w: usize = if traced && all { 8 } else { 12 };
    header.extend(["GROW/s", "FULL IN"]);
    widths.extend([Constraint::Length(6), Constraint::Length(7)]);
    if wide {
        header.push("TREND");
        widths.push(Constraint::Length(trend_w as u16));
    }
    header.push("OWNER");
    // FAIL/s takes its 7 columns from OWNER below 127 columns (with -A: from OWNER and TREND
    // at any width), so pools keep theirs.
    let owner_w: u16 = if (area.width >= 127 && !all) || (medium && !traced) {
        18
    } else {
        12
    };
    widths.push(Constraint::Length(owner_w));
    // The pool column gets what the others leave (one space between columns); a longer label
    // loses its middle, never the remote port at its end.
    let fixed: u16 = widths
        .iter()
        .map(|c| match c {
            Constraint::Length(n) => *n,
            _ => 0,
        })
        .sum();
    let gaps = u16::try_from(widths.len().saturating_sub(1)).unwrap_or(u16::MAX);
    let pool_w = usize::from(area.width.saturating_sub(fixed + gaps).max(18));

    let right = |s: String| Cell::from(Line::from(s).right_aligned());
    let rows: Vec<Row> = rows_data
        .iter()
        .map(|p| {
            let st = app.stats.get(&p.id());
            let scanned = cur.snapshot_of(p).owners.is_some();
            let mut cells = Vec::new();
            if all {
                cells.push(Cell::from(p.namespace.map_or_else(
                    || "own".to_string(),
                    |n| namespace_label(&n.identity),
                )));
            }
            cells.extend([
                Cell::from(crate::report::text::fit(&pool_label(p, os), pool_w)),
                right(group(p.in_use)),
            ]);
            // UDP has no TIME_WAIT, no connect rate and no traced connect() failures.
            let udp = p.scope == Scope::Udp;
            if medium {
                cells.push(right(if udp {
                    "—".to_string()
                } else if p.blocking_time_wait == p.time_wait {
                    group(p.time_wait)
                } else {
                    format!("{}/{}", group(p.blocking_time_wait), group(p.time_wait))
                }));
            }
            if wide {
                cells.push(right(
                    p.capacity.map_or("—".into(), |c| group(u64::from(c))),
                ));
            }
            cells.push(Cell::from(bar(p.utilization, bar_w)));
            // Without TIME_WAIT timers (Windows) only the rise of in use is known: at least.
            cells.push(right(match st {
                _ if udp => "—".to_string(),
                Some(s) if s.connect_is_lower_bound && s.connect_per_s.is_some_and(|r| r > 0.0) => {
                    format!("≥{}", rate(s.connect_per_s))
                }
                _ => rate(st.and_then(|s| s.connect_per_s)),
            }));
            if traced {
                cells.push(right(if udp {
                    "—".to_string()
                } else {
                    rate(app.fail_rate(p))
                }));
            }
            cells.push(right(signed_rate(st.and_then(|s| s.growth_per_s))));
            cells.push(right(
                st.and_then(|s| s.eta_seconds)
                    .map_or("—".into(), human_duration),
            ));
            if wide {
                cells.push(Cell::from(trend(st, trend_w)));
            }
            cells.push(Cell::from(owner_cell(p, scanned, owner_w as usize)));
            Row::new(cells).style(t.level(p.level).remove_modifier(Modifier::BOLD))
        })
        .collect();
    let selected = app
        .selected
        .and_then(|s| rows_data.iter().position(|p| p.id() == s));
    let mut state = TableState::default().with_selected(selected);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(bold()))
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    StatefulWidget::render(table, area, buf, &mut state);
}

fn render_detail(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let (Some(row), Some(cur)) = (app.selected_pool(), &app.current) else {
        return;
    };
    let p: &Pool = row.pool;
    let snapshot = cur.snapshot_of(&row);
    let os = snapshot.os;
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Span::styled(format!(" {} ", pool_label(p, os)), bold()));
    let inner = block.inner(area);
    block.render(area, buf);
    let spark_w = if inner.width >= 90 { 30 } else { 0 };
    let [text_area, spark_area] =
        Layout::horizontal([Constraint::Min(20), Constraint::Length(spark_w)])
            .spacing(2)
            .areas(inner);

    let reusable = p.time_wait - p.blocking_time_wait;
    // Every other state by name: CLOSE_WAIT and SYN_SENT fill pools as ESTABLISHED does.
    let others: String = p
        .states
        .iter()
        .filter(|(name, n)| **n > 0 && !matches!(**name, "ESTABLISHED" | "TIME_WAIT"))
        .fold(String::new(), |mut out, (name, n)| {
            let _ = write!(out, " · {name} {}", group(*n));
            out
        });
    let mut lines = Vec::new();
    // With -A: which namespace, pod and container the pool is in.
    if let Some(id) = row.namespace.map(|n| &n.identity).or(cur.own.as_ref()) {
        lines.push(Line::styled(identity_line(id), t.fg(Color::Cyan)));
    }
    lines.push(Line::from(format!(
        "ESTABLISHED {} · TIME_WAIT {} ({} blocking, {} reusable){others}",
        group(p.established),
        group(p.time_wait),
        group(p.blocking_time_wait),
        group(reusable),
    )));
    lines.push(Line::from(format!(
        "used {} of {} · free {} · tw_reuse {}",
        group(p.used()),
        p.capacity.map_or("—".into(), |c| group(u64::from(c))),
        p.free().map_or("—".into(), group),
        if p.tw_reuse_applies {
            "applies"
        } else {
            "does not apply"
        }
    )));
    if let Some(f) = &app.failures {
        let recent: Vec<_> = f.recent_in(app.netns_of(&row), p).take(3).collect();
        if recent.is_empty() {
            lines.push(Line::styled(
                "no failed connect() in this pool since top started",
                t.dim(),
            ));
        }
        for r in recent {
            let x = &r.last;
            let who = match &x.process {
                Some(name) => format!("{} (pid {})", crate::units::printable(name), x.pid),
                None => format!("pid {}", x.pid),
            };
            let to = match (x.remote_ip, x.remote_port) {
                (Some(std::net::IpAddr::V6(ip)), Some(port)) => format!("[{ip}]:{port}"),
                (Some(ip), Some(port)) => format!("{ip}:{port}"),
                _ => "?".into(),
            };
            let from = x.local_ip.map_or("*".into(), |ip| ip.to_string());
            let time = crate::units::format_utc(x.unix_ms);
            let times = if r.count > 1 {
                format!(" ×{}", group(r.count))
            } else {
                String::new()
            };
            lines.push(Line::from(vec![
                Span::styled("failed ", t.level(Level::Critical)),
                Span::raw(format!(
                    "{} {who}{times} {from} → {to} {}",
                    time.get(11..).unwrap_or(&time),
                    x.error.name()
                )),
            ]));
        }
    }
    lines.push(Line::from(if snapshot.owners.is_none() {
        "owners not scanned (--no-owners)".to_string()
    } else if p.processes.is_empty() {
        "owners unknown (TIME_WAIT has none; other users' sockets need root)".to_string()
    } else {
        let list: Vec<String> = p
            .processes
            .iter()
            .map(|o| format!("{} ({}) {}", o.name, o.pid, group(o.sockets)))
            .collect();
        format!("owners {}", list.join(" · "))
    }));
    // Owner scans are paced by their cost (collect::refresh); say how old the one shown is.
    if let Some(age) = app.refresh.and_then(|r| r.owners_age) {
        if age > app.interval && snapshot.owners.is_some() {
            lines.push(Line::styled(
                format!(
                    "owners as of {} ago (the /proc scan is paced by its cost; new sockets show up at the next)",
                    human_duration(age.as_secs_f64().round())
                ),
                t.dim(),
            ));
        }
    }
    let findings = app.findings_for(&row);
    if findings.is_empty() {
        lines.push(Line::styled("no finding about this pool", t.dim()));
    }
    for f in findings.iter().take(2) {
        lines.push(Line::from(vec![
            Span::styled(
                format!("{} ", severity_name(f.severity)),
                t.severity(f.severity),
            ),
            Span::styled(f.code.as_str(), bold()),
            Span::raw(format!("  {}", f.message)),
        ]));
        for (i, l) in f.fix.lines().enumerate() {
            let label = if i == 0 { "fix " } else { "    " };
            lines.push(Line::from(vec![
                Span::styled(label, t.dim()),
                Span::raw(l.to_string()),
            ]));
        }
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(text_area, buf);

    if spark_w > 0 {
        let stats = app.stats.get(&row.id());
        let n = spark_area.width as usize;
        let hist: Vec<_> = stats
            .map(|s| {
                let skip = s.history.len().saturating_sub(n);
                s.history.iter().skip(skip).copied().collect()
            })
            .unwrap_or_default();
        let util: Vec<u64> = hist
            .iter()
            .map(|h| h.utilization().map_or(0, |u| (u * 100.0).round() as u64))
            .collect();
        let rates: Vec<u64> = hist
            .iter()
            .map(|h| h.connect_per_s().map_or(0, |r| r.round() as u64))
            .collect();
        let max_rate = rates.iter().copied().max().unwrap_or(0);
        let half = spark_area.height / 2;
        let [u_area, r_area] =
            Layout::vertical([Constraint::Length(half), Constraint::Min(1)]).areas(spark_area);
        Sparkline::default()
            .block(Block::default().title(format!(
                "use {}",
                p.utilization
                    .map_or("—".into(), |u| format!("{:.0}%", u * 100.0))
            )))
            .data(util)
            .max(100)
            .style(t.level(p.level))
            .render(u_area, buf);
        Sparkline::default()
            .block(Block::default().title(format!("new/s max {}", group(max_rate))))
            .data(rates)
            .style(t.fg(Color::Cyan))
            .render(r_area, buf);
    }
}

fn render_footer(app: &App, t: &Theme, area: Rect, buf: &mut Buffer) {
    let text = if app.editing_filter {
        "type to filter pools and owners · Enter keep · Esc clear".to_string()
    } else if let Some(e) = &app.error {
        format!("error: {e}")
    } else if app.loaded {
        "saved snapshot, nothing refreshes · q quit · s sort · / filter · ↑↓ select · enter detail"
            .to_string()
    } else if area.width >= 100 {
        "q quit · s sort · / filter · space pause · +/- interval · ↑↓ select · enter detail · r refresh"
            .to_string()
    } else {
        "q quit · s sort · / filter · space pause · +/- interval · enter detail".to_string()
    };
    let style = if app.error.is_some() {
        t.fg(Color::Red)
    } else {
        t.dim()
    };
    Paragraph::new(Line::styled(text, style)).render(area, buf);
}

/// The buffer as plain text: one line per row, trailing spaces trimmed.
pub fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            if let Some(c) = buf.cell((x, y)) {
                line.push_str(c.symbol());
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// One frame as text, for `--once` and tests.
pub fn render_text(app: &App, width: u16, height: u16) -> String {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    render(app, ViewOptions { color: false }, area, &mut buf);
    buffer_text(&buf)
}
