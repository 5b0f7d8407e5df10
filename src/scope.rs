//! Scopes: dot-separated segments of `[A-Za-z0-9_-]`; in a granted scope `*` matches exactly
//! one segment and a final `>` one or more trailing segments.

/// Checks a granted scope (wildcards allowed) and says what is wrong with it.
pub fn validate_granted(scope: &str) -> Result<(), String> {
    let segments: Vec<&str> = scope.split('.').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "" => {
                return Err("empty segment (scopes are dot-separated names such as orders.read)".into());
            }
            "*" => {}
            ">" if i == last && i > 0 => {}
            ">" => {
                return Err("'>' is only allowed as the last segment after at least one other".into());
            }
            s if is_plain_segment(s) => {}
            _ => {
                return Err("segments may only hold A-Z, a-z, 0-9, '_' and '-', or be '*' or a final '>'".into());
            }
        }
    }
    Ok(())
}

/// Checks a required scope (no wildcards).
pub fn validate_required(scope: &str) -> Result<(), String> {
    // Asked for every scope of every request: one pass over the bytes, a dot never first, last
    // or after another (no segment empty).
    let mut previous = b'.';
    let plain = scope.bytes().all(|b| {
        let fits = match b {
            b'.' => previous != b'.',
            _ => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
        };
        previous = b;
        fits
    });
    if plain && previous != b'.' {
        Ok(())
    } else {
        Err("required scopes are dot-separated segments of A-Z, a-z, 0-9, '_' and '-'".into())
    }
}

fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Does `granted` (which may hold wildcards) cover `required`?
pub fn grants(granted: &str, required: &str) -> bool {
    // Every scope covers itself, as the walk finds segment by segment (a test holds it to
    // that): the usual case, a key granting exactly what a route requires, needs no split.
    granted == required || covers(granted, required)
}

/// [`grants`], segment by segment.
fn covers(granted: &str, required: &str) -> bool {
    let mut want = required.split('.');
    let mut have = granted.split('.').peekable();
    while let Some(g) = have.next() {
        if g == ">" && have.peek().is_none() {
            return want.next().is_some();
        }
        match want.next() {
            Some(w) if g == "*" || g == w => {}
            _ => return false,
        }
    }
    want.next().is_none()
}

/// Does any scope in `granted` cover every scope in `required`?
pub fn grants_all<G: AsRef<str>, R: AsRef<str>>(granted: &[G], required: &[R]) -> bool {
    required.iter().all(|r| granted.iter().any(|g| grants(g.as_ref(), r.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(grants("orders.*", "orders.read"));
        assert!(!grants("orders.*", "orders.read.all"));
        assert!(!grants("orders.*", "orders"));
        assert!(grants("*.read", "orders.read"));
    }

    #[test]
    fn final_gt_matches_one_or_more_trailing_segments() {
        assert!(grants("deploy.>", "deploy.prod.write"));
        assert!(grants("deploy.>", "deploy.prod"));
        assert!(!grants("deploy.>", "deploy"));
        assert!(!grants("deploy.>", "orders.read"));
    }

    #[test]
    fn plain_scopes_match_exactly() {
        assert!(grants("orders.read", "orders.read"));
        assert!(!grants("orders.read", "orders.readx"));
        assert!(!grants("orders.read", "orders.read.all"));
        assert!(!grants("orders.read.all", "orders.read"));
    }

    #[test]
    fn every_scope_covers_itself_as_its_segments_do() {
        for scope in ["orders.read", "deploy.>", "orders.*", "*", "*.read", "a_b-c.D9", ">", "", ".", "a..b", "a.>.b"] {
            assert!(covers(scope, scope), "{scope}");
        }
    }

    #[test]
    fn every_required_scope_needs_a_grant() {
        assert!(grants_all(&["orders.read", "deploy.>"], &["orders.read", "deploy.prod.write"]));
        assert!(!grants_all(&["orders.read"], &["orders.read", "orders.write"]));
        assert!(grants_all::<&str, &str>(&[], &[]));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        for ok in ["orders.read", "deploy.>", "orders.*", "*", "a_b-c.D9"] {
            assert_eq!(validate_granted(ok), Ok(()), "{ok}");
        }
        for bad in ["", "orders.", ".read", "orders..read", ">", "a.>.b", "orders read", "ordérs", "a.b>"] {
            assert!(validate_granted(bad).is_err(), "{bad:?} should be refused");
        }
        for ok in ["orders.read", "a_b-c.D9", "x"] {
            assert_eq!(validate_required(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "orders.", ".read", "orders..read", ">", "orders.*", "deploy.>", "orders read", "ordérs"]
        {
            assert!(validate_required(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
