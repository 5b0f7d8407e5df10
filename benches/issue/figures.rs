//! What the issue bench measures, and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Settings;
use super::profile::{Connections, EventTiming};
use crate::common::report::{self, show};
use crate::common::{Outcome, Table};

/// Every figure the bench measures; `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub settings: Option<Settings>,
    /// The floor: seconds from its first write until every key was seen Active, before and
    /// after each controller run; the median over the rounds, and each round.
    pub floor_before_secs: Option<f64>,
    pub floor_after_secs: Option<f64>,
    pub floor_before_rounds_secs: Vec<f64>,
    pub floor_after_rounds_secs: Vec<f64>,
    /// Seconds from the controller's spawn, and from its readiness, until every key it found
    /// was seen Active: medians and each round.
    pub controller_start_secs: Option<f64>,
    pub controller_ready_secs: Option<f64>,
    pub controller_start_rounds_secs: Vec<f64>,
    pub controller_ready_rounds_secs: Vec<f64>,
    /// Controller (from start, from ready) / floor (before, after); goal <= 1.3, then 1.1.
    pub ratio_start_before: Option<f64>,
    pub ratio_start_after: Option<f64>,
    pub ratio_ready_before: Option<f64>,
    pub ratio_ready_after: Option<f64>,
    /// Each round's controller (from start, from ready) over the mean of the floors just
    /// before and just after it, and the median of those: a slow spell of the machine that
    /// spans a round weighs on both sides of its ratio, where the ratio of medians can pair a
    /// fast floor with a slow controller run. Goal as above.
    pub ratio_start_rounds: Vec<f64>,
    pub ratio_ready_rounds: Vec<f64>,
    pub ratio_start_paired: Option<f64>,
    pub ratio_ready_paired: Option<f64>,
    /// Mutating requests on secrets and apikeys (the bench's own ApiKey creates excluded),
    /// per key, over all rounds; goal 2.
    pub controller_writes_per_key: Option<f64>,
    /// Mutating requests on events during the controller runs (all rounds together).
    pub controller_event_writes: Option<u64>,
    /// GET requests on secrets, apikeys and events per key (the bench makes none). LISTs are
    /// left out: the API server also served apikeys LISTs to someone else (~20 a second while
    /// keys were being written, in the baseline too); the request breakdown shows them.
    pub controller_gets_per_key: Option<f64>,
    /// Reconciles per key, from the controller's own `keyward_reconciles` counter.
    pub controller_reconciles_per_key: Option<f64>,
    /// The same count for the floor: a check of the method, which must say 2.
    pub baseline_writes_per_key: Option<f64>,
    /// `resource[/subresource] VERB code` -> requests (watches aside), for the controller runs
    /// (all rounds).
    pub controller_requests: BTreeMap<String, u64>,
    /// Mutating requests on secrets, apikeys and events during the rest window; goal 0.
    pub rest_writes: Option<u64>,
    /// Reads (GET, LIST) on those resources during the rest window, for information.
    pub rest_reads: Option<u64>,
    pub rest_requests: BTreeMap<String, u64>,
    /// Writes (secrets, apikeys, events) and reads made by a fresh controller started over the
    /// settled keys of the controller run; the same rule as at rest says 0 writes.
    pub restart_writes: Option<u64>,
    pub restart_reads: Option<u64>,
    pub restart_requests: BTreeMap<String, u64>,
    pub peak_rss_mib: Option<f64>,
    /// VmRSS once idle, of the last controller of the rounds.
    pub rss_idle_mib: Option<f64>,
    pub large_secs: Option<f64>,
    pub large_writes_per_key: Option<f64>,
    /// Goal: under 64 MiB at 10,000 keys.
    pub large_peak_rss_mib: Option<f64>,
    pub large_rss_idle_mib: Option<f64>,
    /// Milliseconds from `status.expiresAt` to the Secret's DELETE watch event, per key.
    pub expiry_latency_ms: Vec<f64>,
    pub expiry_latency_max_ms: Option<f64>,
    pub expiry_latency_mean_ms: Option<f64>,
    /// Figure 6, when `KEYWARD_BENCH_CREDENTIALS` is not 0.
    pub credentials: Option<CredentialFigures>,
    /// Where the time of figure 1 goes.
    pub profile: Option<Profile>,
    /// Warnings and errors in the controllers' logs.
    pub controller_log_warnings: u64,
    pub controller_log_errors: u64,
    /// The first few of those lines.
    pub controller_log_samples: Vec<String>,
    /// With the warnings about measure windows that someone else's requests polluted.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The profile of the bursts of figure 1, controller against floor.
