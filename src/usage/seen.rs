//! What one verifier replica saw of one key between two flushes, and how it merges into the
//! KeyUsage status the API server holds. Pure: times come in already truncated to the
//! resolution, and nothing here reads a clock.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::usage::MAX_APPLICATIONS;
use crate::api::{AppState, AppUsage, KeyUsageStatus, TokenUsage};

/// One application's sightings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSeen {
    pub name: Box<str>,
    pub state: AppState,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// What was seen of one key since the last flush. Bounded whatever clients send: at most
/// [`MAX_APPLICATIONS`] applications (sightings of more are only counted) and the key's own
/// Credential tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The last VALID answer.
    pub last_used: Option<Timestamp>,
    /// Each Credential token's last VALID answer.
    pub tokens: Vec<(Box<str>, Timestamp)>,
    pub apps: Vec<AppSeen>,
    /// Sightings of applications left out because [`MAX_APPLICATIONS`] were already here.
    pub overflow: i64,
}

/// One request's part in a key's usage.
#[derive(Clone, Copy, Debug)]
pub struct Sighting<'a> {
    /// The request was answered VALID.
    pub valid: bool,
    /// The Credential token presented; `None` for an ApiKey.
    pub token: Option<&'a str>,
    /// The application it named, with the verdict on it.
    pub app: Option<(&'a str, AppState)>,
    /// When, truncated to the resolution.
    pub at: Timestamp,
}

impl Seen {
    /// Adds one sighting.
    pub fn add(&mut self, sighting: Sighting<'_>) {
        let at = sighting.at;
        if sighting.valid {
            self.last_used = self.last_used.max(Some(at));
            if let Some(token) = sighting.token {
                match self.tokens.iter_mut().find(|(name, _)| **name == *token) {
                    Some((_, last)) => *last = (*last).max(at),
                    None => self.tokens.push((token.into(), at)),
                }
            }
        }
        if let Some((name, state)) = sighting.app {
            // Found without allocating: the name is copied only for an application new here.
            match self.apps.iter_mut().find(|seen| *seen.name == *name) {
                Some(seen) => {
                    // Sightings come in order: the later one's verdict stands.
                    seen.state = state;
                    seen.first = seen.first.min(at);
                    seen.last = seen.last.max(at);
                }
                None => self.add_new(AppSeen { name: name.into(), state, first: at, last: at }),
            }
        }
    }

    /// Lists an application not listed yet; when [`MAX_APPLICATIONS`] are, it takes the place
    /// of the one seen longest ago (so a burst of names once cannot keep a later new one out),
    /// and the one left out is counted.
    fn add_new(&mut self, app: AppSeen) {
        if self.apps.len() < MAX_APPLICATIONS {
            self.apps.push(app);
            return;
        }
        self.overflow = self.overflow.saturating_add(1);
        if let Some(oldest) = self.apps.iter_mut().min_by_key(|seen| seen.last)
            && oldest.last < app.last
        {
            *oldest = app;
        }
    }

    /// Takes in what an earlier take saw (a flush that failed gives its part back): what was
    /// seen since is newer, and its verdicts stand.
    pub fn absorb(&mut self, earlier: Seen) {
        self.last_used = self.last_used.max(earlier.last_used);
        for (token, at) in earlier.tokens {
            match self.tokens.iter_mut().find(|(name, _)| *name == token) {
                Some((_, last)) => *last = (*last).max(at),
                None => self.tokens.push((token, at)),
            }
        }
        for app in earlier.apps {
            match self.apps.iter_mut().find(|seen| seen.name == app.name) {
                Some(seen) => {
                    if app.last > seen.last {
                        seen.state = app.state;
                    }
                    seen.first = seen.first.min(app.first);
                    seen.last = seen.last.max(app.last);
                }
                None => self.add_new(app),
            }
        }
        self.overflow = self.overflow.saturating_add(earlier.overflow);
    }
}

