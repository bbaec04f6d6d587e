//! The results of a run: per-round samples, their summary, and the Markdown and JSON reports.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use crate::contenders::{BASELINE, Target};

/// Below this share of busy time the server was not the bottleneck of a measurement.
const SATURATED: f64 = 0.9;

/// One contender's measurement in one round.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// The round, from 1.
    pub(crate) round: usize,
    /// Its place in that round's order, from 1.
    pub(crate) position: usize,
    /// `200` responses completed while measuring.
    pub(crate) completed: u64,
    /// How long the measurement lasted.
    pub(crate) elapsed_secs: f64,
    /// Requests per second.
    pub(crate) rps: f64,
    /// `rps` over the baseline's `rps` in the same round.
    pub(crate) ratio: f64,
    /// Requests per second of server CPU time over the baseline's in the same round: the
    /// ratio with the server's idle moments taken out.
    pub(crate) cpu_ratio: Option<f64>,
    /// Errors in any phase of this measurement.
    pub(crate) errors: u64,
    /// The first of them, described.
    pub(crate) first_error: Option<String>,
    /// The share of the measurement the server spent on a CPU.
    pub(crate) server_busy: Option<f64>,
    /// The share of the measurement the load generator spent on a CPU.
    pub(crate) load_busy: Option<f64>,
    /// The share of the machine's CPU time the hypervisor took away.
    pub(crate) steal: Option<f64>,
}

/// One contender over the whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ContenderResult {
    /// The contender's name.
    pub(crate) name: String,
    /// What it measures.
    pub(crate) summary: String,
    /// The goal (`at_least`) or reference point (`about`) for its median ratio.
    pub(crate) target: TargetReport,
    /// Median requests per second over the rounds.
    pub(crate) median_rps: f64,
    /// Median of the per-round ratios to the baseline.
    pub(crate) median_ratio: f64,
    /// Smallest per-round ratio.
    pub(crate) min_ratio: f64,
    /// Largest per-round ratio.
    pub(crate) max_ratio: f64,
    /// Median of the per-round ratios of requests per server CPU-second.
    pub(crate) median_cpu_ratio: Option<f64>,
    /// Median share of the measurement the server spent on a CPU.
    pub(crate) median_server_busy: Option<f64>,
    /// Median share of the measurement the load generator spent on a CPU.
    pub(crate) median_load_busy: Option<f64>,
    /// The largest share of CPU time stolen by the hypervisor in any round.
    pub(crate) max_steal: Option<f64>,
    /// Errors over all rounds; any makes the contender's numbers invalid.
    pub(crate) errors: u64,
    /// The first error, described.
    pub(crate) first_error: Option<String>,
    /// Every round's sample, in round order.
    pub(crate) samples: Vec<Sample>,
}

/// [`Target`] as the JSON report spells it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TargetReport {
    /// No goal.
    None,
    /// The median ratio must be at least this.
    AtLeast(f64),
    /// About this much on the reference machine.
    About(f64),
    /// The median per-round ratio to another contender must be at least `ratio`.
    AtLeastOf {
        /// The other contender.
        other: &'static str,
        /// The least acceptable ratio.
        ratio: f64,
    },
    /// No goal; compared with these contenders.
    Versus(&'static [&'static str]),
    /// Several goals relative to other contenders: `(other, least acceptable ratio)`.
    Goals(&'static [(&'static str, f64)]),
}

impl From<Target> for TargetReport {
    fn from(target: Target) -> Self {
        match target {
            Target::None => Self::None,
            Target::AtLeast(ratio) => Self::AtLeast(ratio),
            Target::About(ratio) => Self::About(ratio),
            Target::AtLeastOf { other, ratio } => Self::AtLeastOf { other, ratio },
            Target::Versus(others) => Self::Versus(others),
            Target::Goals(goals) => Self::Goals(goals),
        }
    }
}

/// The median over rounds of `c`'s requests/s divided by `other`'s in the same round.
fn median_ratio_to(c: &ContenderResult, other: &ContenderResult) -> Option<f64> {
    let ratios: Vec<f64> = c
        .samples
        .iter()
        .filter_map(|s| {
            let o = other.samples.iter().find(|o| o.round == s.round)?;
            (o.rps > 0.0).then(|| s.rps / o.rps)
        })
        .collect();
    (!ratios.is_empty()).then(|| median(&ratios))
}

