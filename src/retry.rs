//! How long to wait before asking the API server again: short and bounded, with jitter, so that
//! after an outage of any length every watch and every failed reconcile is back within a few
//! seconds of the API server answering, without all of them arriving in the same instant.

use std::time::Duration;

use backon::BackoffBuilder;
use kube::runtime::utils::Backoff;

/// The first wait after a failure.
const FIRST: Duration = Duration::from_millis(200);
/// The longest wait before jitter (which adds up to as much again): a watch that failed for an
/// hour tries again at most 2 s apart.
const LONGEST: Duration = Duration::from_secs(1);

/// A client from the usual configuration (`KUBECONFIG`, `~/.kube/config`, in-cluster) whose
/// requests are not retried inside the client. kube's own retry obeys a 503's `Retry-After`,
/// which an API server that is still starting sends as 10 s: every watch then waited that long
/// after the server was ready. The watches and reconciles retry on their own terms instead.
pub async fn client() -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// Backoff of every watch: 0.2 s doubling to 1 s, each wait plus up to 100% jitter, never
/// giving up. kube's default grows to 30 s (60 s with jitter), which kept a verifier serving a
/// deleted key for 45 s after the API server came back.
pub struct WatchBackoff {
    builder: backon::ExponentialBuilder,
    current: backon::ExponentialBackoff,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(FIRST)
            .with_max_delay(LONGEST)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self { current: builder.build(), builder }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.current.next()
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

/// Transient failures in a row retried as a watch is; past them, an outage that long is no
/// longer a restart, and the wait grows like any other failure's.
const QUICK_RETRIES: u32 = 10;

/// The wait before retrying a reconcile after its `failures`-th failure in a row. A transient
/// failure (the API server unreachable or restarting) is retried as a watch is, within 2 s,
/// the first [`QUICK_RETRIES`] times; any other (a refusal that will likely hold, an overloaded
/// API server) backs off from 1 s to 256 s. Jitter adds up to as much again; `jitter` is a
/// number in `[0, 1)`.
pub fn reconcile_delay(failures: u32, transient: bool, jitter: f64) -> Duration {
    let step = failures.saturating_sub(1);
    let base = if transient && failures <= QUICK_RETRIES {
        (FIRST * 2u32.pow(step.min(3))).min(LONGEST)
    } else {
        Duration::from_secs(1u64 << step.min(8))
    };
    base + base.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_waits_are_bounded_with_jitter_and_start_again_after_a_reset() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<Duration> = backoff.by_ref().take(50).collect();
        assert_eq!(waits.len(), 50, "a watch never gives up");
        assert!(waits.iter().all(|w| *w >= FIRST && *w <= 2 * LONGEST), "{waits:?}");
        assert!(waits[40..].iter().all(|w| *w >= LONGEST), "the waits grow to the longest: {waits:?}");
        backoff.reset();
        assert!(backoff.next().is_some_and(|w| w < 2 * FIRST + Duration::from_millis(1)), "a reset starts over");
    }

    #[test]
    fn transient_reconcile_failures_retry_within_two_seconds_for_a_while_others_back_off_for_minutes() {
        assert_eq!(reconcile_delay(1, true, 0.0), FIRST);
        assert_eq!(reconcile_delay(QUICK_RETRIES, true, 0.0), LONGEST);
        assert_eq!(reconcile_delay(QUICK_RETRIES, true, 0.999), LONGEST + LONGEST.mul_f64(0.999));
        assert_eq!(reconcile_delay(QUICK_RETRIES + 1, true, 0.0), Duration::from_secs(256), "a long outage");
        assert_eq!(reconcile_delay(1, false, 0.0), Duration::from_secs(1));
        assert_eq!(reconcile_delay(3, false, 0.0), Duration::from_secs(4));
        assert_eq!(reconcile_delay(100, false, 0.0), Duration::from_secs(256));
        assert_eq!(reconcile_delay(100, false, 1.5), Duration::from_secs(512), "jitter at most doubles");
    }
}
