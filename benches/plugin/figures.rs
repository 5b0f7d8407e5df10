//! What the plugin bench measures, and the table it prints.

use serde::Serialize;

use super::{GNU_TIME, PROBE, Settings};
use crate::common::report::{self, show};
use crate::common::{Outcome, Table, median};

/// Every figure the bench measures; empty or `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub settings: Option<Settings>,
    /// The first line of `/usr/bin/time --version`.
    pub gnu_time: Option<String>,
    pub create: Option<CreateFigures>,
    /// Part 2, one entry per namespace size.
    pub sizes: Vec<SizeFigures>,
    /// Lines the controller logged at WARN and ERROR (the kube client's note that the local
    /// control plane's kubeconfig skips TLS verification left out), and the first few.
    pub controller_log_warnings: u64,
    pub controller_log_errors: u64,
    pub controller_log_samples: Vec<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Part 1.
#[derive(Debug, Default, Serialize)]
pub struct CreateFigures {
    /// Wall time of each `create`, spawn to exit, in run order.
    pub runs_ms: Vec<f64>,
    pub p50_ms: f64,
    /// The 95th percentile (nearest rank); the max when fewer than 20 runs (`p95_is_max`).
    pub p95_ms: f64,
    pub p95_is_max: bool,
    pub max_ms: f64,
    /// Tokens printed whose hash is the one their key's status records.
    pub tokens_matching_status: usize,
    /// Wall time of each `describe bench-0`, and the median.
    pub describe_runs_ms: Vec<f64>,
    pub describe_median_ms: f64,
    /// p50 of `create` minus the median of `describe`.
    pub create_over_describe_ms: f64,
}

/// Part 2 at one namespace size.
#[derive(Debug, Default, Serialize)]
pub struct SizeFigures {
    /// ApiKeys in the namespace.
    pub keys: usize,
    /// ApiKeys the bench created to get there, and the seconds from the first create until the
    /// watch saw every key Active.
    pub created: usize,
    pub fill_secs: f64,
    /// Seconds more until the controller had gone idle (no reconcile, no write for 3 s).
    pub settle_secs: f64,
    pub list_table: Timings,
    pub list_json: Timings,
    pub verify: Timings,
    /// Bytes `list -o json` printed.
    pub list_json_bytes: usize,
    /// Peak RSS of the plugin process, one GNU time run per round.
    pub list_json_rss: Memory,
    pub verify_rss: Memory,
}

/// Wall times of one command over the rounds, spawn to exit.
#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub median_ms: Option<f64>,
    pub runs_ms: Vec<f64>,
}

impl Timings {
    pub fn push(&mut self, ms: f64) {
        self.runs_ms.push(ms);
        self.median_ms = median(&self.runs_ms);
    }
}

/// Peak RSS of one command over the rounds.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    /// The highest of the rounds.
    pub peak_mib: Option<f64>,
    pub runs_mib: Vec<f64>,
}

impl Memory {
    pub fn push(&mut self, mib: f64) {
        self.runs_mib.push(mib);
        self.peak_mib = Some(self.peak_mib.map_or(mib, |peak| peak.max(mib)));
    }
}

/// The figures as a table, on stdout.
pub fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else { return };
    let ms = |v: f64| format!("{v:.0} ms");
    let opt_ms = |v: Option<f64>| show::ms(v, 0);
    let rounds = settings.rounds;
    let title = format!(
        "keyward plugin bench: {} creates, list and verify at {:?} keys x {rounds} rounds, release binaries; \
         peak RSS by {GNU_TIME} -f %M ({})",
        settings.creates,
        settings.sizes(),
        f.gnu_time.as_deref().unwrap_or("-")
    );
    let mut table = Table::new(title);
    if let Some(c) = &f.create {
        let n = c.runs_ms.len();
        table.row(format!("create, {n} runs one after another: p50"), ms(c.p50_ms));
        if c.p95_is_max {
            table.row(format!("create: p95 (the max: {n} runs < 20)"), ms(c.p95_ms));
        } else {
            table.row("create: p95", ms(c.p95_ms));
        }
        table.row("create: max", ms(c.max_ms));
        table.row("create: tokens printed matching their status", format!("{} of {n}", c.tokens_matching_status));
        table.row(format!("describe {PROBE}: median of {}", c.describe_runs_ms.len()), ms(c.describe_median_ms));
        table.row("create p50 - describe median (issue and wait)", ms(c.create_over_describe_ms));
    }
    for s in &f.sizes {
        let n = s.keys;
        table.row(
            format!("fill to {n} keys: {} created, all Active / controller idle", s.created),
            format!("{:.1} s / +{:.1} s", s.fill_secs, s.settle_secs),
        );
        table.row(format!("list, {n} keys: median of {rounds}"), opt_ms(s.list_table.median_ms));
        table.row(format!("list -o json, {n} keys: median of {rounds}"), opt_ms(s.list_json.median_ms));
        table.row(format!("verify, {n} keys: median of {rounds}"), opt_ms(s.verify.median_ms));
        table.row(
            format!("list -o json, {n} keys: peak RSS (highest of {})", s.list_json_rss.runs_mib.len()),
            show::mib(s.list_json_rss.peak_mib),
        );
        table.row(
            format!("verify, {n} keys: peak RSS (highest of {})", s.verify_rss.runs_mib.len()),
            show::mib(s.verify_rss.peak_mib),
        );
        table.row(
            format!("list -o json, {n} keys: output"),
            format!("{:.2} MiB", s.list_json_bytes as f64 / 1_048_576.0),
        );
    }
    table.row(
        "controller log lines at WARN / ERROR",
        format!("{} / {}", f.controller_log_warnings, f.controller_log_errors),
    );
    table.row("whole run", show::secs(f.outcome.total_secs, 1));
    table.print();
    if let Some(c) = &f.create {
        println!("\ncreate runs, ms: {}", show::each(&c.runs_ms, 0));
        println!("describe runs, ms: {}", show::each(&c.describe_runs_ms, 0));
    }
    for s in &f.sizes {
        println!(
            "\n{} keys, rounds in ms: list {}; list -o json {}; verify {}",
            s.keys,
            show::each(&s.list_table.runs_ms, 0),
            show::each(&s.list_json.runs_ms, 0),
            show::each(&s.verify.runs_ms, 0)
        );
    }
    report::print_log_samples("controller", &f.controller_log_samples);
    f.outcome.print();
}