/// `c`'s median per-round ratio to each of `others` that was measured, for a contender
/// compared without a goal.
fn versus(c: &ContenderResult, others: &[&str], measured: &[ContenderResult]) -> String {
    let ratios: Vec<String> = others
        .iter()
        .filter_map(|name| {
            let other = measured.iter().find(|o| o.name == *name)?;
            let ratio = median_ratio_to(c, other)?;
            Some(format!("{ratio:.3}× {name}"))
        })
        .collect();
    if ratios.is_empty() {
        "no goal".to_owned()
    } else {
        format!("{}; no goal", ratios.join(", "))
    }
}

impl ContenderResult {
    /// Summarises `samples` (whose ratios are already set).
    pub(crate) fn new(name: &str, summary: &str, target: Target, samples: Vec<Sample>) -> Self {
        let rps: Vec<f64> = samples.iter().map(|s| s.rps).collect();
        let ratios: Vec<f64> = samples.iter().map(|s| s.ratio).collect();
        Self {
            name: name.to_owned(),
            summary: summary.to_owned(),
            target: target.into(),
            median_rps: median(&rps),
            median_ratio: median(&ratios),
            min_ratio: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max_ratio: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median_cpu_ratio: median_of(&samples, |s| s.cpu_ratio),
            median_server_busy: median_of(&samples, |s| s.server_busy),
            median_load_busy: median_of(&samples, |s| s.load_busy),
            max_steal: samples
                .iter()
                .map(|s| s.steal)
                .collect::<Option<Vec<f64>>>()
                .map(|steal| steal.into_iter().fold(0.0, f64::max)),
            errors: samples.iter().map(|s| s.errors).sum(),
            first_error: samples.iter().find_map(|s| s.first_error.clone()),
            samples,
        }
    }
}

/// The whole run, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// When the run started, UTC.
    pub(crate) date: String,
    /// The command line, shell-quoted.
    pub(crate) command: String,
    /// The commit the binary was run from, if known, with the paths changed since.
    pub(crate) git: Option<String>,
    /// Rounds.
    pub(crate) rounds: usize,
    /// Seconds measured per contender per round.
    pub(crate) seconds: f64,
    /// Seconds of warm-up per contender per round.
    pub(crate) warmup_secs: f64,
    /// Seconds per measuring slice (the contenders' slices take turns); 0: no slicing.
    pub(crate) slice_secs: f64,
    /// Keep-alive connections (one session each).
    pub(crate) connections: u16,
    /// CPUs available, as `nproc` counts them.
    pub(crate) nproc: usize,
    /// The CPU model from `/proc/cpuinfo`.
    pub(crate) cpu_model: Option<String>,
    /// The CPU the server was pinned to.
    pub(crate) server_cpu: usize,
    /// The CPU the load generator was pinned to.
    pub(crate) load_cpu: usize,
    /// Every contender, the baseline first.
    pub(crate) contenders: Vec<ContenderResult>,
}

impl Report {
    /// Whether any contender had errors.
    pub(crate) fn flagged(&self) -> Vec<&ContenderResult> {
        self.contenders.iter().filter(|c| c.errors > 0).collect()
    }

