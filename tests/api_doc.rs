//! The API reference `docs/api.md` stays true to the code. Its conventions, which these tests
//! read:
//!
//! - Fields are rows of the table under `### <Kind> fields (<version>)`, one per field, the
//!   first cell its path in backticks: `spec.scopes`, `status.tokens[].keyId` (`.` between the
//!   fields of an object, `[]` for the items of a list). Those rows name exactly the properties
//!   of that version's schema in `crds/keyward.io.yaml`, under `spec` and `status`.
//! - Flags are rows of the table under `` ### `keyward <subcommand>` ``, the first cell the flag
//!   in backticks (`--max-expiry DURATION`), the row holding its environment variable and its
//!   default in backticks. They name exactly the flags `keyward <subcommand> --help` lists.
//! - Verifier codes, condition reasons and event reasons are the first cells of the tables under
//!   `### Answer codes`, `## Phases and conditions` and `## Events`.

use std::collections::BTreeSet;
use std::process::Command;

use keyward::api::{self, reason};
use keyward::judge::Code;
use serde::Deserialize;
use serde_json::Value;

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md");
const CRDS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/keyward.io.yaml");

/// A part of the document: a heading of level 1 to 3 and the lines up to the next one.
struct Section {
    heading: String,
    lines: Vec<String>,
}

impl Section {
    /// The rows of its tables, split into trimmed cells; separator rows left out.
    fn rows(&self) -> Vec<Vec<String>> {
        self.lines
            .iter()
            .filter(|line| line.starts_with('|'))
            .map(|line| {
                line.trim().trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect::<Vec<_>>()
            })
            .filter(|cells| !cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')))
            .collect()
    }

    /// Rows whose first cell starts with a backticked text, keyed by that text.
    fn keyed_rows(&self) -> Vec<(String, Vec<String>)> {
        self.rows().into_iter().filter_map(|cells| Some((code_in(cells.first()?)?, cells))).collect()
    }
}

/// The backticked text a cell starts with: "`spec.scopes`" gives "spec.scopes".
fn code_in(cell: &str) -> Option<String> {
    let rest = cell.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_string())
}

fn doc() -> Vec<Section> {
    let text = std::fs::read_to_string(DOC_PATH).expect("docs/api.md");
    let mut sections = vec![Section { heading: String::new(), lines: Vec::new() }];
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if !fenced && (1..=3).contains(&level) && line[level..].starts_with(' ') {
            sections.push(Section { heading: line.to_string(), lines: Vec::new() });
        } else if let Some(section) = sections.last_mut() {
            section.lines.push(line.to_string());
        }
    }
    sections
}

fn section<'a>(sections: &'a [Section], heading: &str) -> Option<&'a Section> {
    sections.iter().find(|s| s.heading == heading)
}