#[derive(Debug, Default, Serialize)]
pub struct Profile {
    /// `resource[/subresource] VERB (requests)` -> the API server's mean milliseconds per
    /// request, over every controller run and every floor run.
    pub controller_apiserver_ms: BTreeMap<String, f64>,
    pub floor_apiserver_ms: BTreeMap<String, f64>,
    /// The API server's CPU seconds per run (its `process_cpu_seconds_total`), controller
    /// windows (start to idle) against floor windows.
    pub controller_apiserver_cpu_secs_per_run: f64,
    pub floor_apiserver_cpu_secs_per_run: f64,
    /// The controller's own CPU seconds, from spawn until every key was Active, each round.
    pub controller_cpu_secs: Vec<f64>,
    /// The bench process's CPU seconds over each floor run (its client and its watch), the bare
    /// floors only (not the floor with Events, nor with the controller's watches; as are the
    /// floor's connections).
    pub floor_cpu_secs: Vec<f64>,
    /// Connections to the API server (each new one a TLS handshake), each run.
    pub controller_connections: Vec<Connections>,
    pub floor_connections: Vec<Connections>,
    /// The controller's Events against the keys going Active, each round (seconds from spawn).
    pub controller_events: Vec<EventTiming>,
    pub floor_requests: BTreeMap<String, u64>,
    /// 1,000 raw status writes by server-side apply and by merge patch, seconds each run, and
    /// the API server's mean milliseconds per request in each run.
    pub status_apply_secs: Vec<f64>,
    pub status_merge_secs: Vec<f64>,
    pub status_apiserver_ms: BTreeMap<String, f64>,
    /// The floor with an Event per key beside the Secret and status: what the Event costs
    /// when written in the same window.
    pub floor_with_events_secs: Option<f64>,
    pub floor_with_events_requests: BTreeMap<String, u64>,
    /// The floor with the controller's watches open (ApiKeys, Credentials, the Secrets'
    /// metadata), listed before its clock starts, after each round's floor: seconds each round,
    /// the controller from ready over their median, and the API server's CPU seconds per run.
    pub floor_watched_rounds_secs: Vec<f64>,
    pub ratio_ready_watched: Option<f64>,
    pub floor_watched_apiserver_cpu_secs_per_run: f64,
}

/// The Credential part (figure 6): the figures 1 to 3 for Credentials of several tokens.
#[derive(Debug, Default, Serialize)]
pub struct CredentialFigures {
    /// Seconds from the first create until every Credential was seen Active with all its
    /// tokens: the median over the rounds, and each round.
    pub baseline_secs: Option<f64>,
    pub controller_secs: Option<f64>,
    pub baseline_rounds_secs: Vec<f64>,
    pub controller_rounds_secs: Vec<f64>,
    /// controller_secs / baseline_secs.
    pub ratio: Option<f64>,
    /// Mutating requests on secrets and credentials (the bench's own Credential creates
    /// excluded) per token, over all rounds; the floor is one Secret per token and one status
    /// per Credential, which the baseline's figure checks.
    pub controller_writes_per_token: Option<f64>,
    pub baseline_writes_per_token: Option<f64>,
    /// Mutating requests on events during the controller runs (all rounds together).
    pub controller_event_writes: Option<u64>,
    /// The same writes (secrets, credentials, events) as the API server counted them and as the
    /// controllers' own `keyward_api_writes_total` did, all rounds; the two should agree.
    pub apiserver_writes: Option<u64>,
    pub controller_counted_writes: Option<u64>,
    /// `resource verb` -> writes, from the controllers' own counter.
    pub controller_counted_breakdown: BTreeMap<String, u64>,
    pub controller_gets_per_token: Option<f64>,
    pub controller_reconciles_per_credential: Option<f64>,
    /// `resource[/subresource] VERB code` -> requests (watches aside), controller runs.
    pub controller_requests: BTreeMap<String, u64>,
    /// Mutating requests on secrets, apikeys, credentials and events during the rest window,
    /// the Credentials' controller running; goal 0. Its own counter over the same window.
    pub rest_writes: Option<u64>,
    pub rest_counted_writes: Option<u64>,
    pub rest_reads: Option<u64>,
    pub rest_requests: BTreeMap<String, u64>,
}

