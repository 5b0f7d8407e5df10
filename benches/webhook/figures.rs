//! What the webhook bench measures, and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{GRANTED, Route, SCOPE, Settings, USER};
use crate::common::report::{self, show};
use crate::common::{Outcome, Table, nearest_rank};

/// Every figure the bench measures; empty or `None` for what it did not get to.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub settings: Option<Settings>,
    /// The rounds in the order they ran.
    pub rounds: Vec<RoundFigures>,
    /// Medians of the rounds' times, and webhook / direct.
    pub webhook_secs: Option<f64>,
    pub direct_secs: Option<f64>,
    pub ratio: Option<f64>,
    /// The floor: the median round through the no-op webhook, noop / direct, and webhook /
    /// noop (the part of the cost that is keyward's own).
    pub noop_secs: Option<f64>,
    pub noop_ratio: Option<f64>,
    pub webhook_over_noop_ratio: Option<f64>,
    /// Per-create latency, all rounds of a route pooled (nearest rank).
    pub webhook_latency: Option<Latency>,
    pub noop_latency: Option<Latency>,
    pub direct_latency: Option<Latency>,
    /// Webhook minus direct.
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    /// No-op webhook minus direct, and webhook minus no-op webhook.
    pub noop_added_p50_ms: Option<f64>,
    pub noop_added_p99_ms: Option<f64>,
    pub webhook_over_noop_p50_ms: Option<f64>,
    pub webhook_over_noop_p99_ms: Option<f64>,
    /// The API server's timing of its calls to each webhook (keyward's and the no-op's) during
    /// the rounds through it.
    pub apiserver_webhook_calls: Vec<WebhookCalls>,
    /// Sum of the API server's webhook call times over the creates through the webhook, and
    /// through the no-op webhook.
    pub apiserver_webhook_ms_per_create: Option<f64>,
    pub apiserver_noop_webhook_ms_per_create: Option<f64>,
    /// The webhook's SubjectAccessReviews during the rounds through it, per create.
    pub sars: Option<u64>,
    pub sars_per_create: Option<f64>,
    /// The API server's count of subjectaccessreviews POSTs in the same windows.
    pub apiserver_sar_posts: Option<u64>,
    /// Mean SubjectAccessReview latency seen by the webhook during the rounds.
    pub sar_mean_ms: Option<f64>,
    /// SubjectAccessReviews of one create without the cache: the covering names of `orders.read`
    /// asked until `orders.>` (computed), and those of a single create in a fresh namespace.
    pub uncached_sars_computed: Option<usize>,
    pub uncached_sars_measured: Option<u64>,
    /// CPU time per create (medians of the rounds) of the local control plane's kube-apiserver
    /// and etcd together, without a webhook, through the no-op one and through keyward's; and
    /// of keyward's webhook and the no-op one; `None` when the control plane's processes are
    /// not known (another API server than the local one).
    pub control_plane_cpu_ms_direct: Option<f64>,
    pub control_plane_cpu_ms_noop: Option<f64>,
    pub control_plane_cpu_ms_webhook: Option<f64>,
    pub webhook_cpu_ms: Option<f64>,
    pub noop_webhook_cpu_ms: Option<f64>,
    /// Peak RSS (VmHWM) of the webhook at the end.
    pub webhook_peak_rss_mib: Option<f64>,
    /// Lines the webhook logged at WARN and ERROR (the kube client's note that the local
    /// control plane's kubeconfig skips TLS verification left out), and the first few.
    pub webhook_log_warnings: u64,
    pub webhook_log_errors: u64,
    pub webhook_log_samples: Vec<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One round of one route.