    /// The report as Markdown.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_markdown(&mut out);
        out
    }

    fn write_markdown(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "### satchel-bench, {}", self.date)?;
        writeln!(out)?;
        writeln!(out, "- command: `{}`", self.command)?;
        if let Some(git) = &self.git {
            writeln!(out, "- commit: {git}")?;
        }
        writeln!(
            out,
            "- {} rounds × {} s per contender (after {} s warm-up), measured in {} s slices that take turns between contenders; {} keep-alive connections per contender, one session each",
            self.rounds, self.seconds, self.warmup_secs, self.slice_secs, self.connections
        )?;
        writeln!(
            out,
            "- machine: nproc {}, {}; server pinned to CPU {}, load generator to CPU {}",
            self.nproc,
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.server_cpu,
            self.load_cpu
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| contender | median req/s | median ratio vs {BASELINE} | min–max ratio | errors |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|")?;
        for c in &self.contenders {
            let errors = if c.errors > 0 {
                format!("**{} — INVALID**", c.errors)
            } else {
                "0".to_owned()
            };
            writeln!(
                out,
                "| {} | {} | {:.3}× | {:.3}–{:.3}× | {} |",
                c.name,
                thousands(c.median_rps),
                c.median_ratio,
                c.min_ratio,
                c.max_ratio,
                errors
            )?;
        }
        writeln!(out)?;

        writeln!(
            out,
            "Goals (median of per-round ratios vs {BASELINE}, or vs the contender named):"
        )?;
        writeln!(out)?;
        for c in &self.contenders {
            let relative = match c.target {
                TargetReport::AtLeastOf { other, ratio } => vec![(other, ratio)],
                TargetReport::Goals(goals) => goals.to_vec(),
                _ => Vec::new(),
            };
            for &(other, goal) in &relative {
                let reference = self.contenders.iter().find(|o| o.name == other);
                let verdict = match reference.and_then(|o| median_ratio_to(c, o)) {
                    _ if c.errors > 0 => "not judged: the contender had errors".to_owned(),
                    None => format!("not judged: {other} was not measured"),
                    Some(ratio) if ratio >= goal => {
                        format!("{ratio:.3}× {other}; goal ≥ {goal:.2}×: **met**")
                    }
                    Some(ratio) => format!("{ratio:.3}× {other}; goal ≥ {goal:.2}×: **missed**"),
                };
                writeln!(out, "- {}: {verdict}", c.name)?;
            }
            let verdict = match c.target {
                TargetReport::None | TargetReport::AtLeastOf { .. } | TargetReport::Goals(_) => {
                    continue;
                }
                _ if c.errors > 0 => "not judged: the contender had errors".to_owned(),
                TargetReport::Versus(others) => versus(c, others, &self.contenders),
                TargetReport::AtLeast(goal) if c.median_ratio >= goal => {
                    format!("goal ≥ {goal:.2}×: **met**")
                }
                TargetReport::AtLeast(goal) => format!("goal ≥ {goal:.2}×: **missed**"),
                TargetReport::About(reference) => {
                    format!("reference: about {reference:.2}× on the reference machine")
                }
            };
            writeln!(out, "- {}: {:.3}× — {verdict}", c.name, c.median_ratio)?;
        }
        writeln!(out)?;

        writeln!(
            out,
            "Per-round ratios vs {BASELINE} (each cell: ratio, then the contender's place in that round's order):"
        )?;
        writeln!(out)?;
        write!(out, "| contender |")?;
        for round in 1..=self.rounds {
            write!(out, " r{round} |")?;
        }
        writeln!(out)?;
        write!(out, "|---|")?;
        for _ in 0..self.rounds {
            write!(out, "---:|")?;
        }
        writeln!(out)?;
        for c in &self.contenders {
            write!(out, "| {} |", c.name)?;
            for s in &c.samples {
                write!(out, " {:.3} ({}) |", s.ratio, s.position)?;
            }
            writeln!(out)?;
        }

        writeln!(out)?;
        writeln!(
            out,
            "CPU use while measuring (medians over the rounds; the server should be the saturated side):"
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| contender | server busy | load generator busy | max steal | ratio per server CPU-second |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|")?;
        for c in &self.contenders {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.name,
                percent(c.median_server_busy),
                percent(c.median_load_busy),
                percent(c.max_steal),
                c.median_cpu_ratio
                    .map_or_else(|| "–".to_owned(), |r| format!("{r:.3}×"))
            )?;
        }
        let unsaturated: usize = self
            .contenders
            .iter()
            .flat_map(|c| &c.samples)
            .filter(|s| s.server_busy.is_some_and(|busy| busy < SATURATED))
            .count();
        if unsaturated > 0 {
            writeln!(out)?;
            writeln!(
                out,
                "**Note: in {unsaturated} measurements the server was busy less than {:.0} % of the time:** the load generator, or another process on the server's CPU, limited them.",
                SATURATED * 100.0
            )?;
        }

        let flagged = self.flagged();
        if !flagged.is_empty() {
            writeln!(out)?;
            for c in flagged {
                writeln!(
                    out,
                    "**WARNING: {} had {} errors; its numbers are not valid.** First: {}",
                    c.name,
                    c.errors,
                    c.first_error.as_deref().unwrap_or("(not recorded)")
                )?;
            }
        }
        Ok(())
    }
}

