//! Checked-in manifests stay true to the code: `crds/` is what `keyward crd` prints, and every
//! file in `examples/` parses into the typed resources.

use keyward::api::validate::{self, ExpiryPolicy};
use keyward::api::{ApiKey, Credential};
use serde::Deserialize;

#[test]
fn crds_directory_matches_keyward_crd_output() {
    let generated = keyward::crd::yaml().expect("CRD YAML");
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/keyward.io.yaml"))
        .expect("crds/keyward.io.yaml");
    assert!(generated == checked_in, "crds/ is stale: run `make crds` and commit the result");
}

/// Every `default` anywhere in a JSON value, by path.
fn defaults(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, child) in fields {
                // A property named `default` (spec.applications.default) is a field, not a default.
                if name == "default" && !path.ends_with(".properties") {
                    found.push(path.to_string());
                }
                defaults(child, &format!("{path}.{name}"), found);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| defaults(item, path, found)),
        _ => {}
    }
}

#[test]
fn the_crd_schemas_declare_no_defaults_so_the_api_server_never_adds_to_spec() {
    let mut found = Vec::new();
    for crd in keyward::crd::all() {
        let schema = serde_json::to_value(&crd.spec.versions).expect("json");
        defaults(&schema, &crd.spec.names.kind, &mut found);
    }
    assert!(found.is_empty(), "schema defaults the API server would write into stored objects: {found:?}");
}

#[test]
fn the_crd_binary_subcommand_prints_the_same_crds() {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_keyward")).arg("crd").output().expect("run keyward crd");
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).expect("utf-8"), keyward::crd::yaml().expect("CRD YAML"));
}

#[test]
fn every_example_parses_into_typed_resources_and_passes_validation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut parsed = 0;
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
            match kind.as_str() {
                "ApiKey" => {
                    let key: ApiKey =
                        serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let created = "2026-11-22T10:00:00Z".parse().expect("timestamp");
                    validate::api_key(&key, created, &ExpiryPolicy::default())
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                "Credential" => {
                    let credential: Credential =
                        serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let created = "2026-11-22T10:00:00Z".parse().expect("timestamp");
                    validate::credential(&credential, created, &ExpiryPolicy::default())
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            }
            parsed += 1;
        }
    }
    assert!(parsed >= 4, "expected at least four example resources, found {parsed}");
}
