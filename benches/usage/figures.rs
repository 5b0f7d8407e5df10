//! What the usage bench measures, and the table it prints.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Settings;
use super::flushes::{Flush, Phase, count_verb};
use super::wrk::WrkRun;
use crate::common::report::{print_counts, show};
use crate::common::{Outcome, Table, median};

/// Every figure the bench measures; `None` or empty for what it did not get to.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub settings: Option<Settings>,
    /// `wrk`'s version line.
    pub wrk: Option<String>,
    /// Seconds to create the ApiKeys of part 1 and of parts 2 and 3, with their status.
    pub create_keys_secs: Option<f64>,
    pub create_many_keys_secs: Option<f64>,

    /// Part 1: `/v1/auth` on the verifier recording usage and on the one not recording.
    pub recording_on: Option<LoadFigures>,
    pub recording_off: Option<LoadFigures>,
    /// On over off, medians: req/s (goal >= 0.9) and p99 (goal <= 1.2).
    pub throughput_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    /// The recording verifier's flushes and writes by result from the first round to the last
    /// (with the load before its rounds and the flushes awaited after them).
    pub flushes_during_rounds: Option<u64>,
    pub writes_during_rounds: BTreeMap<String, u64>,
    /// The first key's KeyUsage after the rounds.
    pub part1_usage: Option<UsageSample>,

    /// Part 2: the paced load on the verifier not recording (for its RSS) and on the recording one.
    pub paced_off: Option<WrkRun>,
    pub paced_on: Option<WrkRun>,
    /// Every flush seen from the start of the paced load until the recorder had nothing left.
    pub flushes: Vec<Flush>,
    pub creation: Option<Creation>,
    pub steady: Option<Steady>,
    /// Over all those flushes (exact: from nothing written to nothing left).
    pub totals: Option<Totals>,

    /// Part 3: the verifiers' memory over the 10,000 keys.
    pub memory_off: Option<Memory>,
    pub memory_on: Option<Memory>,
    /// The recording verifier's once it had written everything, and after the flood of
    /// application names on one key.
    pub memory_drained: Option<Memory>,
    pub memory_after_flood: Option<Memory>,
    /// Requests of the flood, and that key's KeyUsage once the flood was flushed.
    pub flood_requests: Option<u64>,
    pub flood_usage: Option<UsageSample>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// VmRSS and VmHWM of a verifier.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// What one KeyUsage holds.
#[derive(Debug, Serialize)]
pub struct UsageSample {
    pub name: String,
    pub last_used_at: Option<String>,
    pub applications: usize,
    /// The first few applications' names.
    pub first_applications: Vec<String>,
    pub applications_overflow: i64,
}

/// One side of part 1 over the rounds.
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
    /// The control plane's CPU seconds (kube-apiserver and etcd) during each round: it shares
    /// the cores.
    pub control_plane_cpu_secs: Vec<f64>,
    /// Seconds the verifier's threads waited for a core during each round, and their median.
    pub runqueue_wait_secs: Vec<f64>,
    pub median_runqueue_wait_secs: Option<f64>,
    pub rounds: Vec<WrkRun>,
}

impl LoadFigures {
    pub fn of(
        connections: usize,
        threads: usize,
        rounds: Vec<WrkRun>,
        control_plane_cpu_secs: Vec<f64>,
        runqueue_wait_secs: Vec<f64>,
    ) -> Self {
        let of = |f: fn(&WrkRun) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        Self {
            connections,
            threads,
            rps: of(|r| r.rps),
            p50_ms: of(|r| r.p50_ms),
            p99_ms: of(|r| r.p99_ms),
            cpu_us_per_request: median(&rounds.iter().filter_map(|r| r.server_cpu_us_per_request).collect::<Vec<_>>()),
            control_plane_cpu_secs,
            median_runqueue_wait_secs: median(&runqueue_wait_secs),
            runqueue_wait_secs,
            rounds,
        }
    }
}

