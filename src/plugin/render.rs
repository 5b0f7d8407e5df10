//! How `kubectl apikey` prints: kubectl's tables and short ages, and `-o json|yaml` documents
//! without `managedFields`, as `kubectl get` shows them.

use std::io::Write;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::error::{PluginError, Result};

/// `-o`: a machine-readable document instead of text.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML on stdout, serialized straight from its type.
pub fn print_document<T: Serialize>(value: &T, format: Format) -> Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value).map(|s| s + "\n").map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| e.to_string()),
    }
    .map_err(|e| PluginError::Other(format!("cannot serialize: {e}")))?;
    print_stdout(&text)
}

/// An object as `kubectl get -o yaml` shows it: without `metadata.managedFields`.
pub fn shown<K: kube::Resource>(mut object: K) -> K {
    object.meta_mut().managed_fields = None;
    object
}

/// A kubectl `List`, as `kubectl get -o json` prints several objects.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct List<'a, T> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    items: &'a [T],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: &'static str,
}

impl<'a, T> List<'a, T> {
    pub fn of(items: &'a [T]) -> Self {
        List { api_version: "v1", kind: "List", metadata: ListMeta { resource_version: "" }, items }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly instead of panicking.
pub fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(PluginError::Other(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Columns aligned as kubectl aligns them: upper-case headers, three spaces between columns.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { rows: vec![headers.iter().map(|h| h.to_string()).collect()] }
    }

    /// Whether there are rows besides the headers.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut writer = tabwriter::TabWriter::new(Vec::new()).padding(3);
        for row in &self.rows {
            // A tab or newline inside a cell would break the columns.
            let cells: Vec<String> = row.iter().map(|c| c.replace(['\t', '\n', '\r'], " ")).collect();
            let _ = writeln!(writer, "{}", cells.join("\t"));
        }
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn print(&self) -> Result<()> {
        print_stdout(&self.render())
    }
}

/// A duration as kubectl prints ages: two significant units at most (`45s`, `5m30s`, `95m`,
/// `5h30m`, `30h`, `5d3h`, `200d`, `3y20d`).
pub fn short(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    // Clocks a second apart still read as now.
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    let with = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 { format!("{big}{big_unit}") } else { format!("{big}{big_unit}{small}{small_unit}") }
    };
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 => with(minutes, "m", seconds % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(days, "d", hours % 24, "h"),
        _ if days < 365 * 2 => format!("{days}d"),
        _ if days < 365 * 8 => with(days / 365, "y", days % 365, "d"),
        _ => format!("{}y", days / 365),
    }
}

/// How long ago `then` was, kubectl style; `<unknown>` when absent.
pub fn age(then: Option<Timestamp>, now: Timestamp) -> String {
    then.map_or_else(|| "<unknown>".into(), |then| short(now.duration_since(then)))
}

/// How long until `at`: `29d` (see [`time_left`]), or `expired` once it has passed; `-` when
/// unknown.
pub fn expires_in(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        None => "-".into(),
        Some(at) if at <= now => "expired".into(),
        Some(at) => time_left(at.duration_since(now)),
    }
}

/// The resolution of [`short`], tier by tier: below `.0` seconds, it shows `.1` seconds (a test
/// holds the two together).
const STEPS: [(i64, i64); 9] = [
    (120, 1),                   // 119s
    (10 * 60, 1),               // 5m30s
    (180 * 60, 60),             // 95m
    (8 * 3600, 60),             // 5h30m
    (48 * 3600, 3600),          // 30h
    (8 * 86_400, 3600),         // 5d3h
    (2 * 365 * 86_400, 86_400), // 200d
    (8 * 365 * 86_400, 86_400), // 3y20d
    (i64::MAX, 365 * 86_400),   // 10y
];

/// Time left, as [`short`] prints it but rounded up to the last unit shown, so that it never
/// reads as less than it is: a 30-day key made seconds ago has `30d` left, not `29d`, in
/// `create`, `list`, `describe` and `verify` alike (ages, which kubectl truncates, are not).
pub fn time_left(left: SignedDuration) -> String {
    let seconds = left.as_secs().max(0) + i64::from(left.subsec_nanos() > 0);
    let step = STEPS.iter().find(|(below, _)| seconds < *below).map_or(1, |(_, step)| *step);
    let rounded = seconds.saturating_add(step - 1) / step * step;
    short(SignedDuration::from_secs(rounded))
}

