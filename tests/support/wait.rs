//! Waiting for a condition, never for a fixed time: every wait has a deadline and says, when
//! it runs out, what it waited for and what it saw last.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use kube::Api;
use kube::runtime::wait::await_condition;

/// The usual deadline for something the controller does on a change.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often [`wait_for`] looks again.
pub const POLL: Duration = Duration::from_millis(50);

/// What one look of a [`wait_for`] check found: done with a value, or not yet, with what it saw.
pub trait Outcome {
    type Value;
    fn done(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".into())
    }
}

/// `Err` is "not yet", and its text is what the failure message shows as last seen.
impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Runs `check` every [`POLL`] until it is done (`true`, `Some`, `Ok`), and returns its value;
/// fails the test naming `what` and the last thing seen once `within` has passed, including
/// when a check itself is still running then.
pub async fn wait_for<O, Fut>(what: impl Display, within: Duration, check: impl FnMut() -> Fut) -> O::Value
where
    O: Outcome,
    Fut: Future<Output = O>,
{
    wait_for_every(what, within, POLL, check).await
}

/// [`wait_for`], looking every `every` (for waits that measure how long something took).
pub async fn wait_for_every<O, Fut>(
    what: impl Display,
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Fut,
) -> O::Value
where
    O: Outcome,
    Fut: Future<Output = O>,
{
    let until = tokio::time::Instant::now() + within;
    loop {
        let seen = match tokio::time::timeout_at(until, check()).await {
            Ok(outcome) => match outcome.done() {
                Ok(value) => return value,
                Err(seen) => seen,
            },
            Err(_) => "a check still running at the deadline".into(),
        };
        if tokio::time::Instant::now() >= until {
            panic!("{what}: not within {within:?}; last seen: {seen}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Watches the named object until `condition` holds for it (`None`: it does not exist), or fails
/// at [`DEADLINE`] naming `what` and showing `describe` of the object as it is then (`describe`
/// must not print a Secret's data).
pub async fn wait_object<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
    describe: impl Fn(Option<&K>) -> String,
) -> Option<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let found = tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, condition)).await;
    match found {
        Ok(Ok(object)) => object,
        Ok(Err(error)) => panic!("watching {} {name}: {error}", K::kind(&())),
        Err(_) => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!("{} {name} did not reach {what} within {DEADLINE:?}; now: {}", K::kind(&()), describe(now.as_ref()))
        }
    }
}