/// The flushes that created the KeyUsages, together.
#[derive(Debug, Serialize)]
pub struct Creation {
    pub flushes: usize,
    /// Their writing time, added up.
    pub writing_secs: f64,
    /// The verifier's writes by result.
    pub writes: BTreeMap<String, u64>,
    /// The API server's requests on keyusages.
    pub apiserver: BTreeMap<String, u64>,
    /// Of those, per key of the namespace: the GET that finds none, the create, the status
    /// write (this one as counted at the flush's end).
    pub reads_per_key: f64,
    pub creates_per_key: f64,
    pub status_writes_per_key: f64,
}

/// The flushes after the KeyUsages were created.
#[derive(Debug, Serialize)]
pub struct Steady {
    pub intervals: usize,
    /// The API server's writes on keyusages in each, per key of the namespace, as counted at
    /// each flush's end (see [`Flush`]).
    pub writes_per_key: Vec<f64>,
    /// Keys each flush took (the recorder's gauge), and the VALID answers per second before it.
    pub keys_touched: Vec<u64>,
    pub rps: Vec<f64>,
    /// Seconds from one flush's end to the next's, and of each one's writing.
    pub secs_between: Vec<f64>,
    pub writing_secs: Vec<f64>,
    /// The control plane's (kube-apiserver and etcd) and the verifier's CPU seconds per interval.
    pub control_plane_cpu_secs: Vec<f64>,
    pub verifier_cpu_secs: Vec<f64>,
}

/// Every flush from the start of the paced load until the recorder had nothing left: exact,
/// whatever flush a write was counted in.
#[derive(Debug, Serialize)]
pub struct Totals {
    /// Flushes that wrote, and the keys they took, added up.
    pub flushes: usize,
    pub keys_touched: u64,
    /// The verifier's writes by result, and the API server's requests on keyusages.
    pub writes: BTreeMap<String, u64>,
    pub apiserver: BTreeMap<String, u64>,
    /// KeyUsages created per key of the namespace (goal: 1).
    pub creates_per_key: f64,
    /// Status writes per key a flush took (goal at most 1: one per key per flush per replica).
    pub status_writes_per_key_per_flush: f64,
    /// The same per key and per `--usage-flush-interval` of time: below 1 when flushes take
    /// longer than the interval.
    pub status_writes_per_key_per_interval: f64,
    /// The verifier's count of writes sent (created, patched, conflict) and the API server's
    /// (POST and PATCH).
    pub verifier_writes: u64,
    pub apiserver_writes: u64,
    /// Writes the API server refused as conflicts (409), and the verifier's conflicts and
    /// failed, deferred or refused flushes of a key.
    pub apiserver_conflicts: u64,
    pub conflicts: u64,
    pub failed: u64,
    /// The control plane's CPU milliseconds per write, by process.
    pub control_plane_cpu_ms_per_write: BTreeMap<String, f64>,
    /// The verifier's CPU milliseconds per write once the load stopped (the drain flushes: its
    /// writes, next to nothing else).
    pub verifier_cpu_ms_per_write_unloaded: Option<f64>,
}

