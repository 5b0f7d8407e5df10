//! The statuses a bench writes itself where it measures without the controller (the issue
//! bench's baseline, the verifier bench's keys), as the controller writes them.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keyward::api::{CONDITION_READY, reason};
use keyward::token::Token;
use kube::Resource;
use serde_json::{Value, json};

/// The status of an ApiKey whose token was issued to the Secret `secret_name`.
pub fn issued_apikey(
    token: &Token,
    secret_name: &str,
    generation: Option<i64>,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> Value {
    json!({
        "phase": "Active",
        "observedGeneration": generation,
        "keyId": token.key_id(),
        "tokenHash": token.hash().to_string(),
        "secretName": secret_name,
        "issuedAt": Time(issued_at),
        "expiresAt": Time(expires_at),
        "conditions": [issued_condition(format!("token issued to Secret {secret_name}"), generation, issued_at)],
    })
}

/// The Ready condition of an issued object.
pub fn issued_condition(message: String, generation: Option<i64>, now: Timestamp) -> Value {
    json!({
        "type": CONDITION_READY,
        "status": "True",
        "reason": reason::ISSUED,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": Time(now),
    })
}

/// The server-side apply patch of a status of kind `K`, as the controller sends it (forced,
/// with `PatchParams::apply(MANAGER).force()`).
pub fn apply_patch<K: Resource<DynamicType = ()>>(status: Value) -> Value {
    json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status})
}
