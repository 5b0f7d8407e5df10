//! Asks the API server whether a user may grant a scope: one SubjectAccessReview per covering
//! name (narrowest first, stopping at the first allowed), each answer cached for at most
//! [`CACHE_FOR`] so that a burst of creates by one identity costs a handful of reviews.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

use super::grant::covering_names;
use super::metrics::WebhookMetrics;
use crate::error::Result;

/// How long an answer is believed: a revoked grant takes effect within this time.
pub const CACHE_FOR: Duration = Duration::from_secs(10);
/// Answers kept at most; past it, expired ones are dropped, and if none is, all are.
const CACHE_SIZE: usize = 10_000;

/// One question: may this user `grant` this scope name in this namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Question {
    user: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
    namespace: String,
    name: String,
}

pub struct Access {
    client: kube::Client,
    answers: Mutex<HashMap<Question, (Instant, bool)>>,
}

impl Access {
    pub fn new(client: kube::Client) -> Self {
        Self { client, answers: Mutex::default() }
    }

    /// Whether `user` may grant `scope` in `namespace`.
    pub async fn may_grant(
        &self,
        user: &UserInfo,
        namespace: &str,
        scope: &str,
        metrics: &WebhookMetrics,
    ) -> Result<bool> {
        for name in covering_names(scope) {
            let question = Question {
                user: user.username.clone().unwrap_or_default(),
                uid: user.uid.clone().unwrap_or_default(),
                groups: user.groups.clone().unwrap_or_default(),
                extra: user.extra.clone().unwrap_or_default(),
                namespace: namespace.to_string(),
                name,
            };
            if self.allowed(question, metrics).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn allowed(&self, question: Question, metrics: &WebhookMetrics) -> Result<bool> {
        if let Some(allowed) = self.cached(&question) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(question.user.clone()),
                uid: Some(question.uid.clone()).filter(|uid| !uid.is_empty()),
                groups: Some(question.groups.clone()),
                extra: Some(question.extra.clone()).filter(|extra| !extra.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(crate::api::GROUP.into()),
                    resource: Some("scopes".into()),
                    verb: Some("grant".into()),
                    namespace: Some(question.namespace.clone()),
                    name: Some(question.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let started = Instant::now();
        let answer = Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &review).await;
        metrics.observe_review(started.elapsed());
        let allowed = answer?.status.is_some_and(|status| status.allowed);
        // Believed from when it was asked, so that no answer outlives CACHE_FOR.
        self.remember(question, allowed, started);
        Ok(allowed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Question, (Instant, bool)>> {
        self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, question: &Question) -> Option<bool> {
        let answers = self.lock();
        answers.get(question).filter(|(at, _)| at.elapsed() < CACHE_FOR).map(|(_, allowed)| *allowed)
    }

    fn remember(&self, question: Question, allowed: bool, asked: Instant) {
        let mut answers = self.lock();
        if answers.len() >= CACHE_SIZE {
            answers.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            if answers.len() >= CACHE_SIZE {
                answers.clear();
            }
        }
        answers.insert(question, (asked, allowed));
    }
}