/// `current` with `seen` merged in, or `None` when that changes nothing (so nothing is written).
///
/// Times only move forward (first sightings only back). An application's state is the one of
/// its later sighting; in the same resolution step the new sighting's (what this replica saw
/// last, after what it read). When [`MAX_APPLICATIONS`] are listed, a new application takes the
/// place of the one seen longest ago if it was seen later, and the one left out is counted in
/// `applicationsOverflow`.
pub fn merge(current: Option<&KeyUsageStatus>, seen: &Seen) -> Option<KeyUsageStatus> {
    let mut merged = current.cloned().unwrap_or_default();
    let later = |known: &Option<Time>, at: Timestamp| known.as_ref().is_none_or(|t| t.0 < at);
    if let Some(at) = seen.last_used
        && later(&merged.last_used_at, at)
    {
        merged.last_used_at = Some(Time(at));
    }
    for (name, at) in &seen.tokens {
        match merged.tokens.iter_mut().find(|t| *t.name == **name) {
            Some(known) if known.last_used_at.0 < *at => known.last_used_at = Time(*at),
            Some(_) => {}
            None => merged.tokens.push(TokenUsage { name: name.to_string(), last_used_at: Time(*at) }),
        }
    }
    for app in &seen.apps {
        let usage = || AppUsage {
            name: app.name.to_string(),
            state: app.state,
            first_seen_at: Time(app.first),
            last_seen_at: Time(app.last),
        };
        let applications = &mut merged.applications;
        if let Some(known) = applications.iter_mut().find(|known| *known.name == *app.name) {
            if app.last >= known.last_seen_at.0 {
                known.state = app.state;
            }
            known.last_seen_at = Time(known.last_seen_at.0.max(app.last));
            known.first_seen_at = Time(known.first_seen_at.0.min(app.first));
        } else if applications.len() < MAX_APPLICATIONS {
            applications.push(usage());
        } else {
            merged.applications_overflow = merged.applications_overflow.saturating_add(1);
            if let Some(oldest) = applications.iter_mut().min_by_key(|known| known.last_seen_at.0)
                && oldest.last_seen_at.0 < app.last
            {
                *oldest = usage();
            }
        }
    }
    merged.applications_overflow = merged.applications_overflow.saturating_add(seen.overflow);
    merged.application_count = i64::try_from(merged.applications.len()).unwrap_or(i64::MAX);
    merged.tokens.sort_by(|a, b| a.name.cmp(&b.name));
    (current.is_none_or(|current| *current != merged)).then_some(merged)
}