/// The median of one measurement over `samples`; `None` if any sample lacks it.
fn median_of(samples: &[Sample], field: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = samples.iter().map(field).collect::<Option<_>>()?;
    (!values.is_empty()).then(|| median(&values))
}

/// `0.987` as `98.7 %`, or a dash when unknown.
fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

/// The median of `values` (the mean of the middle two for an even count); NaN if empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `12345.6` as `12,346`.
fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0.0 {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The CPUs this process may run on, as the kernel lists them (`Cpus_allowed_list`).
pub(crate) fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|cpus| cpus.trim().to_owned())
}

/// The CPU model from `/proc/cpuinfo`.
pub(crate) fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

/// The commit of the working tree, and the paths with uncommitted changes if any (at most
/// six); `None` outside git.
pub(crate) fn git_commit() -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"])?.trim().to_owned();
    let status = run(&["status", "--porcelain"]).unwrap_or_default();
    let changed: Vec<&str> = status.lines().filter_map(|line| line.get(3..)).collect();
    Some(match changed.len() {
        0 => commit,
        n if n <= 6 => format!("{commit}, uncommitted changes in {}", changed.join(", ")),
        n => format!(
            "{commit}, uncommitted changes in {} and {} more",
            changed[..6].join(", "),
            n - 6
        ),
    })
}

/// The current time, UTC, as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_now() -> String {
    let now = satchel::Timestamp::from_system_time(SystemTime::now()).to_string();
    // RFC 3339 `2026-11-21T22:25:54.123Z` as `2026-11-21 22:25:54 UTC`.
    format!("{} {} UTC", &now[..10], &now[11..19])
}

/// `args` as one shell command line, quoting what needs it.
pub(crate) fn shell_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:+@%".contains(&b));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
    }

    fn sample(round: usize, rps: f64) -> Sample {
        Sample {
            round,
            position: 1,
            completed: 0,
            elapsed_secs: 1.0,
            rps,
            ratio: 1.0,
            cpu_ratio: None,
            errors: 0,
            first_error: None,
            server_busy: None,
            load_busy: None,
            steal: None,
        }
    }

    #[test]
    fn ratios_to_another_contender_pair_rounds() {
        let store = ContenderResult::new(
            "store",
            "",
            Target::AtLeastOf {
                other: "raw",
                ratio: 0.5,
            },
            vec![sample(1, 300.0), sample(2, 100.0), sample(3, 250.0)],
        );
        // Round 2 of the reference is missing: only rounds 1 and 3 pair up.
        let raw = ContenderResult::new(
            "raw",
            "",
            Target::None,
            vec![sample(1, 400.0), sample(3, 500.0)],
        );
        let ratio = median_ratio_to(&store, &raw).expect("two rounds pair up");
        assert!(
            (ratio - 0.625).abs() < 1e-9,
            "median of 0.75 and 0.5, got {ratio}"
        );
        let empty = ContenderResult::new("none", "", Target::None, vec![]);
        assert_eq!(median_ratio_to(&store, &empty), None);
    }

    #[test]
    fn comparisons_without_a_goal_name_only_measured_contenders() {
        let cookie = ContenderResult::new(
            "cookie",
            "",
            Target::Versus(&["raw", "absent"]),
            vec![sample(1, 300.0), sample(2, 100.0)],
        );
        let raw = ContenderResult::new(
            "raw",
            "",
            Target::None,
            vec![sample(1, 200.0), sample(2, 200.0)],
        );
        let measured = [cookie.clone(), raw];
        assert_eq!(
            versus(&cookie, &["raw", "absent"], &measured),
            "1.000× raw; no goal"
        );
        assert_eq!(versus(&cookie, &["absent"], &measured), "no goal");
    }

    #[test]
    fn dates() {
        let now = utc_now();
        assert_eq!(now.len(), "2026-11-21 22:25:54 UTC".len(), "{now}");
        assert!(now.ends_with(" UTC") && now.as_bytes()[10] == b' ', "{now}");
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_line(["a".to_owned(), "b c".to_owned(), "it's".to_owned()]),
            r"a 'b c' 'it'\''s'"
        );
    }
}
