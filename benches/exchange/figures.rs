//! What the exchange bench measures, and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Settings;
use super::wrk::WrkRun;
use crate::common::report::{print_counts, show};
use crate::common::{Outcome, Table, median};

/// Every figure the bench measures; `None` or empty for what it did not get to.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub settings: Option<Settings>,
    /// `wrk`'s version line.
    pub wrk: Option<String>,
    /// Seconds to create the ApiKeys and write their status.
    pub create_keys_secs: Option<f64>,
    /// `/v1/auth` presenting the API tokens.
    pub api_tokens: Option<LoadFigures>,
    /// `/v1/auth` presenting the access tokens.
    pub access_tokens: Option<LoadFigures>,
    /// `POST /v1/token` client-credentials exchanges.
    pub exchange: Option<LoadFigures>,
    /// Access-token req/s over API-token req/s, medians (goal >= 0.8).
    pub access_token_throughput_ratio: Option<f64>,
    /// Access-token p99 over API-token p99, medians (goal <= 1.5).
    pub access_token_p99_ratio: Option<f64>,
    /// `keyward_verifier_access_token_checks_total` by result during the measured rounds
    /// (`hit`: from the cache, `miss`: signature checked).
    pub access_token_checks_during_measures: BTreeMap<String, u64>,
    /// `keyward_verifier_requests_total{endpoint="auth"}` by code, the whole run.
    pub auth_answers: BTreeMap<String, u64>,
    /// `keyward_verifier_token_exchanges_total` by result, the whole run.
    pub exchanges: BTreeMap<String, u64>,
    /// The verifier's VmRSS and VmHWM after the loads.
    pub rss_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One load over the rounds.
#[derive(Debug, Default, Serialize)]
pub struct LoadFigures {
    pub connections: usize,
    pub threads: usize,
    /// Medians over the rounds.
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The verifier's CPU time (user and system) per request answered, median.
    pub cpu_us_per_request: Option<f64>,
    pub rounds: Vec<WrkRun>,
}

impl LoadFigures {
    pub fn of(connections: usize, threads: usize, rounds: Vec<WrkRun>) -> Self {
        let of = |f: fn(&WrkRun) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        Self {
            connections,
            threads,
            rps: of(|r| r.rps),
            p50_ms: of(|r| r.p50_ms),
            p99_ms: of(|r| r.p99_ms),
            cpu_us_per_request: median(&rounds.iter().filter_map(|r| r.server_cpu_us_per_request).collect::<Vec<_>>()),
            rounds,
        }
    }
}

/// The figures as a table with the goals, on stdout.
pub fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else { return };
    let title = format!(
        "keyward exchange bench: {} keys, wrk -t{} -c{} {} s x {} rounds, loads taking turns; {}",
        settings.keys,
        settings.threads,
        settings.connections,
        settings.secs,
        settings.rounds,
        f.wrk.as_deref().unwrap_or("wrk"),
    );
    let mut table = Table::new(title);
    let ms = |v: f64| format!("{v:.3} ms");
    let cpu = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} us"));
    let rounds = settings.rounds;
    table.row("create the ApiKeys (+ status)", show::secs(f.create_keys_secs, 1));
    let loads = [
        ("/v1/auth, API tokens", &f.api_tokens),
        ("/v1/auth, access tokens", &f.access_tokens),
        ("POST /v1/token exchanges", &f.exchange),
    ];
    for (name, load) in loads {
        let Some(load) = load else { continue };
        if name.starts_with("POST") {
            table.goal(
                format!("{name}: req/s (median of {rounds})"),
                format!("{:.0}", load.rps),
                ">= 5000",
                Some(load.rps >= 5000.0),
            );
        } else {
            table.row(format!("{name}: req/s (median of {rounds})"), format!("{:.0}", load.rps));
        }
        table.row(format!("{name}: p50 / p99"), format!("{} / {}", ms(load.p50_ms), ms(load.p99_ms)));
        table.row(format!("{name}: verifier CPU per request"), cpu(load.cpu_us_per_request));
    }
    table.goal(
        "access tokens / API tokens: req/s",
        show::num(f.access_token_throughput_ratio, 2),
        ">= 0.80",
        f.access_token_throughput_ratio.map(|r| r >= 0.8),
    );
    table.goal(
        "access tokens / API tokens: p99",
        show::num(f.access_token_p99_ratio, 2),
        "<= 1.50",
        f.access_token_p99_ratio.map(|r| r <= 1.5),
    );
    table.row(
        "verifier RSS / peak after the loads",
        format!("{} / {}", show::mib(f.rss_mib), show::mib(f.peak_rss_mib)),
    );
    table.row("whole run", show::secs(f.outcome.total_secs, 1));
    table.print();
    let loads = [("API tokens", &f.api_tokens), ("access tokens", &f.access_tokens), ("exchanges", &f.exchange)];
    if loads.iter().any(|(_, l)| l.is_some()) {
        println!("\nrounds, req/s (p50/p99 ms, verifier CPU us/request):");
        for (name, load) in loads {
            let Some(load) = load else { continue };
            let each: Vec<String> = load
                .rounds
                .iter()
                .map(|r| {
                    format!(
                        "{:.0} ({:.3}/{:.3}, {:.1})",
                        r.rps,
                        r.p50_ms,
                        r.p99_ms,
                        r.server_cpu_us_per_request.unwrap_or(f64::NAN)
                    )
                })
                .collect();
            println!("  {name:<14} {}", each.join(", "));
        }
    }
    print_counts("access-token checks during the measured rounds", &f.access_token_checks_during_measures);
    print_counts("/v1/auth answers by code", &f.auth_answers);
    print_counts("exchanges by result", &f.exchanges);
    f.outcome.print();
}
