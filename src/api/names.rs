//! Kubernetes name syntax: DNS labels and subdomains (object names), and label and annotation
//! keys and values.

/// A DNS-1123 label of at most `max` characters.
pub fn dns_label(name: &str, max: usize) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("must be a DNS label: lowercase letters, digits and '-', at most {max} characters"))
    }
}

/// A DNS-1123 subdomain, as Kubernetes requires of object names.
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err("must be a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters".into())
    }
}

/// A label or annotation key: an optional DNS-subdomain prefix and '/', then a name.
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|p| format!("key prefix {p}"))?;
    }
    if name.is_empty() || name.len() > 63 || !label_chars(name) {
        return Err("keys are an optional DNS prefix and '/', then at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending alphanumeric".into());
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the label alphabet.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && label_chars(value)) {
        Ok(())
    } else {
        Err("label values are at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending alphanumeric".into())
    }
}

fn label_chars(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Most characters in an application name.
pub const MAX_APP_NAME: usize = 63;

/// An application name (`X-Keyward-App`, field `app`): 1 to 63 characters of `[A-Za-z0-9._-]`,
/// starting with a letter or digit.
pub fn app_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_APP_NAME
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b));
    if !ok {
        return Err(format!(
            "application names are 1 to {MAX_APP_NAME} characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ));
    }
    // A token pasted in the wrong place would be kept in a KeyUsage and an access token.
    if crate::token::check(name).is_ok() {
        return Err("this is a Keyward token, not an application name: send the token as the token".into());
    }
    Ok(())
}

#[cfg(test)]
mod app_name_tests {
    use super::app_name;

    #[test]
    fn application_names_follow_the_contract() {
        for ok in ["billing-worker", "a", "9.x_y-z", &"a".repeat(63)] {
            assert_eq!(app_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "ä", "a/b", &"a".repeat(64)] {
            assert!(app_name(bad).is_err(), "{bad:?}");
        }
        let token = crate::token::Token::generate("kw");
        let refused = app_name(token.expose()).unwrap_err();
        assert!(refused.contains("is a Keyward token") && !refused.contains(token.expose()), "{refused}");
        // Token-shaped but failing its checksum: a name (the verifier judges it, never stores a token).
        assert_eq!(app_name("kw_notatokenbecausethechecksumfails000"), Ok(()));
    }
}
