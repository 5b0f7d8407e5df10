//! What the issue bench measures, and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Settings;
use crate::common::report::{self, show};
use crate::common::{Outcome, Table};

/// Every figure the bench measures; `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub settings: Option<Settings>,
    /// Seconds from the first create until every key was seen Active: the median over the
    /// rounds, and each round.
    pub baseline_secs: Option<f64>,
    pub controller_secs: Option<f64>,
    pub baseline_rounds_secs: Vec<f64>,
    pub controller_rounds_secs: Vec<f64>,
    /// controller_secs / baseline_secs; goal <= 1.3.
    pub ratio: Option<f64>,
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
    /// The same count for the baseline: a check of the method, which must say 2.
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
    /// Warnings and errors in the controllers' logs.
    pub controller_log_warnings: u64,
    pub controller_log_errors: u64,
    /// The first few of those lines.
    pub controller_log_samples: Vec<String>,
    /// With the warnings about measure windows that someone else's requests polluted.
    #[serde(flatten)]
    pub outcome: Outcome,
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
    row(format!("time to Active, {n} keys, baseline (median of {rounds})"), secs(f.baseline_secs), "", None);
    row(format!("time to Active, {n} keys, controller (median of {rounds})"), secs(f.controller_secs), "", None);
    row("controller / baseline".into(), num(f.ratio), "<= 1.30", f.ratio.map(|r| r <= 1.3));
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
    row("API writes per key, baseline (method check)".into(), per_key(f.baseline_writes_per_key), "2", None);
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
    if !f.baseline_rounds_secs.is_empty() {
        println!("\nrounds, seconds to Active: baseline {}", each(&f.baseline_rounds_secs));
        println!("                          controller {}", each(&f.controller_rounds_secs));
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