/// `now` truncated to whole steps of `resolution` seconds (at least 1) since the epoch.
pub fn truncate(now: Timestamp, resolution: i64) -> Timestamp {
    let step = resolution.max(1);
    let second = now.as_second().div_euclid(step) * step;
    Timestamp::from_second(second).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn valid(at: &str) -> Sighting<'static> {
        Sighting { valid: true, token: None, app: None, at: ts(at) }
    }

    fn app(name: &'static str, state: AppState, valid: bool, at: &str) -> Sighting<'static> {
        Sighting { valid, token: None, app: Some((name, state)), at: ts(at) }
    }

    const T1: &str = "2026-12-01T10:05:00Z";
    const T2: &str = "2026-12-01T10:06:00Z";

    #[test]
    fn truncation_is_to_whole_steps_of_the_resolution() {
        assert_eq!(truncate(ts("2026-12-01T10:05:59.999Z"), 60), ts(T1));
        assert_eq!(truncate(ts(T1), 60), ts(T1));
        assert_eq!(truncate(ts("2026-12-01T10:05:07.5Z"), 1), ts("2026-12-01T10:05:07Z"));
        assert_eq!(truncate(ts("2026-12-01T10:59:00Z"), 3600), ts("2026-12-01T10:00:00Z"));
    }

    #[test]
    fn last_use_moves_only_on_valid_answers_and_only_forward() {
        let mut seen = Seen::default();
        seen.add(app("report", AppState::Pending, false, T2));
        assert_eq!(seen.last_used, None, "a refused request is no use");
        seen.add(valid(T2));
        seen.add(valid(T1));
        assert_eq!(seen.last_used, Some(ts(T2)));

        let current = merge(None, &seen).expect("new");
        assert_eq!(current.last_used_at, Some(Time(ts(T2))));
        // What another replica saw earlier moves nothing, and so writes nothing.
        let earlier = Seen { last_used: Some(ts(T1)), ..Default::default() };
        assert_eq!(merge(Some(&current), &earlier), None);
        assert_eq!(merge(Some(&current), &seen), None, "the same step again: no write");
        let later = Seen { last_used: Some(ts("2026-12-01T10:07:00Z")), ..Default::default() };
        assert_eq!(merge(Some(&current), &later).unwrap().last_used_at, Some(Time(ts("2026-12-01T10:07:00Z"))));
    }

    #[test]
    fn credential_tokens_have_their_own_last_use() {
        let mut seen = Seen::default();
        seen.add(Sighting { valid: true, token: Some("secondary"), app: None, at: ts(T1) });
        seen.add(Sighting { valid: true, token: Some("primary"), app: None, at: ts(T2) });
        seen.add(Sighting { valid: false, token: Some("primary"), app: None, at: ts("2026-12-01T10:09:00Z") });
        let merged = merge(None, &seen).unwrap();
        let tokens: Vec<(&str, Timestamp)> =
            merged.tokens.iter().map(|t| (t.name.as_str(), t.last_used_at.0)).collect();
        assert_eq!(tokens, [("primary", ts(T2)), ("secondary", ts(T1))]);
        assert_eq!(merged.last_used_at, Some(Time(ts(T2))));
    }

    #[test]
    fn applications_keep_their_first_and_last_sighting_and_the_last_state() {
        let mut seen = Seen::default();
        seen.add(app("report", AppState::Pending, false, T1));
        seen.add(app("report", AppState::Allowed, true, T2));
        assert_eq!(
            seen.apps,
            [AppSeen { name: "report".into(), state: AppState::Allowed, first: ts(T1), last: ts(T2) }]
        );
        // Denied, then allowed again within one step: the last verdict stands.
        seen.add(app("report", AppState::Denied, false, T2));
        seen.add(app("report", AppState::Allowed, true, T2));
        assert_eq!(seen.apps[0].state, AppState::Allowed);

        let current = merge(None, &seen).unwrap();
        // Another replica's later sighting wins; its earlier first sighting too.
        let mut other = Seen::default();
        other.add(app("report", AppState::Denied, false, "2026-12-01T10:07:00Z"));
        other.add(app("report", AppState::Denied, false, "2026-12-01T10:04:00Z"));
        let merged = merge(Some(&current), &other).unwrap();
        let report = &merged.applications[0];
        assert_eq!(
            (report.state, report.first_seen_at.0, report.last_seen_at.0),
            (AppState::Denied, ts("2026-12-01T10:04:00Z"), ts("2026-12-01T10:07:00Z"))
        );
        // In one step, what this replica saw after it read stands (the policy changed since).
        let mut tie = Seen::default();
        tie.add(app("report", AppState::Pending, false, T2));
        assert_eq!(merge(Some(&current), &tie).unwrap().applications[0].state, AppState::Pending);
        let mut same = Seen::default();
        same.add(app("report", AppState::Denied, false, "2026-12-01T10:07:00Z"));
        assert_eq!(merge(Some(&merged), &same), None, "nothing new: no write");
    }

    #[test]
    fn a_full_list_makes_room_for_a_later_application_in_place_of_the_one_seen_longest_ago() {
        let mut seen = Seen::default();
        let names: Vec<String> = (0..64).map(|i| format!("junk-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let at = if i == 7 { "2026-12-01T10:00:00Z" } else { T1 };
            seen.add(Sighting { valid: true, token: None, app: Some((name, AppState::Pending)), at: ts(at) });
        }
        let full = merge(None, &seen).unwrap();
        let mut later = Seen::default();
        later.add(app("real", AppState::Pending, false, T2));
        let merged = merge(Some(&full), &later).unwrap();
        assert_eq!(merged.applications.len(), 64);
        assert!(merged.applications.iter().any(|a| a.name == "real"), "the new application is listed");
        assert!(!merged.applications.iter().any(|a| a.name == "junk-7"), "in place of the one seen longest ago");
        assert_eq!((merged.applications_overflow, merged.application_count), (1, 64));
        // In memory too.
        seen.add(app("real", AppState::Pending, false, T2));
        assert!(seen.apps.iter().any(|a| &*a.name == "real") && seen.apps.len() == 64);
        assert_eq!(seen.overflow, 1);
    }

    #[test]
    fn a_flood_of_names_keeps_64_and_counts_the_rest() {
        let mut seen = Seen::default();
        let names: Vec<String> = (0..10_000).map(|i| format!("app-{i}")).collect();
        for name in &names {
            seen.add(Sighting { valid: true, token: None, app: Some((name, AppState::Allowed)), at: ts(T1) });
        }
        assert_eq!((seen.apps.len(), seen.overflow), (MAX_APPLICATIONS, 10_000 - MAX_APPLICATIONS as i64));
        let merged = merge(None, &seen).unwrap();
        assert_eq!((merged.applications.len(), merged.applications_overflow), (64, 9_936));

        // Merging another replica's 64 others into a full list: only counted.
        let mut other = Seen::default();
        for name in &names[5_000..5_064] {
            other.add(Sighting { valid: true, token: None, app: Some((name, AppState::Allowed)), at: ts(T1) });
        }
        let again = merge(Some(&merged), &other).unwrap();
        assert_eq!((again.applications.len(), again.applications_overflow), (64, 9_936 + 64));
        assert_eq!(again.applications, merged.applications);
    }

    #[test]
    fn a_failed_flush_gives_its_part_back() {
        let mut now = Seen::default();
        now.add(app("b", AppState::Pending, false, T2));
        let mut failed = Seen::default();
        failed.add(valid(T1));
        failed.add(app("a", AppState::Allowed, true, T1));
        failed.add(Sighting { valid: true, token: Some("primary"), app: None, at: ts(T1) });
        failed.overflow = 3;
        now.absorb(failed);
        assert_eq!(now.last_used, Some(ts(T1)));
        assert_eq!(now.tokens, [("primary".into(), ts(T1))]);
        assert_eq!(now.apps.iter().map(|a| &*a.name).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(now.overflow, 3);
    }
}
