//! What the verifier bench measures, and the tables it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Settings;
use super::wrk::WrkRun;
use crate::common::report::show;
use crate::common::{Outcome, Table, median};

/// Every figure the bench measures; empty or `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub settings: Option<Settings>,
    /// `wrk --version`'s first line.
    pub wrk: Option<String>,
    /// `nginx -v`'s line.
    pub nginx_version: Option<String>,
    /// Part 1: the baseline at each load.
    pub baseline: Vec<LoadFigures>,
    /// Part 1, to explain the others: a baseline that answers, without looking at anything,
    /// the very headers of a verifier's 200 (a granted answer has no body). Its ratios are to
    /// the baseline.
    pub sized_baseline: Vec<LoadFigures>,
    /// Part 1, the floor: NGINX `return 200;` with one worker, at each load. Its ratios are to
    /// the baseline.
    pub nginx: Vec<LoadFigures>,
    /// Part 1: the verifier at each key count and load, against NGINX and the baseline at that
    /// load.
    pub verifier: Vec<LoadFigures>,
    /// Part 1: memory of the server processes at the end of their measures.
    pub servers: Vec<ServerFigures>,
    /// Part 2, one entry per key count.
    pub api: Vec<ApiFigures>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One server at one load, over the rounds.
#[derive(Debug, Default, Serialize)]
pub struct LoadFigures {
    /// Keys indexed; 0 for the baseline.
    pub keys: usize,
    pub connections: usize,
    pub threads: usize,
    /// Medians over the rounds.
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time (user and system) of the server process per request answered.
    pub cpu_us_per_request: Option<f64>,
    /// This server's median requests per second over the same-stack baseline's.
    pub throughput_ratio: Option<f64>,
    /// This server's median p99 over the same-stack baseline's.
    pub p99_ratio: Option<f64>,
    /// The verifier's median requests per second over NGINX's.
    pub nginx_throughput_ratio: Option<f64>,
    /// Each round's requests per second over NGINX's in the same round, and their median (goal
    /// >= 0.8): taken in turns, the two see the same machine, as the rebuild and its LIST do.
    pub nginx_throughput_ratio_rounds: Vec<f64>,
    pub nginx_throughput_ratio_paired: Option<f64>,
    /// The verifier's median p99 over NGINX's (goal <= 1.5 with many connections).
    pub nginx_p99_ratio: Option<f64>,
    pub rounds: Vec<WrkRun>,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerFigures {
    pub role: String,
    pub keys: usize,
    /// Status line, headers and body of a 200 on `/v1/auth`.
    pub answer_bytes: usize,
    pub rss_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// `keyward_verifier_requests_total` of `/v1/auth` by code, for the verifier.
    pub auth_answers: BTreeMap<String, u64>,
}

/// Part 2 at one key count.
#[derive(Debug, Default, Serialize)]
pub struct ApiFigures {
    pub keys: usize,
    /// Keys created (and their status written) to reach `keys`, and how long that took.
    pub created: usize,
    pub create_secs: f64,
    pub created_per_sec: f64,
    /// Seconds from the verifier's start until `/readyz` answered 200: median, each round.
    pub rebuild_secs: Option<f64>,
    pub rebuild_rounds_secs: Vec<f64>,
    /// Seconds from start until the verifier logged its listen address (process start and
    /// client set-up, before any list), median.
    pub listening_secs: Option<f64>,
    /// CPU time the verifier had used once ready, median: far below the rebuild time, the
    /// wait was the API server's.
    pub rebuild_cpu_secs: Option<f64>,
    /// `keyward_verifier_indexed_tokens` once ready (must equal `keys`).
    pub indexed_tokens: Option<u64>,
    /// Of the last verifier started: VmRSS and VmHWM once ready, and after the `wrk` run.
    pub rss_ready_mib: Option<f64>,
    pub peak_rss_ready_mib: Option<f64>,
    pub rss_after_load_mib: Option<f64>,
    pub peak_rss_after_load_mib: Option<f64>,
    /// The highest VmHWM of all the verifiers started at this count.
    pub peak_rss_max_mib: Option<f64>,
    /// `wrk` against that verifier (many connections), tokens of the API server's keys.
    pub load: Option<WrkRun>,
    /// A paged LIST of every key by the bench, 500 a page as the verifier's watch asks, and one
    /// LIST served from the API server's watch cache (`resourceVersion=0`), for comparison.
    pub list_paged_secs: Option<f64>,
    pub list_cached_secs: Option<f64>,
    /// The paged LIST of each round, taking turns with the rebuilds.
    pub list_paged_rounds_secs: Vec<f64>,
    /// Each round's rebuild over that round's paged LIST, and their median (goal at most 1.1).
    pub rebuild_over_list_rounds: Vec<f64>,
    pub rebuild_over_list: Option<f64>,
}

impl LoadFigures {
    pub fn of(keys: usize, threads: usize, connections: usize, rounds: Vec<WrkRun>) -> Self {
        let of = |f: fn(&WrkRun) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        Self {
            keys,
            connections,
            threads,
            rps: of(|r| r.rps),
            p50_ms: of(|r| r.p50_ms),
            p99_ms: of(|r| r.p99_ms),
            cpu_us_per_request: median(&rounds.iter().filter_map(|r| r.server_cpu_us_per_request).collect::<Vec<_>>()),
            throughput_ratio: None,
            p99_ratio: None,
            nginx_throughput_ratio: None,
            nginx_throughput_ratio_rounds: Vec::new(),
            nginx_throughput_ratio_paired: None,
            nginx_p99_ratio: None,
            rounds,
        }
    }
}

/// The figures as tables with the goals, on stdout.
pub fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else { return };
    let rounds = settings.rounds;
    let title = format!(
        "keyward verifier bench: /v1/auth with {:?} keys, wrk {} s x {rounds} rounds, {} and 1 connection(s), \
         {} tokens presented; {}; {}",
        settings.sizes(),
        settings.secs,
        settings.connections,
        settings.tokens,
        f.wrk.as_deref().unwrap_or("wrk"),
        f.nginx_version.as_deref().unwrap_or("nginx"),
    );
    let mut table = Table::new(title);
    let ms = |v: f64| format!("{v:.3} ms");
    let mib = show::mib;
    let secs = |v: Option<f64>| show::secs(v, 2);
    let ratio = |v: Option<f64>| show::num(v, 2);
    let mut row = |figure: String, value: String, goal: &str, ok: Option<bool>| table.goal(figure, value, goal, ok);
    let cpu = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} us"));
    for baseline in &f.baseline {
        let c = baseline.connections;
        let load = format!("{c} conn");
        row(format!("{load}, baseline: req/s (median of {rounds})"), format!("{:.0}", baseline.rps), "", None);
        row(
            format!("{load}, baseline: p50 / p99"),
            format!("{} / {}", ms(baseline.p50_ms), ms(baseline.p99_ms)),
            "",
            None,
        );
        row(format!("{load}, baseline: server CPU per request"), cpu(baseline.cpu_us_per_request), "", None);
        for sized in f.sized_baseline.iter().filter(|v| v.connections == c) {
            row(
                format!("{load}, sized baseline: req/s (/ baseline)"),
                format!("{:.0} ({})", sized.rps, ratio(sized.throughput_ratio)),
                "",
                None,
            );
            row(
                format!("{load}, sized baseline: p50 / p99"),
                format!("{} / {}", ms(sized.p50_ms), ms(sized.p99_ms)),
                "",
                None,
            );
            row(format!("{load}, sized baseline: server CPU per request"), cpu(sized.cpu_us_per_request), "", None);
        }
        for nginx in f.nginx.iter().filter(|v| v.connections == c) {
            row(
                format!("{load}, NGINX return 200: req/s (/ baseline)"),
                format!("{:.0} ({})", nginx.rps, ratio(nginx.throughput_ratio)),
                "",
                None,
            );
            row(
                format!("{load}, NGINX return 200: p50 / p99"),
                format!("{} / {}", ms(nginx.p50_ms), ms(nginx.p99_ms)),
                "",
                None,
            );
            row(format!("{load}, NGINX return 200: server CPU per request"), cpu(nginx.cpu_us_per_request), "", None);
        }
        for v in f.verifier.iter().filter(|v| v.connections == c) {
            let keys = v.keys;
            row(format!("{load}, verifier {keys} keys: req/s"), format!("{:.0}", v.rps), "", None);
            row(
                format!("{load}, verifier {keys} keys: req/s / NGINX, of the medians"),
                ratio(v.nginx_throughput_ratio),
                "",
                None,
            );
            row(
                format!("{load}, verifier {keys} keys: req/s / NGINX, median of the rounds'"),
                ratio(v.nginx_throughput_ratio_paired),
                ">= 0.80",
                v.nginx_throughput_ratio_paired.map(|r| r >= 0.8),
            );
            row(format!("{load}, verifier {keys} keys: req/s / baseline"), ratio(v.throughput_ratio), "", None);
            row(
                format!("{load}, verifier {keys} keys: p50 / p99"),
                format!("{} / {}", ms(v.p50_ms), ms(v.p99_ms)),
                "",
                None,
            );
            if c == 1 {
                row(format!("{load}, verifier {keys} keys: p99"), ms(v.p99_ms), "< 1 ms", Some(v.p99_ms < 1.0));
                row(format!("{load}, verifier {keys} keys: p99 / NGINX"), ratio(v.nginx_p99_ratio), "", None);
            } else {
                row(
                    format!("{load}, verifier {keys} keys: p99 / NGINX"),
                    ratio(v.nginx_p99_ratio),
                    "<= 1.50",
                    v.nginx_p99_ratio.map(|r| r <= 1.5),
                );
            }
            row(format!("{load}, verifier {keys} keys: p99 / baseline"), ratio(v.p99_ratio), "", None);
            row(format!("{load}, verifier {keys} keys: server CPU per request"), cpu(v.cpu_us_per_request), "", None);
        }
    }
    for server in &f.servers {
        let name = match (server.role.as_str(), server.keys) {
            ("nginx", _) => "NGINX (its own process)".to_string(),
            (role, 0) => format!("in-process {role}"),
            (role, keys) => format!("in-process {role} {keys} keys"),
        };
        row(
            format!("{name}: RSS / peak after its loads"),
            format!("{} / {}", mib(server.rss_mib), mib(server.peak_rss_mib)),
            "",
            None,
        );
        row(format!("{name}: bytes of a 200 on /v1/auth"), server.answer_bytes.to_string(), "", None);
    }
    let largest = settings.sizes().last().copied().unwrap_or(0);
    for api in &f.api {
        let n = api.keys;
        let goal = n == largest;
        row(
            format!("API: create {} ApiKeys (+ status) to reach {n}", api.created),
            format!("{:.1} s ({:.0}/s)", api.create_secs, api.created_per_sec),
            "",
            None,
        );
        row(
            format!("API: rebuild after restart, {n} keys (median of {})", api.rebuild_rounds_secs.len()),
            secs(api.rebuild_secs),
            if goal { "< 5 s" } else { "" },
            api.rebuild_secs.filter(|_| goal).map(|s| s < 5.0),
        );
        row(format!("API: of which until listening, {n} keys"), secs(api.listening_secs), "", None);
        row(format!("API: verifier CPU time until ready, {n} keys"), secs(api.rebuild_cpu_secs), "", None);
        row(
            format!("API: LIST {n} keys, pages of 500 / watch cache"),
            format!("{} / {}", secs(api.list_paged_secs), secs(api.list_cached_secs)),
            "",
            None,
        );
        row(
            format!("API: rebuild / paged LIST, {n} keys (median of rounds)"),
            api.rebuild_over_list.map_or_else(|| "-".into(), |r| format!("{r:.3}")),
            if goal { "<= 1.1" } else { "" },
            api.rebuild_over_list.filter(|_| goal).map(|r| r <= 1.1),
        );
        row(
            format!("API: verifier RSS / peak once ready, {n} keys"),
            format!("{} / {}", mib(api.rss_ready_mib), mib(api.peak_rss_ready_mib)),
            "",
            None,
        );
        row(
            format!("API: verifier RSS / peak after wrk, {n} keys"),
            format!("{} / {}", mib(api.rss_after_load_mib), mib(api.peak_rss_after_load_mib)),
            "",
            None,
        );
        row(
            format!("API: verifier highest peak RSS, {n} keys"),
            mib(api.peak_rss_max_mib),
            if goal { "< 128 MiB" } else { "" },
            api.peak_rss_max_mib.filter(|_| goal).map(|m| m < 128.0),
        );
        if let Some(load) = &api.load {
            row(
                format!("API: verifier {n} keys, {} conn: req/s, p50 / p99", settings.connections),
                format!("{:.0}, {} / {}", load.rps, ms(load.p50_ms), ms(load.p99_ms)),
                "",
                None,
            );
            row(
                format!("API: verifier {n} keys: server CPU per request"),
                cpu(load.server_cpu_us_per_request),
                "",
                None,
            );
        }
    }
    row("whole run".into(), secs(f.outcome.total_secs), "", None);
    table.print();
    let each = |runs: &[WrkRun]| {
        runs.iter().map(|r| format!("{:.0} ({:.3}/{:.3})", r.rps, r.p50_ms, r.p99_ms)).collect::<Vec<_>>().join(", ")
    };
    if !f.baseline.is_empty() {
        println!("\nrounds, req/s (p50/p99 ms):");
        let baselines = f.baseline.iter().map(|b| ("baseline".to_string(), b));
        let sized = f.sized_baseline.iter().map(|b| ("sized baseline".to_string(), b));
        let nginx = f.nginx.iter().map(|b| ("nginx".to_string(), b));
        let verifiers = f.verifier.iter().map(|v| (format!("verifier {}", v.keys), v));
        for (name, figures) in baselines.chain(sized).chain(nginx).chain(verifiers) {
            println!("  {:>3} conn {name:<16} {}", figures.connections, each(&figures.rounds));
        }
        println!("\nrounds, verifier req/s / NGINX's in the same round:");
        for v in f.verifier.iter().filter(|v| !v.nginx_throughput_ratio_rounds.is_empty()) {
            let ratios: Vec<String> = v.nginx_throughput_ratio_rounds.iter().map(|r| format!("{r:.3}")).collect();
            println!("  {:>3} conn verifier {:<7} {}", v.connections, v.keys, ratios.join(", "));
        }
    }
    for api in f.api.iter().filter(|a| !a.rebuild_rounds_secs.is_empty()) {
        let each: Vec<String> = api.rebuild_rounds_secs.iter().map(|s| format!("{s:.2}")).collect();
        println!("\nrebuilds over {} keys, seconds: {}", api.keys, each.join(", "));
        let lists: Vec<String> = api.list_paged_rounds_secs.iter().map(|s| format!("{s:.2}")).collect();
        println!("paged LISTs of {} keys, seconds: {}", api.keys, lists.join(", "));
        let ratios: Vec<String> = api.rebuild_over_list_rounds.iter().map(|r| format!("{r:.3}")).collect();
        println!("rebuild / paged LIST, each round: {}", ratios.join(", "));
    }
    f.outcome.print();
}