/// A timestamp with how far it is from now: `2026-12-22T10:00:00Z (in 30d)`, `(3d ago)`.
pub fn when(at: Timestamp, now: Timestamp) -> String {
    if at > now {
        format!("{at} (in {})", time_left(at.duration_since(now)))
    } else {
        format!("{at} ({} ago)", short(now.duration_since(at)))
    }
}

/// A list for one cell: comma-separated, `<none>` when empty, as kubectl shows empty values.
pub fn joined<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() { "<none>".into() } else { items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (0, "0s"),
            (-1, "0s"),
            (-5, "<invalid>"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (95 * 60, "95m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (30 * 3600, "30h"),
            (5 * 86_400 + 3 * 3600, "5d3h"),
            (7 * 86_400, "7d"),
            (30 * 86_400, "30d"),
            (800 * 86_400, "2y70d"),
            (10 * 365 * 86_400, "10y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(short(secs(seconds)), want, "{seconds} s");
        }
    }

    #[test]
    fn expiry_reads_as_time_left_or_expired() {
        let now: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
        assert_eq!(expires_in(Some("2026-12-23T00:00:00Z".parse().unwrap()), now), "30d");
        assert_eq!(expires_in(Some(now), now), "expired");
        let a_moment_later = now + SignedDuration::from_millis(400);
        assert_eq!(expires_in(Some("2026-12-23T00:00:00Z".parse().unwrap()), a_moment_later), "30d");
        assert_eq!(expires_in(None, now), "-");
        assert_eq!(when("2026-11-20T00:00:00Z".parse().unwrap(), now), "2026-11-20T00:00:00Z (3d ago)");
    }

    #[test]
    fn time_left_is_rounded_up_to_the_last_unit_shown() {
        let cases = [
            (30 * 86_400 - 5, "30d"),
            (30 * 86_400, "30d"),
            (29 * 86_400 + 1, "30d"),
            (29 * 86_400, "29d"),
            (5 * 86_400 + 2 * 3600 + 1, "5d3h"),
            (47 * 3600 + 1, "2d"),
            (179 * 60 + 1, "3h"),
            (95 * 60 - 30, "95m"),
            (330, "5m30s"),
            (119, "119s"),
            (10 * 365 * 86_400 + 1, "11y"),
            (0, "0s"),
        ];
        for (seconds, want) in cases {
            assert_eq!(time_left(secs(seconds)), want, "{seconds} s");
        }
        assert_eq!(time_left(SignedDuration::from_millis(29 * 86_400_000 + 1)), "30d", "a part of a second");
    }

    #[test]
    fn the_steps_are_the_resolution_short_shows() {
        let mut from = 0;
        for (below, step) in STEPS {
            let below = below.min(20 * 365 * 86_400);
            for x in [from, from + step, from + step + step / 2, below - 1] {
                assert_eq!(short(secs(x)), short(secs(x - x % step)), "{x} s shows finer than {step} s");
            }
            let next = from + step;
            assert_ne!(short(secs(next)), short(secs(next - 1)), "{next} s shows coarser than {step} s");
            from = below;
        }
    }

    #[test]
    fn create_list_and_describe_read_the_same_time_left() {
        let now: Timestamp = "2026-11-23T00:00:05Z".parse().unwrap();
        let at: Timestamp = "2026-12-23T00:00:00Z".parse().unwrap();
        assert_eq!(expires_in(Some(at), now), "30d");
        assert_eq!(when(at, now), "2026-12-23T00:00:00Z (in 30d)");
    }

    #[test]
    fn tables_align_columns_three_spaces_apart() {
        let mut table = Table::new(&["NAME", "PHASE"]);
        table.row(vec!["ci-deploy".into(), "Active".into()]);
        table.row(vec!["a\tb".into(), "Expired".into()]);
        assert_eq!(table.render(), "NAME        PHASE\nci-deploy   Active\na b         Expired\n");
    }

    #[test]
    fn documents_leave_out_managed_fields_and_lists_read_as_kubectl_prints_them() {
        let mut key: crate::api::ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]}, "spec": {},
        }))
        .unwrap();
        key = shown(key);
        let items = [key];
        let list = serde_json::to_value(List::of(&items)).unwrap();
        assert_eq!(
            list,
            serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [
                {"apiVersion": "keyward.io/v1alpha1", "kind": "ApiKey", "metadata": {"name": "a"}, "spec": {}},
            ]})
        );
    }

    #[test]
    fn empty_lists_show_none() {
        assert_eq!(joined::<&str>(&[]), "<none>");
        assert_eq!(joined(&["a", "b.>"]), "a,b.>");
    }
}