/// The figures as a table with the goals, on stdout.
pub fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else {
        return;
    };
    let n = settings.keys;
    let rounds = settings.rounds;
    let each = |values: &[f64]| show::each(values, 2);
    let large = settings.large;
    let secs = |v: Option<f64>| show::secs(v, 2);
    let num = |v: Option<f64>| show::num(v, 2);
    // Per-key counts get three decimals: 2.004 is not 2.
    let per_key = |v: Option<f64>| show::num(v, 3);
    let mib = show::mib;
    let title = format!(
        "keyward issue bench: {n} keys, {} credentials x {} tokens, --concurrency {}, rest {} s, large run {large} keys",
        settings.credentials, settings.credential_tokens, settings.concurrency, settings.rest_secs
    );
    let mut table = Table::new(title);
    let mut row = |figure: String, value: String, goal: &str, ok: Option<bool>| table.goal(figure, value, goal, ok);
    row(
        format!("{n} keys' writes done raw (floor), before the controller (median of {rounds})"),
        secs(f.floor_before_secs),
        "",
        None,
    );
    row(
        format!("{n} keys' writes done raw (floor), after the controller (median of {rounds})"),
        secs(f.floor_after_secs),
        "",
        None,
    );
    row(
        format!("{n} pre-applied keys to Active, controller, from start (median)"),
        secs(f.controller_start_secs),
        "",
        None,
    );
    row(
        format!("{n} pre-applied keys to Active, controller, from ready (median)"),
        secs(f.controller_ready_secs),
        "",
        None,
    );
    let ratios = [
        ("controller from start / floor before", f.ratio_start_before),
        ("controller from start / floor after", f.ratio_start_after),
        ("controller from ready / floor before", f.ratio_ready_before),
        ("controller from ready / floor after", f.ratio_ready_after),
        ("controller from start / its round's floors (median of rounds)", f.ratio_start_paired),
        ("controller from ready / its round's floors (median of rounds)", f.ratio_ready_paired),
    ];
    for (figure, ratio) in ratios {
        row(figure.into(), num(ratio), "<= 1.30 (then 1.10)", ratio.map(|r| r <= 1.3));
    }
    row(
        "API writes per key, controller (secrets+apikeys)".into(),
        per_key(f.controller_writes_per_key),
        "2",
        f.controller_writes_per_key.map(|w| w <= 2.0),
    );
    row(
        format!("event writes, controller, all {} keys", n * rounds),
        f.controller_event_writes.map_or("-".into(), |n| n.to_string()),
        "",
        None,
    );
    row("API GETs per key, controller".into(), per_key(f.controller_gets_per_key), "", None);
    row("reconciles per key, controller".into(), per_key(f.controller_reconciles_per_key), "", None);
    row("API writes per key, floor (method check)".into(), per_key(f.baseline_writes_per_key), "2", None);
    row(
        format!("writes in {} s at rest", settings.rest_secs),
        f.rest_writes.map_or("-".into(), |n| n.to_string()),
        "0",
        f.rest_writes.map(|n| n == 0),
    );
    row(
        format!("reads in {} s at rest", settings.rest_secs),
        f.rest_reads.map_or("-".into(), |n| n.to_string()),
        "",
        None,
    );
    row(
        format!("writes after a controller restart over {n} settled keys"),
        f.restart_writes.map_or("-".into(), |n| n.to_string()),
        "0",
        f.restart_writes.map(|n| n == 0),
    );
    row("reads after that restart".into(), f.restart_reads.map_or("-".into(), |n| n.to_string()), "", None);
    row(format!("controller peak RSS, {n} keys (highest of {rounds})"), mib(f.peak_rss_mib), "", None);
    row(
        format!("controller peak RSS, {large} keys"),
        mib(f.large_peak_rss_mib),
        "< 64 MiB",
        f.large_peak_rss_mib.map(|m| m < 64.0),
    );
    row(format!("controller RSS once idle, {n} keys"), mib(f.rss_idle_mib), "", None);
    row(format!("controller RSS once idle, {large} keys"), mib(f.large_rss_idle_mib), "", None);
    row(format!("time to Active, {large} keys, controller"), secs(f.large_secs), "", None);
    row(
        format!("API writes per key, {large} keys"),
        per_key(f.large_writes_per_key),
        "2",
        f.large_writes_per_key.map(|w| w <= 2.0),
    );
    let ms = |v: Option<f64>| show::ms(v, 0);
    row(
        format!("expiry latency, max of {}", f.expiry_latency_ms.len()),
        ms(f.expiry_latency_max_ms),
        "< 1000 ms",
        f.expiry_latency_max_ms.map(|m| m < 1000.0),
    );
    row(
        "expiry latency, mean".into(),
        ms(f.expiry_latency_mean_ms),
        "< 1000 ms",
        f.expiry_latency_mean_ms.map(|m| m < 1000.0),
    );
    if let Some(c) = &f.credentials {
        let (m, t) = (settings.credentials, settings.credential_tokens);
        let tokens = m * t * rounds;
        // One Secret per token and one status per Credential.
        let floor = (t + 1) as f64 / t as f64;
        let count = show::count;
        row(
            format!("time to Active, {m} credentials x {t} tokens, baseline (median)"),
            secs(c.baseline_secs),
            "",
            None,
        );
        row(
            format!("time to Active, {m} credentials x {t} tokens, controller (median)"),
            secs(c.controller_secs),
            "",
            None,
        );
        row("controller / baseline, credentials".into(), num(c.ratio), "<= 1.30", c.ratio.map(|r| r <= 1.3));
        row(
            "API writes per token, controller (secrets+credentials)".into(),
            per_key(c.controller_writes_per_token),
            &format!("{floor:.3}"),
            c.controller_writes_per_token.map(|w| w <= floor + 1e-9),
        );
        row("API writes per token, baseline (method check)".into(), per_key(c.baseline_writes_per_token), "", None);
        row(format!("event writes, controller, all {tokens} tokens"), count(c.controller_event_writes), "", None);
        row(
            "writes incl. events: API server / controller's own counter".into(),
            format!("{} / {}", count(c.apiserver_writes), count(c.controller_counted_writes)),
            "equal",
            c.apiserver_writes.zip(c.controller_counted_writes).map(|(a, b)| a == b),
        );
        row("API GETs per token, controller".into(), per_key(c.controller_gets_per_token), "", None);
        row("reconciles per credential, controller".into(), per_key(c.controller_reconciles_per_credential), "", None);
        row(
            format!("writes in {} s at rest, {m} credentials (controller's count)", settings.rest_secs),
            format!("{} ({})", count(c.rest_writes), count(c.rest_counted_writes)),
            "0",
            c.rest_writes.map(|n| n == 0),
        );
        row(format!("reads in {} s at rest, {m} credentials", settings.rest_secs), count(c.rest_reads), "", None);
    }
    row(
        "controller log lines at WARN / ERROR".into(),
        format!("{} / {}", f.controller_log_warnings, f.controller_log_errors),
        "",
        None,
    );
    row("whole run".into(), secs(f.outcome.total_secs), "", None);
    table.print();
    if !f.floor_before_rounds_secs.is_empty() {
        println!("\nrounds, seconds to Active: floor before     {}", each(&f.floor_before_rounds_secs));
        println!("                          controller, start {}", each(&f.controller_start_rounds_secs));
        println!("                          controller, ready {}", each(&f.controller_ready_rounds_secs));
        println!("                          floor after      {}", each(&f.floor_after_rounds_secs));
        println!("each round's ratio to its floors: start      {}", each(&f.ratio_start_rounds));
        println!("                                  ready      {}", each(&f.ratio_ready_rounds));
    }
    if let Some(p) = &f.profile {
        print_profile(p);
    }
    report::print_counts(&format!("controller runs, requests (all {} keys)", n * rounds), &f.controller_requests);
    report::print_counts("requests at rest", &f.rest_requests);
    report::print_counts("requests after the restart", &f.restart_requests);
    if let Some(c) = &f.credentials {
        if !c.baseline_rounds_secs.is_empty() {
            println!("\ncredential rounds, seconds to Active: baseline {}", each(&c.baseline_rounds_secs));
            println!("                                     controller {}", each(&c.controller_rounds_secs));
        }
        let lists = [
            ("credential controller runs, requests", &c.controller_requests),
            ("credential controller runs, writes by the controller's own counter", &c.controller_counted_breakdown),
            ("requests at rest with the credentials", &c.rest_requests),
        ];
        for (title, list) in lists {
            report::print_counts(title, list);
        }
    }
    report::print_log_samples("controller", &f.controller_log_samples);
    if !f.expiry_latency_ms.is_empty() {
        let each: Vec<String> = f.expiry_latency_ms.iter().map(|ms| format!("{ms:.0}")).collect();
        println!("\nexpiry latencies (ms): {}", each.join(", "));
    }
    f.outcome.print();
}