#[derive(Debug, Serialize)]
pub struct RoundFigures {
    pub round: usize,
    pub route: Route,
    pub namespace: String,
    /// First create sent to last answer.
    pub secs: f64,
    pub latency: Latency,
    /// Creates that had to be tried again, and the first error of one.
    pub retried: usize,
    pub first_retry_error: Option<String>,
    /// Admissions the webhook answered and SubjectAccessReviews it asked during the round.
    pub admissions: u64,
    pub sars: u64,
    /// Reviews the no-op webhook answered during the round.
    pub noop_reviews: u64,
    /// subjectaccessreviews POSTs the API server counted during the round.
    pub apiserver_sar_posts: u64,
    /// CPU time (user + system) per create of each process measured, by name.
    pub cpu_ms_per_create: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub creates: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(ms: &[f64]) -> Self {
        let mut sorted = ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            creates: sorted.len(),
            p50_ms: nearest_rank(&sorted, 0.50),
            p99_ms: nearest_rank(&sorted, 0.99),
            max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The API server's calls to one webhook (`mutate.keyward.io`, `validate.noop.keyward.io`...).
#[derive(Debug, Serialize)]
pub struct WebhookCalls {
    pub name: String,
    pub calls: u64,
    pub mean_ms: f64,
    /// The upper bound (le) of the bucket the 50th and 99th percentile call fall in; `None` past
    /// the last finite bucket.
    pub p50_at_most_ms: Option<f64>,
    pub p99_at_most_ms: Option<f64>,
}

/// The figures as a table with the goals, on stdout.
pub fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else { return };
    let (n, rounds, concurrency) = (settings.keys, settings.rounds, settings.concurrency);
    let secs = |v: Option<f64>| show::secs(v, 2);
    let ms = |v: Option<f64>| show::ms(v, 1);
    let num = |v: Option<f64>| show::num(v, 2);
    let pair = |a: Option<f64>, b: Option<f64>| format!("{} / {}", ms(a), ms(b));
    let latency = |l: &Option<Latency>| pair(l.as_ref().map(|l| l.p50_ms), l.as_ref().map(|l| l.p99_ms));
    let title = format!(
        "keyward webhook bench: {n} ApiKeys with scopes [{SCOPE}] by {USER} (grant {GRANTED}), {concurrency} in \
         flight, {rounds} rounds through the webhook, {rounds} through a no-op webhook and {rounds} without, \
         taking turns; release binary"
    );
    let mut table = Table::new(title);
    let burst = format!("{n} creates, {concurrency} in flight");
    table.row(format!("{burst}, without the webhook (median of {rounds})"), secs(f.direct_secs));
    table.row(format!("{burst}, through the no-op webhook (median of {rounds})"), secs(f.noop_secs));
    table.row(format!("{burst}, through the webhook (median of {rounds})"), secs(f.webhook_secs));
    table.goal("through the webhook / without", num(f.ratio), "<= 1.30", f.ratio.map(|r| r <= 1.3));
    table.row("  no-op webhook / without (the floor of any webhook)", num(f.noop_ratio));
    table.row("  through the webhook / no-op webhook (the part that is ours)", num(f.webhook_over_noop_ratio));
    table.row("create latency without the webhook: p50 / p99", latency(&f.direct_latency));
    table.row("create latency through the no-op webhook: p50 / p99", latency(&f.noop_latency));
    table.row("create latency through the webhook: p50 / p99", latency(&f.webhook_latency));
    table.row("admission time added per create: p50", ms(f.added_p50_ms));
    table.goal("admission time added per create: p99", ms(f.added_p99_ms), "< 10 ms", f.added_p99_ms.map(|v| v < 10.0));
    table.row("  of which the no-op webhook's (the floor): p50 / p99", pair(f.noop_added_p50_ms, f.noop_added_p99_ms));
    table.row(
        "  of which ours (webhook minus no-op webhook): p50 / p99",
        pair(f.webhook_over_noop_p50_ms, f.webhook_over_noop_p99_ms),
    );
    table.row(
        "API server's calls to the webhooks, per create (mean, mutate + validate)",
        ms(f.apiserver_webhook_ms_per_create),
    );
    table.row(
        "API server's calls to the no-op webhooks, per create (mean, mutate + validate)",
        ms(f.apiserver_noop_webhook_ms_per_create),
    );
    for calls in &f.apiserver_webhook_calls {
        let bound = |v: Option<f64>| v.map_or("-".into(), |v| format!("<= {v:.0} ms"));
        table.row(
            format!("  {}: {} calls, mean; p50 / p99 bucket", calls.name, calls.calls),
            format!("{:.1} ms; {} / {}", calls.mean_ms, bound(calls.p50_at_most_ms), bound(calls.p99_at_most_ms)),
        );
    }
    table.row(
        format!("SubjectAccessReviews per create, with the cache ({} in {rounds} x {n})", show::count(f.sars)),
        show::num(f.sars_per_create, 3),
    );
    table.row(
        "  the API server's count of subjectaccessreviews POSTs, same windows",
        show::count(f.apiserver_sar_posts),
    );
    table.row(
        format!("SubjectAccessReviews per create, without the cache ({SCOPE} until {GRANTED}: computed / one create)"),
        format!(
            "{} / {}",
            f.uncached_sars_computed.map_or("-".into(), |v| v.to_string()),
            show::count(f.uncached_sars_measured)
        ),
    );
    table.row("SubjectAccessReview latency, mean", ms(f.sar_mean_ms));
    table.row(
        "CPU per create, kube-apiserver + etcd: without / no-op webhook / through the webhook (medians)",
        format!(
            "{} / {} / {}",
            ms(f.control_plane_cpu_ms_direct),
            ms(f.control_plane_cpu_ms_noop),
            ms(f.control_plane_cpu_ms_webhook)
        ),
    );
    table.row(
        "CPU per create, the webhook / the no-op webhook (medians)",
        pair(f.webhook_cpu_ms, f.noop_webhook_cpu_ms),
    );
    table.row("webhook peak RSS", show::mib(f.webhook_peak_rss_mib));
    table.row("webhook log lines at WARN / ERROR", format!("{} / {}", f.webhook_log_warnings, f.webhook_log_errors));
    table.row("whole run", secs(f.outcome.total_secs));
    table.print();
    if !f.rounds.is_empty() {
        println!("\nrounds, in order:");
        for r in &f.rounds {
            println!(
                "  {} {:<7} {:>6.2} s  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms  {} SubjectAccessReviews  \
                 CPU per create {}",
                r.round,
                r.route.name(),
                r.secs,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.sars,
                r.cpu_ms_per_create
                    .iter()
                    .map(|(name, ms)| format!("{name} {ms:.2} ms"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    report::print_log_samples("webhook", &f.webhook_log_samples);
    f.outcome.print();
}
