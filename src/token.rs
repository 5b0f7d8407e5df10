//! The API token format: generation, parsing, the public `keyId` and the
//! stored `tokenHash`.
//!
//! A token is `<prefix>_<body>`. The prefix matches `^[a-z][a-z0-9]{0,15}$`;
//! the body is 36 base62 characters (`0-9`, `A-Z`, `a-z`): 30 drawn uniformly
//! from the operating system's CSPRNG, then the CRC-32 (IEEE, as zlib computes
//! it) of those 30 characters written in base62, most significant digit first,
//! left-padded with `0` to 6 characters. The checksum lets clients and secret
//! scanners reject mistyped or truncated tokens without a round trip; it adds
//! no secrecy (the 30 random characters carry ~178 bits of entropy).
//!
//! Only this module sees a token in the clear: [`Token`] prints as
//! `[redacted]` and [`Token::expose`] is the single way to get the text.

use std::fmt;

use rand::TryRng;
use rand::rngs::{SysError, SysRng};
use sha2::{Digest as _, Sha256};

/// Prefix used when the resource does not name one.
pub const DEFAULT_PREFIX: &str = "kw";
/// Number of characters after the `_`.
pub const BODY_LEN: usize = 36;
/// Number of random characters at the start of the body.
pub const RANDOM_LEN: usize = 30;
/// Number of checksum characters at the end of the body.
pub const CHECKSUM_LEN: usize = 6;
/// Number of body characters that are part of the public `keyId`.
pub const KEY_ID_BODY_LEN: usize = 8;

/// Longest allowed prefix, in characters.
const MAX_PREFIX_LEN: usize = 16;
/// Prefix of every [`TokenHash`].
const HASH_SCHEME: &str = "sha256:";
/// Hex digits in a SHA-256 digest.
const HASH_HEX_LEN: usize = 64;

/// Base62 digits in ascending value: `0-9`, `A-Z`, `a-z`.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 248 = 4 * 62: a byte below it, taken modulo 62, is exactly uniform over
/// the alphabet. Bytes 248..=255 are rejected; without that, digits 0-7 would
/// come up 5/4 as often as the rest.
const ACCEPT_BELOW: u8 = 248;
/// Random bytes requested from the OS per draw. About 97% of bytes are
/// accepted, so 40 bytes nearly always yield the 30 characters in one system
/// call; the loop in [`Token::try_generate`] asks again in the rare case they
/// do not.
const POOL_LEN: usize = 40;

// The body layout is the random part followed by the checksum.
const _: () = assert!(RANDOM_LEN + CHECKSUM_LEN == BODY_LEN);
const _: () = assert!(KEY_ID_BODY_LEN <= RANDOM_LEN);
// 62^6 > 2^32, so every CRC-32 value fits in CHECKSUM_LEN base62 digits.
const _: () = assert!(62u64.pow(CHECKSUM_LEN as u32) > u32::MAX as u64);