/// The profile of figure 1, after the table.
fn print_profile(p: &Profile) {
    println!("\nprofile of the 1,000-key bursts:");
    println!(
        "  API server CPU per run: controller {:.2} s, floor {:.2} s; controller CPU to Active: {} s; bench \
         process CPU per floor run: {} s",
        p.controller_apiserver_cpu_secs_per_run,
        p.floor_apiserver_cpu_secs_per_run,
        show::each(&p.controller_cpu_secs, 2),
        show::each(&p.floor_cpu_secs, 2)
    );
    let connections = |runs: &[Connections]| {
        let each: Vec<String> =
            runs.iter().map(|c| format!("{} new, peak {} ({} at start)", c.opened, c.peak, c.open_at_start)).collect();
        each.join("; ")
    };
    println!("  connections to the API server, controller: {}", connections(&p.controller_connections));
    println!("  connections to the API server, floor (bench process): {}", connections(&p.floor_connections));
    for e in &p.controller_events {
        println!(
            "  events: {} written, {} before the last key was Active; first at {} s, last at {} s, all Active at {:.2} s",
            e.events,
            e.before_done,
            show::num(e.first_secs, 2),
            show::num(e.last_secs, 2),
            e.done_secs
        );
    }
    println!(
        "  1,000 raw status writes: server-side apply {} s, merge patch {} s",
        show::each(&p.status_apply_secs, 2),
        show::each(&p.status_merge_secs, 2)
    );
    println!("  floor with an Event per key: {}", show::secs(p.floor_with_events_secs, 2));
    if !p.floor_watched_rounds_secs.is_empty() {
        println!(
            "  floor with the controller's watches open: {} s (API server CPU {:.2} s per run); controller from \
             ready over it (medians): {}",
            show::each(&p.floor_watched_rounds_secs, 2),
            p.floor_watched_apiserver_cpu_secs_per_run,
            show::num(p.ratio_ready_watched, 2)
        );
    }
    let ms = |title: &str, list: &BTreeMap<String, f64>| {
        if !list.is_empty() {
            println!("\n{title}:");
            for (what, ms) in list {
                println!("  {what:<50} {ms:.2} ms");
            }
        }
    };
    ms("API server mean time per request, controller runs", &p.controller_apiserver_ms);
    ms("API server mean time per request, floor runs", &p.floor_apiserver_ms);
    ms("API server mean time per request, raw status writes", &p.status_apiserver_ms);
    report::print_counts("floor runs, requests", &p.floor_requests);
    report::print_counts("floor with events, requests", &p.floor_with_events_requests);
}
