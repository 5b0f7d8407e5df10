//! How every bench reports: progress lines on stderr, the figures table ("measured / goal /
//! MISSED") on stdout, and how the run ended, which goes into the JSON figures too.

use std::time::Instant;

use serde::Serialize;

/// How a run ended: its duration, the warnings it raised and the error that stopped it. Part
/// of every bench's figures (flattened, so the JSON keeps `total_secs`, `warnings`, `error`).
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub total_secs: Option<f64>,
    /// Measures that something else may have disturbed.
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

impl Outcome {
    /// The warnings and the error that stopped the run, last under the figures.
    pub fn print(&self) {
        for warning in &self.warnings {
            println!("\nWARNING {warning}");
        }
        if let Some(error) = &self.error {
            println!("\nthe run stopped early: {error}");
        }
    }
}

/// Progress lines on stderr, stamped with the seconds since the bench started.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    started: Instant,
}

impl Progress {
    pub fn start() -> Self {
        Self { started: Instant::now() }
    }

    pub fn say(&self, message: &str) {
        eprintln!("[{:>7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    /// Says `warning` and keeps it in the run's outcome.
    pub fn warn(&self, outcome: &mut Outcome, warning: String) {
        self.say(&format!("warning: {warning}"));
        outcome.warnings.push(warning);
    }
}

/// The figures table: a row a figure, the value right-aligned, then the goal and whether it
/// was met ("ok" or "MISSED"); a table without goals has two columns.
pub struct Table {
    title: String,
    rows: Vec<[String; 4]>,
}

impl Table {
    pub fn new(title: String) -> Self {
        Self { title, rows: Vec::new() }
    }

    /// A figure without a goal.
    pub fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.rows.push([figure.into(), value.into(), String::new(), String::new()]);
    }

    /// A figure with its goal; `met` is `None` when the figure is missing.
    pub fn goal(&mut self, figure: impl Into<String>, value: impl Into<String>, goal: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "",
        };
        self.rows.push([figure.into(), value.into(), goal.into(), verdict.into()]);
    }

    pub fn print(&self) {
        let header = ["figure", "measured", "goal", ""];
        let columns = if self.rows.iter().any(|r| !r[2].is_empty() || !r[3].is_empty()) { 4 } else { 2 };
        let widths: Vec<usize> = (0..columns)
            .map(|col| self.rows.iter().map(|r| r[col].len()).chain([header[col].len()]).max().unwrap_or(0))
            .collect();
        let line = |cells: [&str; 4]| {
            let mut text = String::new();
            for (col, &width) in widths.iter().enumerate() {
                let cell = cells[col];
                let last = col + 1 == columns;
                text.push_str(&match col {
                    1 => format!("{cell:>width$}"),
                    _ if last => cell.to_string(),
                    _ => format!("{cell:<width$}"),
                });
                if !last {
                    text.push_str("  ");
                }
            }
            println!("{}", text.trim_end());
        };
        println!();
        println!("{}", self.title);
        line(header);
        println!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (columns - 1)));
        for row in &self.rows {
            line([&row[0], &row[1], &row[2], &row[3]]);
        }
    }
}

/// Values as the tables print them; `-` for a figure the run did not get to.
pub mod show {
    pub fn secs(v: Option<f64>, decimals: usize) -> String {
        v.map_or("-".into(), |v| format!("{v:.decimals$} s"))
    }

    pub fn ms(v: Option<f64>, decimals: usize) -> String {
        v.map_or("-".into(), |v| format!("{v:.decimals$} ms"))
    }

    pub fn mib(v: Option<f64>) -> String {
        v.map_or("-".into(), |v| format!("{v:.1} MiB"))
    }

    /// A ratio, or any plain number, with `decimals` decimals.
    pub fn num(v: Option<f64>, decimals: usize) -> String {
        v.map_or("-".into(), |v| format!("{v:.decimals$}"))
    }

    pub fn count(v: Option<u64>) -> String {
        v.map_or("-".into(), |n| n.to_string())
    }

    /// Values of the rounds, `, `-separated.
    pub fn each(values: &[f64], decimals: usize) -> String {
        values.iter().map(|v| format!("{v:.decimals$}")).collect::<Vec<_>>().join(", ")
    }
}

/// Prints the first of a process's WARN and ERROR lines, when there are any.
pub fn print_log_samples(process: &str, samples: &[String]) {
    if !samples.is_empty() {
        println!("\n{process} warnings and errors (first {}):", samples.len());
        for line in samples {
            println!("  {line}");
        }
    }
}

/// Prints `title:` and a `what count` line each, when there is any.
pub fn print_counts<'a>(title: &str, counts: impl IntoIterator<Item = (&'a String, &'a u64)>) {
    let mut counts = counts.into_iter().peekable();
    if counts.peek().is_some() {
        println!("\n{title}:");
        for (what, count) in counts {
            println!("  {what:<40} {count}");
        }
    }
}

/// The median, `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// The `p`th percentile of sorted values, nearest rank; NaN for no values.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}