/// Whether `prefix` matches `^[a-z][a-z0-9]{0,15}$`.
pub fn is_valid_prefix(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_PREFIX_LEN
                && first.is_ascii_lowercase()
                && rest.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// The base62 CRC-32 of `random_part`: `crc32fast::hash` (IEEE, same as
/// zlib's `crc32`) written most significant digit first, left-padded with
/// `'0'` to [`CHECKSUM_LEN`] ASCII characters.
pub fn checksum(random_part: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(random_part);
    let mut out = [ALPHABET[0]; CHECKSUM_LEN];
    // Fill from the least significant end; leftover positions keep the '0'.
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Checks a token's form without copying it: exactly one `_` separating a valid prefix from a
/// 36-character base62 body whose last 6 characters are the checksum of the first 30.
pub fn check(s: &str) -> Result<(), MalformedToken> {
    let (prefix, body) = s.split_once('_').ok_or(MalformedToken::Separator)?;
    if !is_valid_prefix(prefix) {
        return Err(MalformedToken::Prefix);
    }
    let body = body.as_bytes();
    if body.len() != BODY_LEN {
        return Err(MalformedToken::Length);
    }
    // A second '_' lands here too: it is not a base62 character.
    if !body.iter().all(|&b| is_base62(b)) {
        return Err(MalformedToken::Alphabet);
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    if checksum(random) != sum {
        return Err(MalformedToken::Checksum);
    }
    Ok(())
}

/// The raw SHA-256 of a token's text, for looking it up without holding a [`Token`].
pub fn digest_of(text: &str) -> Digest {
    Sha256::digest(text.as_bytes()).into()
}

/// A token in the clear.
///
/// `Debug` and `Display` print `[redacted]`, so a token caught in a log line,
/// an error or a panic message does not leak. It deliberately has no
/// `Serialize`, `Clone` or `PartialEq`: the only way to the text is
/// [`Token::expose`].
pub struct Token(String);

impl Token {
    /// Generates a fresh token with `prefix`.
    ///
    /// The caller guarantees `prefix` is valid (see [`is_valid_prefix`]);
    /// this is checked only by a `debug_assert!`, and in release builds an
    /// invalid prefix yields a token that [`Token::parse`] rejects.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails. There is no
    /// acceptable fallback source for a credential; use
    /// [`Token::try_generate`] to handle that error instead.
    pub fn generate(prefix: &str) -> Token {
        // A failing OS RNG leaves the host unable to issue any credential
        // safely; rand's own ThreadRng panics in the same situation.
        Self::try_generate(prefix).expect("the operating system's random number generator failed")
    }

    /// Like [`Token::generate`], but returns the OS RNG's error instead of
    /// panicking.
    pub fn try_generate(prefix: &str) -> Result<Token, SysError> {
        debug_assert!(is_valid_prefix(prefix), "Token::generate called with an invalid prefix");
        let mut random = [0u8; RANDOM_LEN];
        let mut filled = 0;
        let mut pool = [0u8; POOL_LEN];
        while filled < RANDOM_LEN {
            // One system call per pool rather than per byte: generation is
            // dominated by this call.
            SysRng.try_fill_bytes(&mut pool)?;
            for &b in pool.iter().filter(|&&b| b < ACCEPT_BELOW) {
                random[filled] = ALPHABET[usize::from(b % 62)];
                filled += 1;
                if filled == RANDOM_LEN {
                    break;
                }
            }
        }
        let sum = checksum(&random);

        let mut text = String::with_capacity(prefix.len() + 1 + BODY_LEN);
        text.push_str(prefix);
        text.push('_');
        text.extend(random.iter().chain(sum.iter()).map(|&b| char::from(b)));
        Ok(Token(text))
    }

    /// Parses and validates a token: exactly one `_` separating a valid
    /// prefix from a 36-character base62 body whose last 6 characters are
    /// the checksum of the first 30.
    pub fn parse(s: &str) -> Result<Token, MalformedToken> {
        check(s)?;
        Ok(Token(s.to_owned()))
    }

    /// The token in the clear. For writing the Secret handed to the client,
    /// and nothing else: never log it, put it in a status, an event or an
    /// error.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The prefix, without the `_`.
    pub fn prefix(&self) -> &str {
        self.parts().0
    }

    /// The public key id: `<prefix>_` followed by the first
    /// [`KEY_ID_BODY_LEN`] characters of the body. Safe to log and show.
    pub fn key_id(&self) -> String {
        let (prefix, body) = self.parts();
        // The body is ASCII, so a byte index is a character boundary.
        let head = body.get(..KEY_ID_BODY_LEN).unwrap_or(body);
        format!("{prefix}_{head}")
    }

    /// The `sha256:<hex>` of the whole token text.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.0.as_bytes())
    }

    /// The raw SHA-256 of the whole token text: what [`TokenHash::digest`] decodes.
    pub fn digest(&self) -> Digest {
        digest_of(&self.0)
    }

    fn parts(&self) -> (&str, &str) {
        // Every Token comes from generate or parse, both of which put
        // exactly one '_' in it, so the default is never used.
        self.0.split_once('_').unwrap_or_default()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `sha256:` followed by the lowercase hex SHA-256 of a token's text. This is
/// what the operator stores and compares; it is public and may be logged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes `token_text` (the whole token: prefix, `_` and body).
    pub fn of(token_text: &[u8]) -> TokenHash {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(token_text);
        let mut out = String::with_capacity(HASH_SCHEME.len() + HASH_HEX_LEN);
        out.push_str(HASH_SCHEME);
        for &b in digest.iter() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        TokenHash(out)
    }

    /// The `sha256:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 bytes the hex digits spell.
    pub fn digest(&self) -> Digest {
        let hex = &self.0.as_bytes()[HASH_SCHEME.len()..];
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        out
    }

    /// Accepts exactly `sha256:` followed by 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<TokenHash> {
        let hex = s.strip_prefix(HASH_SCHEME)?;
        let well_formed =
            hex.len() == HASH_HEX_LEN && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| TokenHash(s.to_owned()))
    }
}

/// A raw SHA-256 digest.
pub type Digest = [u8; 32];

/// The value of a lowercase hex digit; [`TokenHash::parse`] admits no other bytes.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a token. The messages never include the input, which
/// may be a real token with a typo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedToken {
    /// The part before the `_` does not match `^[a-z][a-z0-9]{0,15}$`.
    #[error("token prefix must be a lowercase letter followed by at most 15 lowercase letters or digits")]
    Prefix,
    /// There is no `_` between prefix and body.
    #[error("token has no '_' separating prefix and body")]
    Separator,
    /// The body is not exactly [`BODY_LEN`] bytes long.
    #[error("token body must be exactly 36 characters")]
    Length,
    /// The body contains a character outside `0-9`, `A-Z`, `a-z`.
    #[error("token body contains a character outside 0-9, A-Z, a-z")]
    Alphabet,
    /// The last 6 body characters are not the checksum of the first 30.
    #[error("token checksum does not match; the token was probably mistyped or truncated")]
    Checksum,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Random part "0123456789ABCDEFGHIJabcdefghij"; the checksum and the hash
    // were computed outside Rust:
    //   python3 -c 'import zlib; print(hex(zlib.crc32(b"0123456789ABCDEFGHIJabcdefghij")))'
    //     -> 0xf59cf7ae = "4Us3aw" in base62
    //   printf %s kw_0123456789ABCDEFGHIJabcdefghij4Us3aw | sha256sum
    const KNOWN_TOKEN: &str = "kw_0123456789ABCDEFGHIJabcdefghij4Us3aw";
    const KNOWN_HASH: &str = "sha256:a7692742b50d25512817cba73cc985ca73a85a7f0f450d01259ff58978617228";

    fn body_of(token: &Token) -> &[u8] {
        token.parts().1.as_bytes()
    }

    fn is_sha256_hash_text(s: &str) -> bool {
        s.strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    }

    /// Pearson's chi-square statistic of `counts` against a uniform
    /// distribution.
    fn chi_square(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        counts
            .iter()
            .map(|&c| {
                let d = c as f64 - expected;
                d * d / expected
            })
            .sum()
    }

    #[test]
    fn generated_token_has_the_documented_format() {
        for prefix in [DEFAULT_PREFIX, "a", "abcdefghij012345"] {
            let token = Token::generate(prefix);
            let text = token.expose();
            assert_eq!(text.len(), prefix.len() + 1 + BODY_LEN);
            assert!(text.starts_with(prefix));
            assert_eq!(text.as_bytes()[prefix.len()], b'_');
            assert_eq!(token.prefix(), prefix);
            let body = body_of(&token);
            assert_eq!(body.len(), BODY_LEN);
            assert!(body.iter().all(|&b| ALPHABET.contains(&b)));
            assert_eq!(&body[RANDOM_LEN..], checksum(&body[..RANDOM_LEN]).as_slice());

            let reparsed = Token::parse(text).expect("a generated token parses");
            assert_eq!(reparsed.expose(), text);

            let key_id = token.key_id();
            assert_eq!(key_id.len(), prefix.len() + 1 + KEY_ID_BODY_LEN);
            assert!(text.starts_with(&key_id));

            let hash = token.hash();
            assert!(is_sha256_hash_text(hash.as_str()), "{hash}");
            assert_eq!(hash, TokenHash::of(text.as_bytes()));
            assert_eq!(TokenHash::parse(hash.as_str()), Some(hash.clone()));
            assert_eq!(hash.to_string(), hash.as_str());
        }
    }

    #[test]
    fn known_vectors_match_zlib_crc32_and_sha256sum() {
        // crc32(b"123456789") = 0xCBF43926, the standard CRC-32/IEEE check
        // value; 0xCBF43926 = 3418704166 = "3jZRME" in base62.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(&checksum(b"123456789"), b"3jZRME");
        // Left padding: crc32 of the empty input is 0.
        assert_eq!(&checksum(b""), b"000000");

        let token = Token::parse(KNOWN_TOKEN).expect("the known vector is valid");
        assert_eq!(token.prefix(), "kw");
        assert_eq!(token.key_id(), "kw_01234567");
        assert_eq!(token.hash().as_str(), KNOWN_HASH);
        assert_eq!(TokenHash::of(KNOWN_TOKEN.as_bytes()).as_str(), KNOWN_HASH);
    }

    #[test]
    fn checksum_catches_every_single_character_change() {
        // A single-character substitution changes one byte, a burst of at
        // most 8 bits, which CRC-32 always detects in the random part; in the
        // checksum part the stored text simply differs from the recomputed
        // one.
        let mut tokens: Vec<String> = (0..5).map(|_| Token::generate(DEFAULT_PREFIX).expose().to_owned()).collect();
        tokens.push(KNOWN_TOKEN.to_owned());
        for text in &tokens {
            let start = text.len() - BODY_LEN;
            for pos in start..text.len() {
                for &replacement in ALPHABET.iter() {
                    let mut bytes = text.clone().into_bytes();
                    if bytes[pos] == replacement {
                        continue;
                    }
                    bytes[pos] = replacement;
                    let mutated = String::from_utf8(bytes).expect("ASCII stays UTF-8");
                    assert_eq!(
                        Token::parse(&mutated).err(),
                        Some(MalformedToken::Checksum),
                        "change at body position {} not detected",
                        pos - start
                    );
                }
            }
        }
    }

    #[test]
    fn a_million_generated_tokens_are_distinct() {
        const COUNT: usize = 1_000_000;
        // A sorted Vec of fixed-size bodies takes 36 MB; a HashSet of the
        // same would need about twice that for its table.
        let mut bodies: Vec<[u8; BODY_LEN]> = Vec::with_capacity(COUNT);
        for _ in 0..COUNT {
            let token = Token::generate(DEFAULT_PREFIX);
            let body: [u8; BODY_LEN] = body_of(&token).try_into().expect("body is BODY_LEN");
            bodies.push(body);
        }
        bodies.sort_unstable();
        bodies.dedup();
        assert_eq!(bodies.len(), COUNT);
    }

    #[test]
    fn base62_characters_are_used_evenly() {
        // 200,000 random parts = 6,000,000 characters over 62 symbols, so 61
        // degrees of freedom: mean 61, standard deviation ~11. P(chi2 > 130)
        // under a uniform sampler is ~7e-7, so this test essentially never
        // fails by chance. A sampler taking byte % 62 without rejection gives
        // digits 0-7 probability 5/256 and the rest 4/256; its expected chi2
        // at this sample size is N * 62 * sum((p_i - 1/62)^2) + 61 ~ 39,600,
        // far above the bound. The second half of this test checks that on
        // real OS bytes.
        const TOKENS: usize = 200_000;
        const BOUND: f64 = 130.0;
        let mut counts = [0u64; 62];
        for _ in 0..TOKENS {
            let token = Token::generate(DEFAULT_PREFIX);
            for &b in &body_of(&token)[..RANDOM_LEN] {
                let digit = ALPHABET.iter().position(|&a| a == b).expect("body is base62");
                counts[digit] += 1;
            }
        }
        let chi2 = chi_square(&counts);
        assert!(chi2 <= BOUND, "chi2 = {chi2}, counts = {counts:?}");

        let mut biased = [0u64; 62];
        let mut bytes = vec![0u8; TOKENS * RANDOM_LEN];
        SysRng.try_fill_bytes(&mut bytes).expect("the OS RNG works in tests");
        for b in bytes {
            biased[usize::from(b % 62)] += 1;
        }
        let biased_chi2 = chi_square(&biased);
        assert!(biased_chi2 > BOUND, "the bound cannot tell a biased sampler apart: chi2 = {biased_chi2}");
    }

    #[test]
    fn debug_and_display_redact_the_token() {
        let token = Token::generate(DEFAULT_PREFIX);
        let text = token.expose().to_owned();
        let body = String::from_utf8(body_of(&token).to_vec()).expect("ASCII");
        for shown in [format!("{token:?}"), format!("{token}"), format!("{token:#?}")] {
            assert_eq!(shown, "[redacted]");
            assert!(!shown.contains(&text));
            assert!(!shown.contains(&body));
        }
    }

    #[test]
    fn malformed_token_messages_do_not_contain_the_input() {
        let valid = Token::generate(DEFAULT_PREFIX).expose().to_owned();
        let body = &valid[valid.len() - BODY_LEN..];
        let mut bad_sum = valid.clone().into_bytes();
        let last = bad_sum.len() - 1;
        bad_sum[last] = if bad_sum[last] == b'0' { b'1' } else { b'0' };
        let bad_sum = String::from_utf8(bad_sum).expect("ASCII");
        let inputs =
            [format!("KW_{body}"), format!("kw{body}"), format!("kw_{body}x"), format!("kw_{}!", &body[1..]), bad_sum];
        for input in &inputs {
            let err = Token::parse(input).expect_err("input is malformed");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(input.as_str()), "{shown}");
            // Not even the random part may leak.
            assert!(!shown.contains(&body[..RANDOM_LEN]), "{shown}");
        }
    }

    #[test]
    fn parse_rejects_each_kind_of_malformed_token() {
        let body = &KNOWN_TOKEN[3..];
        let cases: Vec<(String, MalformedToken)> = vec![
            // Prefix.
            (format!("KW_{body}"), MalformedToken::Prefix),
            (format!("kW_{body}"), MalformedToken::Prefix),
            (format!("_{body}"), MalformedToken::Prefix),
            (format!("1kw_{body}"), MalformedToken::Prefix),
            (format!("abcdefghij0123456_{body}"), MalformedToken::Prefix),
            (format!("k-w_{body}"), MalformedToken::Prefix),
            (format!("é_{body}"), MalformedToken::Prefix),
            // Separator.
            (format!("kw{body}"), MalformedToken::Separator),
            (format!("kw-{body}"), MalformedToken::Separator),
            (String::new(), MalformedToken::Separator),
            // Length.
            ("kw_".to_owned(), MalformedToken::Length),
            (format!("kw_{}", &body[1..]), MalformedToken::Length),
            (format!("kw_{body}0"), MalformedToken::Length),
            (format!("kw_{body}_x"), MalformedToken::Length),
            // Alphabet, including a second '_' and a multi-byte character
            // that keeps the byte length at 36.
            (format!("kw_{}!", &body[1..]), MalformedToken::Alphabet),
            (format!("kw_{}_", &body[1..]), MalformedToken::Alphabet),
            (format!("kw_{}é", &body[2..]), MalformedToken::Alphabet),
            (format!("kw_{} ", &body[1..]), MalformedToken::Alphabet),
            // Checksum: random part changed, then checksum changed.
            (KNOWN_TOKEN.replacen("0123", "0124", 1), MalformedToken::Checksum),
            (KNOWN_TOKEN.replace("4Us3aw", "4Us3ax"), MalformedToken::Checksum),
        ];
        for (input, expected) in &cases {
            assert_eq!(Token::parse(input).err().as_ref(), Some(expected), "input {input:?}");
        }
        // The checksum covers the body only, so any valid prefix works.
        assert!(Token::parse(&format!("a1_{body}")).is_ok());
    }

    #[test]
    fn prefix_validation_matches_the_contract_regex() {
        for ok in ["kw", "a", "a0", "abcdefghij012345", DEFAULT_PREFIX] {
            assert!(is_valid_prefix(ok), "{ok:?}");
        }
        for bad in ["", "0", "0kw", "Kw", "kW", "k_w", "k w", "abcdefghij0123456", "é"] {
            assert!(!is_valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn token_hash_parse_accepts_only_sha256_and_64_lowercase_hex() {
        assert!(TokenHash::parse(KNOWN_HASH).is_some());
        let hex = &KNOWN_HASH["sha256:".len()..];
        for bad in [
            hex.to_owned(),
            format!("SHA256:{hex}"),
            format!("sha512:{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha256:{}g", &hex[1..]),
            String::new(),
        ] {
            assert_eq!(TokenHash::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_digest_of_a_token_is_what_its_hash_spells() {
        let token = Token::parse(KNOWN_TOKEN).unwrap();
        let from_hash = TokenHash::parse(KNOWN_HASH).unwrap().digest();
        assert_eq!(token.digest(), from_hash);
        assert_eq!(from_hash[..4], [0xa7, 0x69, 0x27, 0x42]);
        assert_eq!(from_hash[31], 0x28);
    }
}
