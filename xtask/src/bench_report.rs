//! The benchmark's report: a markdown table and SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::bench::{
    mean_interval, HerdRow, Propagation, Results, LOADS, TARGET_BURST, TARGET_BURST_RATE,
    TARGET_CLIENTS, TARGET_RSS_BYTES, TARGET_SHARE_QUIC, TARGET_SHARE_TCP,
};
use crate::bench_procs::TOPOLOGY;

pub fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn micros(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "**pass**"
    } else {
        "**miss**"
    }
}

/// Lost and checked updates over propagations.
fn checks<'a>(ps: impl IntoIterator<Item = &'a Propagation>) -> String {
    let (mut lost, mut checked) = (0, 0);
    for p in ps {
        lost += p.lost();
        checked += p.verified.iter().map(|(_, v)| v.checked).sum::<usize>();
    }
    format!("{lost} / {}", thousands(checked as f64))
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(crate::workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let Some(p) = &r.params else {
        return md;
    };
    let _ = writeln!(
        md,
        "# herd benchmark{}\n",
        if p.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(
        md,
        "Commit {}, {} cores shared by the five nodes and the load generator, 127.0.0.1 only. \
         Loads: IAMATs at Clark, every reply checked; latency per request, from the write that \
         carried it to the read that brought its reply. Ceiling: a line server that only answers \
         (same parse, same AT line, nothing stored, flooded or logged). The ceiling and both \
         herds are up together and measured in {} rounds: in each, every configuration gets \
         each load in turn for {:.2} s after {:.2} s of warm-up, starting one configuration \
         further along each round, so all of them see the same drifts of the machine's speed. \
         Rates are over all rounds; *per round* is the lowest and highest share of the \
         ceiling's rate in the same round, and *rounds' mean* the mean of those shares with \
         its 95% interval (Student's t): how far this run's share can be trusted. *Others caught up*: after each round's load, the \
         time from its last reply until the four other nodes held every connection's last \
         update (WHATSAT every millisecond), the longest of the rounds.\n",
        git_commit().unwrap_or_else(|| "?".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        p.rounds,
        p.slice().as_secs_f64(),
        p.warmup.as_secs_f64(),
    );

    md.push_str("## Client path at Clark\n\n");
    md.push_str(
        "| configuration | connections × in flight | replies/s | p50 | p99 | share of ceiling | per round | rounds' mean (95%) | others caught up |\n",
    );
    md.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for row in &r.loads {
        let Some(res) = &row.result else { continue };
        let share = match r.ceiling_rate(row.conns, row.depth) {
            Some(c) if c > 0.0 => format!("{:.0}%", 100.0 * res.rate() / c),
            _ => "n/a".to_string(),
        };
        let shares = if crate::bench::is_ceiling(&row.config) {
            Vec::new()
        } else {
            r.round_shares(&row.config, row.conns, row.depth)
        };
        let per_round = match (
            shares.iter().copied().reduce(f64::min),
            shares.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) => format!("{:.0}–{:.0}%", 100.0 * lo, 100.0 * hi),
            _ => String::new(),
        };
        let mean = match mean_interval(&shares) {
            Some(i) => format!(
                "{:.0}% ({:.0}–{:.0}%)",
                100.0 * i.mean,
                100.0 * i.low,
                100.0 * i.high
            ),
            None => String::new(),
        };
        let caught_up = match row.caught_up_ms.iter().copied().reduce(f64::max) {
            Some(ms) => format!("{ms:.0} ms"),
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "| {} | {}×{} | {} | {} | {} | {} | {} | {} | {} |",
            row.config,
            row.conns,
            row.depth,
            thousands(res.rate()),
            micros(res.quantile_ns(0.5)),
            micros(res.quantile_ns(0.99)),
            share,
            per_round,
            mean,
            caught_up
        );
    }

    md.push_str("\n## Propagation and memory\n\n");
    md.push_str(
        "A burst of distinct clients sent to Clark (10 connections, 512 in flight each): \
         *acknowledged* when Clark has answered them all, *visible* when each connection's last \
         update is answered by WHATSAT on all four other nodes (links are ordered, so the rest \
         precede it); then a random sample plus every connection's last update is checked on \
         every node, lost = missing or different AT lines. The bursts go in rounds, one to \
         each herd in turn; a herd's row shows the median burst (by rate; of an even number, \
         the slower of the middle two) with the slowest and fastest rates, and lost / checked \
         over all of them. Memory: VmRSS of each node once the stored clients are visible everywhere.\n\n",
    );
    md.push_str("| configuration | updates | acknowledged | visible everywhere | updates/s | lost / checked |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for h in &r.herds {
        if let Some(b) = h.bursts() {
            let _ = writeln!(
                md,
                "| {} | {} (median of {}) | {:.0} ms | {:.0} ms | {} ({}–{}) | {} |",
                h.config,
                thousands(b.median.total as f64),
                b.count,
                b.median.acked.as_secs_f64() * 1e3,
                b.median.visible.as_secs_f64() * 1e3,
                thousands(b.median.rate()),
                thousands(b.slowest),
                thousands(b.fastest),
                checks(&h.bursts)
            );
        }
        if let Some(p) = &h.clients {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} ms | {:.0} ms | {} | {} |",
                h.config,
                thousands(p.total as f64),
                p.acked.as_secs_f64() * 1e3,
                p.visible.as_secs_f64() * 1e3,
                thousands(p.rate()),
                checks([p])
            );
        }
    }
    let names: Vec<&str> = TOPOLOGY.iter().map(|(n, _)| *n).collect();
    let _ = writeln!(
        md,
        "\n| configuration | clients stored | {} | largest | per client |",
        names.join(" | ")
    );
    let _ = writeln!(
        md,
        "| --- | ---: |{} ---: | ---: |",
        " ---: |".repeat(names.len())
    );
    for h in &r.herds {
        if h.rss.is_empty() {
            continue;
        }
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                h.rss
                    .iter()
                    .find(|(m, _)| m == n)
                    .map_or("?".into(), |(_, b)| mb(*b))
            })
            .collect();
        // Growth since start-up over the clients every node holds.
        let growth: Vec<f64> = h
            .rss
            .iter()
            .filter_map(|(n, b)| {
                let start = h.rss_start.iter().find(|(m, _)| m == n)?.1;
                Some(b.saturating_sub(start) as f64)
            })
            .collect();
        let per_client = if growth.is_empty() || h.stored == 0 {
            "?".to_string()
        } else {
            let mean = growth.iter().sum::<f64>() / growth.len() as f64;
            format!("{:.0} B", mean / h.stored as f64)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            h.config,
            thousands(h.stored as f64),
            cells.join(" | "),
            mb(h.rss.iter().map(|(_, b)| *b).max().unwrap_or(0)),
            per_client
        );
    }
    let starts: Vec<String> = r
        .herds
        .iter()
        .filter_map(|h| {
            let max = h.rss_start.iter().map(|(_, b)| *b).max()?;
            Some(format!("{} at most {} per node", h.config, mb(max)))
        })
        .collect();
    if !starts.is_empty() {
        let _ = writeln!(
            md,
            "\nResident at start-up: {}. *Per client*: the mean growth since start-up over the \
             clients stored (those sent for the memory figure, plus the bursts' and the loads' \
             client IDs).",
            starts.join("; ")
        );
    }

    if r.herds.iter().any(|h| !h.flood.is_empty()) {
        md.push_str(
            "\n## Flooding work\n\n\
             From the nodes' counters (`/metrics`), summed over the herd. Every other node needs \
             a copy of each update, so four copies per update is the least flooding can send; \
             a copy *arrives stale* when its node already had that report (or a newer one) from \
             another neighbour, and is *spared* when it is not sent to a neighbour that sent the \
             same report. Under the client-path loads a client's reports that follow each other \
             within a window go out as one copy, the newest, so there can be fewer than four.\n\n\
             | configuration | stage | updates at Clark | copies sent | per update | arrived stale | per update | spared |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for h in &r.herds {
            for f in &h.flood {
                let c = &f.counters;
                let per = |n: u64| n as f64 / (c.iamat as f64).max(1.0);
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {:.2} | {} | {:.2} | {} |",
                    h.config,
                    f.stage,
                    thousands(c.iamat as f64),
                    thousands(c.forwarded as f64),
                    per(c.forwarded),
                    thousands(c.stale as f64),
                    per(c.stale),
                    thousands(c.skipped as f64)
                );
            }
        }
    }

    md.push_str("\n## Targets (reported, not enforced)\n\n");
    md.push_str("| target | ");
    let herds: Vec<&HerdRow> = r.herds.iter().collect();
    md.push_str(
        &herds
            .iter()
            .map(|h| h.config.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    md.push_str(" |\n| --- |");
    md.push_str(&" --- |".repeat(herds.len()));
    md.push('\n');
    // Client path share of the ceiling, 50×1.
    let (c0, d0) = LOADS[0];
    let mut line = format!(
        "| client path at Clark, {c0}×{d0}: ≥{:.0}% of the ceiling on tcp, ≥{:.0}% on quic |",
        TARGET_SHARE_TCP * 100.0,
        TARGET_SHARE_QUIC * 100.0
    );
    for h in &herds {
        let target = if h.config.starts_with("quic") {
            TARGET_SHARE_QUIC
        } else {
            TARGET_SHARE_TCP
        };
        let rate = r
            .loads
            .iter()
            .find(|l| l.config == h.config && l.conns == c0 && l.depth == d0)
            .and_then(|l| l.result.as_ref())
            .map(|l| l.rate());
        let cell = match (rate, r.ceiling_rate(c0, d0)) {
            (Some(rate), Some(ceiling)) if ceiling > 0.0 => {
                let share = rate / ceiling;
                let mut cell = format!("{:.0}% {}", share * 100.0, verdict(share >= target));
                let shares = r.round_shares(&h.config, c0, d0);
                if let Some(i) = mean_interval(&shares).filter(|i| i.holds(target)) {
                    let _ = write!(
                        cell,
                        " (rounds' 95% interval {:.0}–{:.0}% holds the target: this run cannot tell)",
                        i.low * 100.0,
                        i.high * 100.0
                    );
                }
                cell
            }
            _ => "not measured".into(),
        };
        let _ = write!(line, " {cell} |");
    }
    md.push_str(&line);
    md.push('\n');
    let mut line = format!(
        "| a {}-update burst visible on every node at ≥{} updates/s |",
        thousands(TARGET_BURST as f64),
        thousands(TARGET_BURST_RATE)
    );
    for h in &herds {
        let cell = match h.bursts() {
            Some(b) => {
                let size = if b.median.total == TARGET_BURST {
                    String::new()
                } else {
                    format!(", {} updates", thousands(b.median.total as f64))
                };
                let over = h
                    .bursts
                    .iter()
                    .filter(|p| p.rate() >= TARGET_BURST_RATE)
                    .count();
                format!(
                    "{}/s (median of {}{size}) {}, {over} of {} bursts at or over it",
                    thousands(b.median.rate()),
                    b.count,
                    verdict(b.median.rate() >= TARGET_BURST_RATE),
                    b.count
                )
            }
            None => "not measured".into(),
        };
        let _ = write!(line, " {cell} |");
    }
    md.push_str(&line);
    md.push('\n');
    let mut line = format!(
        "| ≤{} resident per node with {} clients |",
        mb(TARGET_RSS_BYTES),
        thousands(TARGET_CLIENTS as f64)
    );
    for h in &herds {
        let max = h.rss.iter().map(|(_, b)| *b).max();
        let stored = h.clients.as_ref().map_or(0, |c| c.total);
        let cell = match max {
            Some(max) if stored >= TARGET_CLIENTS => {
                format!("{} {}", mb(max), verdict(max <= TARGET_RSS_BYTES))
            }
            Some(max) => format!(
                "{} with {} clients (not comparable)",
                mb(max),
                thousands(stored as f64)
            ),
            None => "not measured".into(),
        };
        let _ = write!(line, " {cell} |");
    }
    md.push_str(&line);
    md.push('\n');
    let mut line = "| nothing lost (every reply right, every sample on every node) |".to_string();
    for h in &herds {
        let props: Vec<&Propagation> = h.bursts.iter().chain(&h.clients).collect();
        let wrong: u64 = r
            .loads
            .iter()
            .filter(|l| l.config == h.config)
            .filter_map(|l| l.result.as_ref())
            .map(|l| l.bad)
            .sum();
        let lost: usize = props.iter().map(|p| p.lost()).sum::<usize>() + wrong as usize;
        let cell = if h.bursts.is_empty() || h.clients.is_none() {
            "incomplete **fail**".to_string()
        } else if lost == 0 {
            "0 lost **pass**".to_string()
        } else {
            format!("{lost} lost **fail**")
        };
        let _ = write!(line, " {cell} |");
    }
    md.push_str(&line);
    md.push('\n');

    md.push_str("\n## CPU during each stage (cores; the machine has ");
    let _ = write!(
        md,
        "{})\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let order = [
        "Clark",
        "Jaquez",
        "Bona",
        "Campbell",
        "Bailey",
        "load generator",
        crate::bench::OTHER,
        crate::bench::STOLEN,
    ];
    let _ = writeln!(md, "| configuration | stage | {} |", order.join(" | "));
    let _ = writeln!(md, "| --- | --- |{}", " ---: |".repeat(order.len()));
    let cpu_cells = |cpu: &[(String, f64)]| -> String {
        order
            .iter()
            .map(|n| {
                cpu.iter()
                    .find(|(m, _)| m == n)
                    .map_or("".into(), |(_, c)| format!("{c:.2}"))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    for row in &r.loads {
        let _ = writeln!(
            md,
            "| {} | {}×{} | {} |",
            row.config,
            row.conns,
            row.depth,
            cpu_cells(&row.cpu)
        );
    }
    for h in &r.herds {
        if let Some(b) = h.bursts() {
            let _ = writeln!(
                md,
                "| {} | bursts ({} × {}) | {} |",
                h.config,
                b.count,
                thousands(b.median.total as f64),
                cpu_cells(&h.burst_cpu())
            );
        }
        if let Some(p) = &h.clients {
            let _ = writeln!(
                md,
                "| {} | {} clients | {} |",
                h.config,
                thousands(p.total as f64),
                cpu_cells(&p.cpu)
            );
        }
    }
    md.push_str(
        "\n(Loads: over warm-up and measurement, all rounds; bursts: from each one's first write \
         until it is visible everywhere, over all of a herd's bursts. For the ceiling, its \
         server's CPU is in the Clark column. *Other processes*: what the machine spent \
         meanwhile outside the configuration under load and the load generator, the idle \
         configurations included; figures taken while it is high are disturbed. *Stolen by the \
         host*: time this machine's cores were ready to run but the hypervisor ran something \
         else (`steal` in `/proc/stat`), on a virtual machine; it slows everything alike, and is \
         not counted in the other columns.)\n",
    );

    if !r.failures.is_empty() {
        md.push_str("\n## Failures\n\n");
        for f in &r.failures {
            let _ = writeln!(md, "- {}", f.replace('\n', " "));
        }
    }
    if !r.notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {}", n.replace('\n', " "));
        }
    }
    md
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(158, 202, 225),
    RGBColor(214, 39, 40),
    RGBColor(252, 146, 114),
];

fn colour_of(config: &str, depth: usize) -> RGBColor {
    let base = match config {
        c if crate::bench::is_ceiling(c) => 0,
        "tcp" => 2,
        _ => 4,
    };
    COLOURS[base + usize::from(depth > 1)]
}

/// Writes `latency.svg` and `throughput.svg` into `out`.
pub fn plots(r: &Results, out: &Path) -> Result<Vec<PathBuf>> {
    let latency = out.join("latency.svg");
    latency_plot(r, &latency).map_err(|e| anyhow!("{}: {e}", latency.display()))?;
    let throughput = out.join("throughput.svg");
    throughput_plot(r, &throughput).map_err(|e| anyhow!("{}: {e}", throughput.display()))?;
    Ok(vec![latency, throughput])
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn latency_plot(r: &Results, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let rows: Vec<_> = r
        .loads
        .iter()
        .filter_map(|l| l.result.as_ref().map(|res| (l, res)))
        .filter(|(_, res)| !res.latencies_ns.is_empty())
        .collect();
    let lo = rows
        .iter()
        .map(|(_, res)| res.latencies_ns[0])
        .min()
        .unwrap_or(1_000)
        .max(1_000) as f64
        / 1e3;
    let hi = rows
        .iter()
        .map(|(_, res)| *res.latencies_ns.last().unwrap_or(&0))
        .max()
        .unwrap_or(10_000_000) as f64
        / 1e3;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "IAMAT latency at Clark, write to reply (CDF)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("requests at or below (%)")
        .draw()?;
    for (row, res) in rows {
        let n = res.latencies_ns.len();
        let points: Vec<(f64, f64)> = (0..=400)
            .map(|i| {
                let idx = ((n - 1) * i) / 400;
                (
                    (res.latencies_ns[idx] as f64 / 1e3).max(lo * 0.9),
                    100.0 * (idx + 1) as f64 / n as f64,
                )
            })
            .collect();
        let colour = colour_of(&row.config, row.depth);
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(format!(
                "{} {}×{} (p50 {:.0} µs, p99 {:.0} µs)",
                row.config,
                row.conns,
                row.depth,
                res.quantile_ns(0.5) as f64 / 1e3,
                res.quantile_ns(0.99) as f64 / 1e3
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn throughput_plot(r: &Results, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(620);

    // Left: client replies per second per configuration and load.
    let bars: Vec<(String, f64, RGBColor)> = r
        .loads
        .iter()
        .filter_map(|l| {
            l.result.as_ref().map(|res| {
                (
                    format!("{} {}×{}", l.config, l.conns, l.depth),
                    res.rate(),
                    colour_of(&l.config, l.depth),
                )
            })
        })
        .collect();
    bar_chart(&left, "IAMAT replies/s at Clark", "replies/s", &bars, None)?;

    // Right: propagation rate of the burst and of the stored clients.
    let mut props: Vec<(String, f64, RGBColor)> = Vec::new();
    for h in &r.herds {
        if let Some(b) = h.bursts() {
            props.push((
                format!("{} burst (median)", h.config),
                b.median.rate(),
                colour_of(&h.config, 1),
            ));
        }
        if let Some(c) = &h.clients {
            props.push((
                format!("{} {}k", h.config, c.total / 1000),
                c.rate(),
                colour_of(&h.config, 32),
            ));
        }
    }
    bar_chart(
        &right,
        "updates/s until visible on every node",
        "updates/s",
        &props,
        Some(TARGET_BURST_RATE),
    )?;
    root.present()?;
    Ok(())
}

fn bar_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    bars: &[(String, f64, RGBColor)],
    target: Option<f64>,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let n = bars.len().max(1) as u32;
    let top = bars
        .iter()
        .map(|(_, v, _)| *v)
        .chain(target)
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..top)?;
    let labels: Vec<String> = bars.iter().map(|(l, _, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 11))
        .y_desc(y_desc)
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    let colours: Vec<RGBColor> = bars.iter().map(|(_, _, c)| *c).collect();
    chart.draw_series(
        Histogram::vertical(&chart)
            .style_func(|x, _| {
                let i = match x {
                    SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => *i as usize,
                    SegmentValue::Last => 0,
                };
                colours.get(i).copied().unwrap_or(BLACK).filled()
            })
            .margin(8)
            .data(bars.iter().enumerate().map(|(i, (_, v, _))| (i as u32, *v))),
    )?;
    if let Some(t) = target {
        chart
            .draw_series(LineSeries::new(
                vec![(SegmentValue::Exact(0), t), (SegmentValue::Last, t)],
                RED.stroke_width(1),
            ))?
            .label(format!("target {}/s", thousands(t)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}