impl Totals {
    pub fn of(flushes: &[Flush], keys: usize, interval_secs: f64) -> Option<Self> {
        let wrote: Vec<&Flush> = flushes.iter().filter(|f| !f.writes.is_empty()).collect();
        if wrote.is_empty() {
            return None;
        }
        let (mut writes, mut apiserver, mut cpu) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for flush in flushes {
            add(&mut writes, &flush.writes);
            add(&mut apiserver, &flush.apiserver);
            for (name, secs) in &flush.control_plane_cpu_secs {
                *cpu.entry(name.clone()).or_insert(0.0) += secs;
            }
        }
        let keys_touched: u64 = wrote.iter().map(|f| f.keys_touched).sum();
        let status_writes = count_verb(&apiserver, "PATCH") as f64;
        // From the end of the flush before the first that wrote to the end of the last.
        let first = flushes.iter().position(|f| !f.writes.is_empty()).unwrap_or(0);
        let secs: f64 = flushes[first..].iter().map(|f| f.secs_since_previous).sum();
        let apiserver_writes = count_verb(&apiserver, "POST") + count_verb(&apiserver, "PATCH");
        let result = |results: &[&str]| results.iter().map(|r| writes.get(*r).copied().unwrap_or(0)).sum();
        let drain: Vec<&Flush> = flushes.iter().filter(|f| f.phase == Phase::Drain).collect();
        let drain_writes: u64 = drain.iter().map(|f| f.apiserver_writes()).sum();
        let drain_cpu: f64 = drain.iter().map(|f| f.verifier_cpu_secs).sum();
        Some(Self {
            flushes: wrote.len(),
            keys_touched,
            creates_per_key: count_verb(&apiserver, "POST") as f64 / keys as f64,
            status_writes_per_key_per_flush: status_writes / keys_touched.max(1) as f64,
            status_writes_per_key_per_interval: status_writes / (keys as f64 * secs / interval_secs),
            verifier_writes: result(&["created", "patched", "conflict"]),
            apiserver_writes,
            apiserver_conflicts: apiserver.iter().filter(|(s, _)| s.ends_with(" 409")).map(|(_, n)| n).sum(),
            conflicts: result(&["conflict"]),
            failed: result(&["failed", "deferred", "refused"]),
            control_plane_cpu_ms_per_write: cpu
                .into_iter()
                .map(|(name, secs)| (name, secs * 1000.0 / apiserver_writes.max(1) as f64))
                .collect(),
            verifier_cpu_ms_per_write_unloaded: (drain_writes > 0).then(|| drain_cpu * 1000.0 / drain_writes as f64),
            writes,
            apiserver,
        })
    }
}

impl Creation {
    pub fn of(flushes: &[Flush], keys: usize) -> Option<Self> {
        let creating: Vec<&Flush> = flushes.iter().filter(|f| f.phase == Phase::Creating).collect();
        if creating.is_empty() {
            return None;
        }
        let mut writes = BTreeMap::new();
        let mut apiserver = BTreeMap::new();
        for flush in &creating {
            add(&mut writes, &flush.writes);
            add(&mut apiserver, &flush.apiserver);
        }
        let per_key =
            |verbs: &[&str]| verbs.iter().map(|v| count_verb(&apiserver, v)).sum::<u64>() as f64 / keys as f64;
        Some(Self {
            flushes: creating.len(),
            writing_secs: creating.iter().filter_map(|f| f.writing_secs).sum(),
            // A GET of one object that is not there: this API server counts some as LIST.
            reads_per_key: per_key(&["GET", "LIST"]),
            creates_per_key: per_key(&["POST"]),
            status_writes_per_key: per_key(&["PATCH"]),
            writes,
            apiserver,
        })
    }
}

impl Steady {
    pub fn of(flushes: &[Flush], keys: usize) -> Option<Self> {
        let steady: Vec<&Flush> = flushes.iter().filter(|f| f.phase == Phase::Steady).collect();
        if steady.is_empty() {
            return None;
        }
        let each = |f: fn(&Flush) -> f64| steady.iter().map(|flush| f(flush)).collect::<Vec<_>>();
        Some(Self {
            intervals: steady.len(),
            writes_per_key: steady.iter().map(|f| f.apiserver_writes() as f64 / keys as f64).collect(),
            keys_touched: steady.iter().map(|f| f.keys_touched).collect(),
            rps: each(|f| f.rps),
            secs_between: each(|f| f.secs_since_previous),
            writing_secs: each(|f| f.writing_secs.unwrap_or(0.0)),
            control_plane_cpu_secs: each(|f| f.control_plane_cpu_secs.values().sum()),
            verifier_cpu_secs: each(|f| f.verifier_cpu_secs),
        })
    }
}