#[track_caller]
fn no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Every property path below `schema`, which sits at `path`.
fn property_paths(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            out.insert(child_path.clone());
            property_paths(child, &child_path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        property_paths(items, &format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        property_paths(values, &format!("{path}{{}}"), out);
    }
}

fn crds() -> Vec<Value> {
    let text = std::fs::read_to_string(CRDS_PATH).expect("crds/keyward.io.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("a YAML document"))
        .filter(|crd| !crd.is_null())
        .collect()
}

#[test]
fn the_field_tables_name_exactly_the_fields_of_every_crd_version() {
    let sections = doc();
    let mut problems = Vec::new();
    let mut headings = BTreeSet::new();
    let crds = crds();
    assert_eq!(crds.len(), 3, "expected the ApiKey, Credential and KeyUsage CRDs in crds/keyward.io.yaml");
    for crd in &crds {
        let kind = crd["spec"]["names"]["kind"].as_str().expect("spec.names.kind");
        for version in crd["spec"]["versions"].as_array().expect("spec.versions") {
            let name = version["name"].as_str().expect("a version name");
            let heading = format!("### {kind} fields ({name})");
            headings.insert(heading.clone());
            let root = &version["schema"]["openAPIV3Schema"]["properties"];
            let mut fields = BTreeSet::new();
            for top in ["spec", "status"] {
                property_paths(&root[top], top, &mut fields);
            }
            assert!(fields.len() > 10, "{kind} {name}: the schema reads as nearly empty: {fields:?}");
            let Some(section) = section(&sections, &heading) else {
                problems.push(format!("no section `{heading}` for {kind} {name}"));
                continue;
            };
            let mut documented = BTreeSet::new();
            for (path, _) in section.keyed_rows() {
                if !documented.insert(path.clone()) {
                    problems.push(format!("{kind} {name}: `{path}` has two rows"));
                }
            }
            for missing in fields.difference(&documented) {
                problems.push(format!("{kind} {name}: `{missing}` is in the schema but has no row"));
            }
            for stale in documented.difference(&fields) {
                problems.push(format!("{kind} {name}: `{stale}` has a row but is not in the schema"));
            }
        }
    }
    for stale in sections.iter().filter(|s| s.heading.starts_with("### ") && s.heading.contains(" fields (")) {
        if !headings.contains(&stale.heading) {
            problems.push(format!("`{}` names no kind and version of crds/keyward.io.yaml", stale.heading));
        }
    }
    no_problems("docs/api.md and crds/keyward.io.yaml disagree", &problems);
}

/// Every answer code (`Code::ALL`, which a unit test of the judge keeps complete).
fn every_code() -> Vec<Code> {
    Code::ALL.to_vec()
}

#[test]
fn every_answer_code_has_a_row_with_its_forward_auth_status() {
    let sections = doc();
    let codes = section(&sections, "### Answer codes").expect("a section `### Answer codes`");
    let rows = codes.keyed_rows();
    let mut problems = Vec::new();
    for code in every_code().iter().map(|c| c.as_str()) {
        match rows.iter().find(|(name, _)| name == code) {
            None => problems.push(format!("`{code}` has no row")),
            Some((_, cells)) => {
                let status = cells.last().map(|c| c.trim_matches('`')).unwrap_or_default();
                if !["200", "401", "403"].contains(&status) {
                    problems.push(format!("`{code}`: its /v1/auth status reads {status:?}"));
                }
            }
        }
    }
    let known: Vec<&str> = every_code().iter().map(|c| c.as_str()).collect();
    for (name, _) in &rows {
        if !known.contains(&name.as_str()) {
            problems.push(format!("`{name}` has a row but is no answer code"));
        }
    }
    no_problems("the answer codes of docs/api.md are not the verifier's", &problems);
}

#[test]
fn every_condition_reason_and_event_reason_has_a_row() {
    let sections = doc();
    let mut problems = Vec::new();
    let conditions = [reason::ISSUED, reason::INACTIVE, reason::EXPIRED, reason::SECRET_CONFLICT, reason::INVALID_SPEC];
    let table = |heading: &str| -> Vec<String> {
        let found = section(&sections, heading).unwrap_or_else(|| panic!("a section `{heading}`"));
        found.keyed_rows().into_iter().map(|(name, _)| name).collect()
    };
    let documented = table("## Phases and conditions");
    for reason in conditions.iter().chain([&reason::PENDING]) {
        if !documented.iter().any(|d| d == reason) {
            problems.push(format!("condition reason `{reason}` has no row under `## Phases and conditions`"));
        }
    }
    let documented = table("## Events");
    for reason in conditions.iter().chain([&reason::TOKEN_REISSUED]) {
        if !documented.iter().any(|d| d == reason) {
            problems.push(format!("event reason `{reason}` has no row under `## Events`"));
        }
    }
    let text = std::fs::read_to_string(DOC_PATH).expect("docs/api.md");
    if !text.contains(&format!("`{}`", api::CONDITION_READY)) {
        problems.push(format!("the condition type `{}` is not named", api::CONDITION_READY));
    }
    no_problems("docs/api.md misses reasons", &problems);
}

#[test]
fn the_secret_layout_names_every_label_annotation_and_the_type() {
    let sections = doc();
    let secret = section(&sections, "## The token Secret").expect("a section `## The token Secret`");
    let text = secret.lines.join("\n");
    let names = [
        api::SECRET_TYPE,
        api::LABEL_MANAGED_BY,
        api::MANAGED_BY_VALUE,
        api::LABEL_OWNER_UID,
        api::ANNOTATION_TOKEN_HASH,
        api::ANNOTATION_KEY_ID,
        api::ANNOTATION_ISSUED_AT,
        api::ANNOTATION_EXPIRES_AT,
        api::ANNOTATION_OWNER,
        api::ANNOTATION_TEMPLATE_KEYS,
    ];
    let missing: Vec<String> =
        names.iter().filter(|name| !text.contains(&format!("`{name}`"))).map(|name| format!("`{name}`")).collect();
    no_problems("`## The token Secret` does not name", &missing);
    assert!(text.contains(&format!("`data.{}`", api::SECRET_TOKEN_KEY)), "the token's data key is not named");
}

#[test]
fn the_forward_auth_section_names_every_header() {
    let sections = doc();
    let auth = section(&sections, "### `GET /v1/auth`").expect("a section ### `GET /v1/auth`");
    let text = auth.lines.join("\n");
    let headers = [
        "Authorization: Bearer",
        "X-Api-Key",
        "ApiKey",
        "X-Forwarded-For",
        "X-Keyward-App",
        "X-Keyward-Key",
        "X-Keyward-Key-Id",
        "X-Keyward-Scopes",
        "X-Keyward-Code",
        "WWW-Authenticate: Bearer",
    ];
    let missing: Vec<String> =
        headers.iter().filter(|h| !text.contains(&format!("`{h}"))).map(|h| format!("`{h}`")).collect();
    no_problems("the `/v1/auth` section does not name the headers", &missing);
}

/// One option of a `--help` text: `--listen`, its environment variable and its default.
#[derive(Debug)]
struct HelpFlag {
    flag: String,
    env: Option<String>,
    default: Option<String>,
}

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_keyward")).args(args).output().expect("run keyward");
    assert!(output.status.success(), "keyward {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The text in `[label: ...]` up to the first space, comma or `]`: `[default: 90d]` gives `90d`.
fn bracketed(text: &str, label: &str) -> Option<String> {
    let start = text.find(&format!("[{label}: "))? + label.len() + 3;
    let value: String = text[start..].chars().take_while(|c| !matches!(c, ' ' | ',' | ']' | '=')).collect();
    Some(value).filter(|v| !v.is_empty())
}

/// The options `keyward <subcommand> --help` lists, without `--help` itself.
fn help_flags(subcommand: &str) -> Vec<HelpFlag> {
    let text = help(&[subcommand, "--help"]);
    let mut options: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') && line.starts_with("  ") {
            let flag = trimmed.split([' ', ',']).map(str::trim).find(|word| word.starts_with("--"));
            if let Some(flag) = flag {
                options.push((flag.to_string(), String::new()));
                continue;
            }
        }
        if let Some((_, help)) = options.last_mut() {
            help.push_str(line);
            help.push(' ');
        }
    }
    options
        .into_iter()
        .filter(|(flag, _)| flag != "--help" && flag != "--version")
        .map(|(flag, help)| HelpFlag { env: bracketed(&help, "env"), default: bracketed(&help, "default"), flag })
        .collect()
}

fn subcommands() -> Vec<String> {
    let text = help(&["--help"]);
    let listed = text.split_once("Commands:").expect("a Commands: list").1;
    listed
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_flag_of_every_subcommand_has_a_row_with_its_environment_variable_and_default() {
    let sections = doc();
    let mut problems = Vec::new();
    let subcommands = subcommands();
    for expected in ["controller", "verifier", "crd"] {
        assert!(subcommands.iter().any(|s| s == expected), "keyward --help lists no {expected}: {subcommands:?}");
    }
    for subcommand in &subcommands {
        let heading = format!("### `keyward {subcommand}`");
        let Some(section) = section(&sections, &heading) else {
            problems.push(format!("no section {heading}"));
            continue;
        };
        let rows: Vec<(String, Vec<String>)> = section
            .keyed_rows()
            .into_iter()
            .filter_map(|(code, cells)| Some((code.split_whitespace().next()?.to_string(), cells)))
            .filter(|(flag, _)| flag.starts_with("--"))
            .collect();
        let flags = help_flags(subcommand);
        if subcommand != "crd" {
            assert!(!flags.is_empty(), "no flags read from `keyward {subcommand} --help`");
        }
        for flag in &flags {
            let Some((_, cells)) = rows.iter().find(|(documented, _)| *documented == flag.flag) else {
                problems.push(format!("keyward {subcommand} {}: no row", flag.flag));
                continue;
            };
            let row = cells.join(" | ");
            for (what, value) in [("environment variable", &flag.env), ("default", &flag.default)] {
                if let Some(value) = value
                    && !row.contains(&format!("`{value}`"))
                {
                    problems.push(format!(
                        "keyward {subcommand} {}: the row does not give its {what} `{value}`",
                        flag.flag
                    ));
                }
            }
        }
        for (documented, _) in &rows {
            if !flags.iter().any(|f| f.flag == *documented) {
                problems.push(format!("keyward {subcommand} {documented}: a row, but no such flag in --help"));
            }
        }
    }
    no_problems("docs/api.md and `keyward --help` disagree", &problems);
}

#[test]
fn the_readme_links_the_reference_and_not_a_file_outside_the_repository() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    assert!(readme.contains("(docs/api.md)"), "README.md does not link docs/api.md");
    assert!(!readme.contains("../shared/"), "README.md points outside the repository");
}
