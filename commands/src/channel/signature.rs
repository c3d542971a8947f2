//! Meta's webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>` of the
//! raw body, keyed with the app's secret. Checked over the bytes as received (Meta
//! escapes non-ASCII, so re-serialised JSON would not match), in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Meta signs its webhooks in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Whether `header` is the signature of `body` with `app_secret`.
pub fn verifies(app_secret: &str, header: Option<&str>, body: &[u8]) -> bool {
    let Some(given) = header.and_then(|h| h.trim().strip_prefix("sha256=")).and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(app_secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).is_ok()
}

/// The header a provider would send for `body` (the fake providers and the benchmark sign with it).
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bytes_signed_with_the_app_secret_verify() {
        let body = br#"{"object":"page","entry":[{"id":"1","messaging":[]}]}"#;
        let header = sign("s3cret", body);
        assert!(verifies("s3cret", Some(&header), body));
        assert!(!verifies("other", Some(&header), body));
        assert!(!verifies("s3cret", Some(&header), &body[1..]));
        assert!(!verifies("s3cret", None, body));
        assert!(!verifies("s3cret", Some(header.trim_start_matches("sha256=")), body), "the scheme is required");
        assert!(!verifies("s3cret", Some("sha256=zz"), body));
        assert!(!verifies("s3cret", Some("sha256="), body));
    }
}