fn add(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

/// The figures as a table with the goals, on stdout.
pub fn print_table(f: &Figures) {
    let Some(settings) = &f.settings else { return };
    let title = format!(
        "keyward usage bench: part 1 {} keys, wrk -t{} -c{} {} s x {} rounds, on and off taking turns; parts 2-3 {} \
         keys; {}",
        settings.keys,
        settings.threads,
        settings.connections,
        settings.secs,
        settings.rounds,
        settings.many_keys,
        f.wrk.as_deref().unwrap_or("wrk"),
    );
    let mut table = Table::new(title);
    let ms = |v: f64| format!("{v:.3} ms");
    let cpu = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} us"));
    let memory = |m: &Option<Memory>| match m {
        Some(m) => format!("{} / {}", show::mib(Some(m.rss_mib)), show::mib(Some(m.peak_rss_mib))),
        None => "-".into(),
    };
    let rounds = settings.rounds;
    table.row(format!("create {} ApiKeys (+ status)", settings.keys), show::secs(f.create_keys_secs, 1));
    let sides = [
        (format!("recording off (flush {})", super::OFF), &f.recording_off),
        (
            match &f.settings {
                Some(s) => format!("recording on (flush {}, res {})", s.on_flush, s.on_resolution),
                None => "recording on".to_string(),
            },
            &f.recording_on,
        ),
    ];
    for (name, load) in &sides {
        let Some(load) = load else { continue };
        table.row(format!("{name}: req/s (median of {rounds})"), format!("{:.0}", load.rps));
        table.row(format!("{name}: p50 / p99"), format!("{} / {}", ms(load.p50_ms), ms(load.p99_ms)));
        table.row(format!("{name}: verifier CPU per request"), cpu(load.cpu_us_per_request));
        table.row(
            format!("{name}: control plane CPU per round"),
            format!("{} s", show::each(&load.control_plane_cpu_secs, 2)),
        );
        table.row(
            format!("{name}: verifier's wait for a core per round"),
            format!("{} s", show::each(&load.runqueue_wait_secs, 2)),
        );
    }
    table.goal("on / off: req/s", show::num(f.throughput_ratio, 2), ">= 0.90", f.throughput_ratio.map(|r| r >= 0.9));
    table.goal("on / off: p99", show::num(f.p99_ratio, 2), "<= 1.20", f.p99_ratio.map(|r| r <= 1.2));
    if let (Some(on), Some(off)) = (&f.recording_on, &f.recording_off) {
        let ratio = on.cpu_us_per_request.zip(off.cpu_us_per_request).map(|(on, off)| on / off);
        table.row("on / off: verifier CPU per request", show::num(ratio, 2));
    }
    let written = |r: &str| f.writes_during_rounds.get(r).copied().unwrap_or(0);
    table.row(
        "recorder from the first round to the last",
        format!("{} flushes, {} status writes", show::count(f.flushes_during_rounds), written("patched")),
    );

    table.row(format!("create {} ApiKeys (+ status)", settings.many_keys), show::secs(f.create_many_keys_secs, 1));
    if let Some(paced) = &f.paced_on {
        table.row(format!("paced load ({} tokens in turn)", settings.many_keys), format!("{:.0} req/s", paced.rps));
    }
    if let Some(c) = &f.creation {
        let n = |k: &str| c.writes.get(k).copied().unwrap_or(0);
        table.row(
            format!("first flush{}: KeyUsages created", if c.flushes > 1 { "es" } else { "" }),
            format!("{} in {:.1} s", n("created"), c.writing_secs),
        );
        table.row(
            "first flush: requests per key, GET / create / status",
            format!("{:.2} / {:.2} / {:.2}", c.reads_per_key, c.creates_per_key, c.status_writes_per_key),
        );
    }
    if let Some(s) = &f.steady {
        table.row(
            format!("then, API writes per key, each of {} flushes", s.intervals),
            show::each(&s.writes_per_key, 3),
        );
        let touched: Vec<f64> = s.keys_touched.iter().map(|&k| k as f64).collect();
        table.row("then, keys touched per flush", show::each(&touched, 0));
        table.row("then, s between flushes", show::each(&s.secs_between, 1));
        table.row("then, s writing each flush", show::each(&s.writing_secs, 1));
        table.row("then, control plane CPU s per flush", show::each(&s.control_plane_cpu_secs, 1));
    }
    if let Some(t) = &f.totals {
        table.goal(
            format!("whole run ({} flushes): creates per key", t.flushes),
            format!("{:.3}", t.creates_per_key),
            "<= 1",
            Some(t.creates_per_key <= 1.0),
        );
        table.goal(
            "whole run: status writes per key per flush",
            format!("{:.3}", t.status_writes_per_key_per_flush),
            "<= 1",
            Some(t.status_writes_per_key_per_flush <= 1.0),
        );
        table.row(
            format!("whole run: status writes per key per {}", super::FLUSH),
            format!("{:.3}", t.status_writes_per_key_per_interval),
        );
        table.row(
            "whole run: writes, verifier's count / API server's",
            format!("{} / {}", t.verifier_writes, t.apiserver_writes),
        );
        table.row(
            "whole run: conflicts (409) / failed or deferred",
            format!("{} / {}", t.apiserver_conflicts.max(t.conflicts), t.failed),
        );
        let per_write: Vec<String> =
            t.control_plane_cpu_ms_per_write.iter().map(|(name, ms)| format!("{name} {ms:.2}")).collect();
        table.row("control plane CPU ms per write", per_write.join(", "));
        table.row("verifier CPU ms per write (after the load)", show::num(t.verifier_cpu_ms_per_write_unloaded, 2));
    }

    table.row(format!("RSS / peak, {} keys, recording off", settings.many_keys), memory(&f.memory_off));
    table.row(format!("RSS / peak, {} keys, recording on, flushing", settings.many_keys), memory(&f.memory_on));
    table.row(format!("RSS / peak, {} keys, recording on, all written", settings.many_keys), memory(&f.memory_drained));
    for (when, on) in [("flushing", f.memory_on), ("all written", f.memory_drained)] {
        if let (Some(on), Some(off)) = (on, f.memory_off) {
            table.row(format!("RSS growth, on ({when}) - off"), show::mib(Some(on.rss_mib - off.rss_mib)));
        }
    }
    table.row(
        format!("RSS / peak after {} application names on one key", settings.flood_apps),
        memory(&f.memory_after_flood),
    );
    if let Some(u) = &f.flood_usage {
        table.row(
            "that key's KeyUsage: applications / overflow",
            format!("{} / {}", u.applications, u.applications_overflow),
        );
    }
    table.row("whole run", show::secs(f.outcome.total_secs, 1));
    table.print();

    if sides.iter().any(|(_, l)| l.is_some()) {
        println!("\npart 1 rounds, req/s (p50/p99 ms, verifier CPU us/request, control plane CPU s):");
        for (name, load) in &sides {
            let Some(load) = load else { continue };
            let each: Vec<String> = load
                .rounds
                .iter()
                .zip(&load.control_plane_cpu_secs)
                .map(|(r, cp)| {
                    let cpu = r.server_cpu_us_per_request.unwrap_or(f64::NAN);
                    format!("{:.0} ({:.3}/{:.3}, {cpu:.1}, {cp:.2})", r.rps, r.p50_ms, r.p99_ms)
                })
                .collect();
            println!("  {name:<33} {}", each.join(", "));
        }
    }
    print_counts("part 1, the recorder's writes from the first round to the last", &f.writes_during_rounds);
    if !f.flushes.is_empty() {
        println!(
            "\npart 2 flushes (s since the last, s writing, keys touched, VALID/s, control plane CPU s, API server \
             requests on keyusages); a write may be counted a flush early when flushes run back to back:"
        );
        for flush in &f.flushes {
            println!(
                "  {:>3} {:<8} {:>6.1} {:>6} {:>7} {:>7.0} {:>6.1}  {:?}",
                flush.number,
                format!("{:?}", flush.phase),
                flush.secs_since_previous,
                flush.writing_secs.map_or("-".into(), |s| format!("{s:.1}")),
                flush.keys_touched,
                flush.rps,
                flush.control_plane_cpu_secs.values().sum::<f64>(),
                flush.apiserver,
            );
        }
    }
    if let Some(t) = &f.totals {
        print_counts("part 2, the verifier's writes by result over the whole run", &t.writes);
        print_counts("part 2, the API server's requests on keyusages over the whole run", &t.apiserver);
    }
    f.outcome.print();
}
