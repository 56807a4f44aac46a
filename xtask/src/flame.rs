//! Flame graphs of the benchmark's `perf` profiles.
//!
//! `perf script` prints each sample as its process and thread, then its
//! stack, innermost frame first. The samples are folded into one line per
//! distinct stack, rooted at the node the process is, and drawn as an SVG:
//! one bar per frame, as wide as its share of all samples, callers below
//! callees (hover over a bar for its name and share). Kernel frames end in
//! `_[k]` and are drawn in orange, the herd's and its libraries' in red.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Writes the flame graph of the `perf record` file `data`, whose
/// processes are `nodes` (name, pid), to `svg`.
pub fn write(data: &Path, nodes: &[(String, u32)], svg: &Path) -> Result<()> {
    let output = Command::new("perf")
        .arg("script")
        .arg("-i")
        .arg(data)
        .args(["-F", "pid,tid,ip,sym"])
        .output()
        .context("running perf script")?;
    if !output.status.success() {
        bail!(
            "perf script: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let names: HashMap<u32, String> = nodes.iter().map(|(n, p)| (*p, n.clone())).collect();
    let folded = fold(&String::from_utf8_lossy(&output.stdout), &names);
    if folded.is_empty() {
        bail!("{}: no samples", data.display());
    }
    let title = data
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    std::fs::write(svg, draw(&folded, &title)).with_context(|| format!("writing {}", svg.display()))
}

/// Folds `perf script -F pid,tid,ip,sym` output into stacks, outermost
/// frame first, each rooted at its process's name in `names` (or
/// `pid N`), with how many samples had it.
pub fn fold(script: &str, names: &HashMap<u32, String>) -> BTreeMap<String, u64> {
    let mut folded = BTreeMap::new();
    let mut sample: Option<(String, Vec<String>)> = None;
    let mut finish = |sample: Option<(String, Vec<String>)>| {
        if let Some((root, frames)) = sample {
            let mut stack = root;
            for frame in frames.iter().rev() {
                stack.push(';');
                stack.push_str(frame);
            }
            *folded.entry(stack).or_insert(0) += 1;
        }
    };
    for line in script.lines() {
        if let Some(frame) = line.strip_prefix('\t') {
            if let Some((_, frames)) = &mut sample {
                let frame = frame.trim();
                let (ip, sym) = frame.split_once(' ').unwrap_or((frame, "[unknown]"));
                // One frame per field of the folded line.
                let mut name = sym.trim().replace(';', ":");
                if ip.len() == 16 && ip.starts_with("ffff") {
                    name.push_str("_[k]");
                }
                frames.push(name);
            }
        } else if line.trim().is_empty() {
            finish(sample.take());
        } else {
            finish(sample.take());
            let pid = line
                .split_whitespace()
                .next()
                .and_then(|ids| ids.split('/').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let root = match pid {
                Some(pid) => names.get(&pid).cloned().unwrap_or(format!("pid {pid}")),
                None => "unknown".to_string(),
            };
            sample = Some((root, Vec::new()));
        }
    }
    finish(sample);
    folded
}

/// A frame and the frames it called, with the samples in each.
#[derive(Default)]
struct Frame {
    samples: u64,
    callees: BTreeMap<String, Frame>,
}

impl Frame {
    fn depth(&self) -> usize {
        1 + self.callees.values().map(Frame::depth).max().unwrap_or(0)
    }
}

const WIDTH: f64 = 1200.0;
const BAR: f64 = 16.0;
const TOP: f64 = 40.0;
/// About how wide a character of the labels is.
const CHAR: f64 = 7.0;

/// The SVG of `folded` (as [`fold`] makes it), headed `title`.
pub fn draw(folded: &BTreeMap<String, u64>, title: &str) -> String {
    let mut all = Frame::default();
    for (stack, &n) in folded {
        all.samples += n;
        let mut at = &mut all;
        for name in stack.split(';') {
            at = at.callees.entry(name.to_string()).or_default();
            at.samples += n;
        }
    }
    let depth = all.depth();
    let height = TOP + depth as f64 * BAR + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="12">"#
    );
    let _ = write!(
        svg,
        r##"<rect width="100%" height="100%" fill="#f8f8f0"/><text x="{}" y="24" text-anchor="middle" font-size="16">{} ({} samples)</text>"##,
        WIDTH / 2.0,
        escape(title),
        all.samples
    );
    let scale = WIDTH / all.samples.max(1) as f64;
    let bottom = height - 10.0;
    // `all` and the nodes are the two grey levels.
    place(
        &mut svg,
        "all",
        &all,
        (0.0, bottom - BAR),
        (scale, all.samples),
        2,
    );
    svg.push_str("</svg>\n");
    svg
}

/// Draws `frame` with its bar's left and top at `(x, y)`, and its callees
/// above; the first `grey` levels are roots (see [`colour`]). `scale` is
/// pixels per sample, of `total` samples.
fn place(
    svg: &mut String,
    name: &str,
    frame: &Frame,
    (x, y): (f64, f64),
    (scale, total): (f64, u64),
    grey: usize,
) {
    if (frame.samples as f64 * scale) < 0.3 {
        return;
    }
    bar(svg, name, frame, (x, y), scale, total, grey > 0);
    let mut at = x;
    for (callee, f) in &frame.callees {
        place(
            svg,
            callee,
            f,
            (at, y - BAR),
            (scale, total),
            grey.saturating_sub(1),
        );
        at += f.samples as f64 * scale;
    }
}

/// One frame's bar (grey if `root`), with its name and share on hover.
fn bar(
    svg: &mut String,
    name: &str,
    frame: &Frame,
    (x, y): (f64, f64),
    scale: f64,
    total: u64,
    root: bool,
) {
    let width = frame.samples as f64 * scale;
    let share = 100.0 * frame.samples as f64 / total.max(1) as f64;
    let _ = write!(
        svg,
        r#"<g><title>{} ({} samples, {share:.2}%)</title><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}" rx="2"/>"#,
        escape(name),
        frame.samples,
        width,
        BAR - 1.0,
        colour(name, root)
    );
    let fits = ((width - 6.0) / CHAR).floor().max(0.0) as usize;
    if fits >= 3 {
        let label: String = if name.chars().count() <= fits {
            name.to_string()
        } else {
            name.chars().take(fits - 2).chain("..".chars()).collect()
        };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 3.0,
            y + BAR - 4.0,
            escape(&label)
        );
    }
    svg.push_str("</g>");
}

/// Warm colours that stay the same for a name: orange for the kernel's
/// frames, red to yellow for the rest, grey for the roots.
fn colour(name: &str, root: bool) -> String {
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let v = |shift: u32, range: u64| (hash >> shift) % range;
    if root {
        let g = 190 + v(0, 40);
        return format!("rgb({g},{g},{g})");
    }
    if name.ends_with("_[k]") {
        format!("rgb({},{},{})", 220 + v(0, 30), 110 + v(8, 70), v(16, 50))
    } else {
        format!("rgb({},{},{})", 200 + v(0, 55), v(8, 200), v(16, 55))
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "12667/12672 \n\
        \tffffffff8226ee67 __pv_queued_spin_lock_slowpath\n\
        \tffffffff81e7e608 do_accept\n\
        \t          10afa8 accept4\n\
        \t          a69ab9 <tokio::net::TcpListener as X>::accept\n\
        \n\
        12667/12671 \n\
        \tffffffff81e7e608 do_accept\n\
        \t          10afa8 accept4\n\
        \t          a69ab9 <tokio::net::TcpListener as X>::accept\n\
        \n\
        12667/12672 \n\
        \t          10afa8 accept4\n\
        \t          a69ab9 <tokio::net::TcpListener as X>::accept\n\
        \n\
        999/1000 \n\
        \t          123456 [unknown]\n";

    fn names() -> HashMap<u32, String> {
        HashMap::from([(12667, "Clark".to_string())])
    }

    #[test]
    fn samples_fold_into_stacks_rooted_at_their_node() {
        let folded = fold(SCRIPT, &names());
        let accept = "Clark;<tokio::net::TcpListener as X>::accept;accept4";
        let expected = BTreeMap::from([
            (
                format!("{accept};do_accept_[k];__pv_queued_spin_lock_slowpath_[k]"),
                1,
            ),
            (format!("{accept};do_accept_[k]"), 1),
            (accept.to_string(), 1),
            ("pid 999;[unknown]".to_string(), 1),
        ]);
        assert_eq!(folded, expected);
    }

    /// Every frame's bar is as wide as its share of the samples, callers
    /// below callees, and names are escaped for SVG.
    #[test]
    fn bars_are_as_wide_as_their_share() {
        let folded = fold(SCRIPT, &names());
        let svg = draw(&folded, "perf-tcp-50x1");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("(4 samples)"));
        // All four samples, then Clark's three, then the one with a lock.
        let width = |title: &str| -> f64 {
            let at = svg.find(&format!("<title>{title} (")).expect(title);
            let rest = &svg[at..];
            let w = rest.find("width=\"").unwrap() + 7;
            rest[w..w + rest[w..].find('"').unwrap()].parse().unwrap()
        };
        assert_eq!(width("all"), WIDTH);
        assert_eq!(width("Clark"), WIDTH * 3.0 / 4.0);
        assert_eq!(width("__pv_queued_spin_lock_slowpath_[k]"), WIDTH / 4.0);
        assert!(svg.contains("&lt;tokio::net::TcpListener as X&gt;::accept (3 samples, 75.00%)"));
        assert!(!svg.contains("<tokio::net"));
        let y = |title: &str| -> f64 {
            let at = svg.find(&format!("<title>{title} (")).unwrap();
            let rest = &svg[at..];
            let y = rest.find(" y=\"").unwrap() + 4;
            rest[y..y + rest[y..].find('"').unwrap()].parse().unwrap()
        };
        assert!(y("Clark") < y("all") && y("accept4") < y("Clark"));
    }
}
