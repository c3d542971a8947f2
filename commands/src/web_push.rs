//! Web Push, the sending side, without I/O: what a delivery job needs to send one
//! notification to a browser's push service. The body is encrypted to the subscriber
//! (RFC 8291, `aes128gcm` of RFC 8188), so the push service cannot read it, and the
//! request is signed with the server's VAPID key (RFC 8292), so the push service
//! accepts it for subscriptions made with that key.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use hkdf::Hkdf;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand::rngs::OsRng;
use rand::RngCore;
use reqwest::Url;
use sha2::Sha256;

/// The record size written in the header: the whole message is one record.
const RECORD_SIZE: u32 = 4096;
/// Salt (16), record size (4), key id length (1), the sender's public key (65).
const HEADER_LEN: usize = 16 + 4 + 1 + 65;
/// AES-GCM's tag.
const TAG_LEN: usize = 16;

/// The largest payload one push carries (3993 bytes): push services need accept no
/// body over 4096 bytes (RFC 8291 §4), less the header, the tag and the delimiter.
pub const MAX_PAYLOAD: usize = RECORD_SIZE as usize - HEADER_LEN - TAG_LEN - 1;

/// The application server's P-256 key, which signs every request (VAPID).
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
}

impl VapidKey {
    /// The key whose private scalar is `bytes` (big-endian); a scalar of zero or not
    /// below the curve's order is refused.
    pub fn from_secret(bytes: &[u8; 32]) -> anyhow::Result<Self> {
        let signing =
            SigningKey::from_bytes(bytes.into()).map_err(|_| anyhow!("these 32 bytes are not a P-256 private key"))?;
        Ok(Self { signing })
    }

    /// The public key as browsers take it for `applicationServerKey`: the
    /// uncompressed point, base64url without padding.
    pub fn public_key(&self) -> String {
        BASE64URL.encode(self.signing.verifying_key().to_encoded_point(false).as_bytes())
    }

    /// The `Authorization` header for a request to `endpoint`: `vapid t=<JWT>, k=<key>`,
    /// the JWT (ES256) valid for the endpoint's origin until `expires_at` (seconds
    /// since the epoch; push services refuse more than 24 hours ahead). `subject` is
    /// the `mailto:` or `https:` contact the push service may use.
    pub fn authorization(&self, endpoint: &str, subject: &str, expires_at: i64) -> anyhow::Result<String> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https:")) {
            bail!("a VAPID subject is a mailto: or https: URL, not {subject:?}");
        }
        let claims = serde_json::json!({ "aud": origin(endpoint)?, "exp": expires_at, "sub": subject });
        let signing_input =
            format!("{}.{}", BASE64URL.encode(br#"{"typ":"JWT","alg":"ES256"}"#), BASE64URL.encode(claims.to_string()));
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        let jwt = format!("{signing_input}.{}", BASE64URL.encode(signature.to_bytes()));
        Ok(format!("vapid t={jwt}, k={}", self.public_key()))
    }
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey").field("public_key", &self.public_key()).finish_non_exhaustive()
    }
}

/// `scheme://host[:port]` of an http(s) URL, the audience push services expect.
fn origin(endpoint: &str) -> anyhow::Result<String> {
    let url = Url::parse(endpoint).with_context(|| format!("the push endpoint {endpoint:?} is not a URL"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        bail!("the push endpoint {endpoint:?} is not an http(s) URL");
    }
    Ok(url.origin().ascii_serialization())
}

/// Why a browser's subscription can't be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSubscription {
    #[error("endpoint: {0}")]
    Endpoint(String),
    #[error("keys.p256dh: {0}")]
    P256dh(String),
    #[error("keys.auth: {0}")]
    Auth(String),
}

/// A browser's push subscription (its `PushSubscription.toJSON()`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub endpoint: String,
    /// The subscriber's uncompressed P-256 public key (65 bytes).
    pub p256dh: Vec<u8>,
    /// The subscriber's authentication secret (16 bytes).
    pub auth: Vec<u8>,
}

impl Subscription {
    /// Checks a subscription as the browser sent it: an http(s) endpoint and its two keys.
    pub fn parse(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, InvalidSubscription> {
        origin(endpoint).map_err(|error| InvalidSubscription::Endpoint(error.to_string()))?;
        let (p256dh, auth) = parse_keys(p256dh, auth)?;
        Ok(Self { endpoint: endpoint.to_string(), p256dh, auth })
    }
}

/// Decodes and checks a subscription's keys, base64url or base64, padded or not:
/// `p256dh` must be an uncompressed point on P-256 and `auth` 16 bytes.
pub fn parse_keys(p256dh: &str, auth: &str) -> Result<(Vec<u8>, Vec<u8>), InvalidSubscription> {
    let point = decode(p256dh).map_err(InvalidSubscription::P256dh)?;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(InvalidSubscription::P256dh(format!(
            "expected an uncompressed P-256 point (65 bytes starting 0x04), got {} bytes",
            point.len()
        )));
    }
    PublicKey::from_sec1_bytes(&point)
        .map_err(|_| InvalidSubscription::P256dh("the point is not on the P-256 curve".into()))?;
    let secret = decode(auth).map_err(InvalidSubscription::Auth)?;
    if secret.len() != 16 {
        return Err(InvalidSubscription::Auth(format!("expected 16 bytes, got {}", secret.len())));
    }
    Ok((point, secret))
}

/// Base64 in either alphabet, with or without padding.
fn decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim().trim_end_matches('=').replace('+', "-").replace('/', "_");
    if text.is_empty() {
        return Err("empty".into());
    }
    BASE64URL.decode(&text).map_err(|error| format!("not base64url: {error}"))
}

/// Encrypts `payload` to the subscriber with keys `p256dh` and `auth` (RFC 8291): the
/// request body, to send with `Content-Encoding: aes128gcm`. A fresh key and salt each
/// call; a payload over [`MAX_PAYLOAD`] is refused.
pub fn encrypt(payload: &[u8], p256dh: &[u8], auth: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    encrypt_with(payload, p256dh, auth, &SecretKey::random(&mut OsRng), &salt)
}

/// [`encrypt`] with the ephemeral key and salt given, as the RFC's example needs.
fn encrypt_with(
    payload: &[u8],
    p256dh: &[u8],
    auth: &[u8],
    ephemeral: &SecretKey,
    salt: &[u8; 16],
) -> anyhow::Result<Vec<u8>> {
    if payload.len() > MAX_PAYLOAD {
        bail!("a push payload is at most {MAX_PAYLOAD} bytes, this one has {}", payload.len());
    }
    if auth.len() != 16 {
        bail!("a push subscription's auth secret is 16 bytes, not {}", auth.len());
    }
    let subscriber =
        PublicKey::from_sec1_bytes(p256dh).map_err(|_| anyhow!("a push subscription's p256dh is not a P-256 key"))?;
    let ua_public = subscriber.to_encoded_point(false);
    let as_public = ephemeral.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), subscriber.as_affine());

    // RFC 8291 §3.3: the auth secret and both public keys into the input keying material.
    let ikm: [u8; 32] = expand(
        &Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes()),
        &[b"WebPush: info\0", ua_public.as_bytes(), as_public.as_bytes()],
    );
    // RFC 8188 §2.2: the content encryption key and nonce from the salt.
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let key: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"]);
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"]);

    let mut record = Vec::with_capacity(payload.len() + 1);
    record.extend_from_slice(payload);
    record.push(0x02); // the last (only) record's delimiter, no padding
    let sealed = Aes128Gcm::new(&key.into())
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .map_err(|_| anyhow!("AES-GCM refused the push record"))?;

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.len() as u8);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// HKDF-Expand to `N` bytes; the lengths used here are far within its limit.
fn expand<const N: usize>(prk: &Hkdf<Sha256>, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    prk.expand_multi_info(info, &mut out).expect("at most 255 blocks of HKDF-SHA256");
    out
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;
    use serde_json::{json, Value};

    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        BASE64URL.decode(text).unwrap()
    }

    // RFC 8291 Appendix A: the example's keys, salt and message.
    const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AS_PUBLIC: &str = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const MESSAGE: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    #[test]
    fn encrypts_the_rfc_8291_example_byte_for_byte() {
        let ephemeral = SecretKey::from_slice(&b64(AS_PRIVATE)).unwrap();
        let salt: [u8; 16] = b64(SALT).try_into().unwrap();
        let body =
            encrypt_with(b"When I grow up, I want to be a watermelon", &b64(UA_PUBLIC), &b64(AUTH), &ephemeral, &salt)
                .unwrap();
        assert_eq!(BASE64URL.encode(body), MESSAGE);
    }

    #[test]
    fn each_message_has_a_fresh_key_and_salt_and_the_largest_payload_fills_4096_bytes() {
        let (p256dh, auth) = parse_keys(UA_PUBLIC, AUTH).unwrap();
        let one = encrypt(b"hi", &p256dh, &auth).unwrap();
        let two = encrypt(b"hi", &p256dh, &auth).unwrap();
        assert_eq!(one.len(), HEADER_LEN + 2 + 1 + TAG_LEN);
        assert_eq!(&one[16..21], &[0, 0, 0x10, 0, 65]);
        assert_ne!(one[..16], two[..16], "salt");
        assert_ne!(one[21..86], two[21..86], "ephemeral key");

        assert_eq!(MAX_PAYLOAD, 3993);
        assert_eq!(encrypt(&[b'x'; MAX_PAYLOAD], &p256dh, &auth).unwrap().len(), 4096);
        let refused = encrypt(&[b'x'; MAX_PAYLOAD + 1], &p256dh, &auth).unwrap_err();
        assert!(refused.to_string().contains("at most 3993 bytes"), "{refused}");
    }

    #[test]
    fn the_vapid_jwt_verifies_with_the_public_key_and_claims_the_endpoint_s_origin() {
        let key = VapidKey::from_secret(&b64(AS_PRIVATE).try_into().unwrap()).unwrap();
        assert_eq!(key.public_key(), AS_PUBLIC);

        let header = key
            .authorization("https://push.example.net:8443/wpush/v2/abc?x=1", "mailto:ops@example.com", 1_700_000_000)
            .unwrap();
        let (jwt, k) = header.strip_prefix("vapid t=").unwrap().split_once(", k=").unwrap();
        assert_eq!(k, AS_PUBLIC);
        let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
        let verifier = VerifyingKey::from_sec1_bytes(&b64(k)).unwrap();
        let signature = Signature::from_slice(&b64(signature)).unwrap();
        verifier.verify(signing_input.as_bytes(), &signature).unwrap();

        let (head, claims) = signing_input.split_once('.').unwrap();
        let head: Value = serde_json::from_slice(&b64(head)).unwrap();
        let claims: Value = serde_json::from_slice(&b64(claims)).unwrap();
        assert_eq!(head, json!({ "typ": "JWT", "alg": "ES256" }));
        assert_eq!(
            claims,
            json!({ "aud": "https://push.example.net:8443", "exp": 1_700_000_000, "sub": "mailto:ops@example.com" })
        );

        let default_port =
            key.authorization("https://FCM.googleapis.com:443/fcm/send/x", "https://example.com", 1).unwrap();
        let jwt = default_port.strip_prefix("vapid t=").unwrap().split(", k=").next().unwrap();
        let claims: Value = serde_json::from_slice(&b64(jwt.split('.').nth(1).unwrap())).unwrap();
        assert_eq!(claims["aud"], "https://fcm.googleapis.com");

        assert!(key.authorization("not a url", "mailto:ops@example.com", 1).is_err());
        assert!(key.authorization("ftp://push.example.net/x", "mailto:ops@example.com", 1).is_err());
        assert!(key.authorization("https://push.example.net/x", "ops@example.com", 1).is_err());
    }

    #[test]
    fn a_scalar_that_is_no_p256_key_is_refused() {
        assert!(VapidKey::from_secret(&[0; 32]).is_err());
        assert!(VapidKey::from_secret(&[0xff; 32]).is_err());
    }

    #[test]
    fn subscription_keys_are_accepted_in_any_base64_and_refused_with_the_field_named() {
        let (p256dh, auth) = parse_keys(UA_PUBLIC, AUTH).unwrap();
        assert_eq!((p256dh.len(), auth.len()), (65, 16));
        let standard = base64::engine::general_purpose::STANDARD;
        assert_eq!(parse_keys(&standard.encode(&p256dh), &standard.encode(&auth)).unwrap(), (p256dh.clone(), auth));
        assert!(parse_keys(&format!("{UA_PUBLIC}="), &format!("{AUTH}==")).is_ok());

        let compressed = PublicKey::from_sec1_bytes(&p256dh).unwrap().to_encoded_point(true);
        let refused = parse_keys(&BASE64URL.encode(compressed.as_bytes()), AUTH).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "keys.p256dh: expected an uncompressed P-256 point (65 bytes starting 0x04), got 33 bytes"
        );
        let mut off_curve = p256dh.clone();
        off_curve[64] ^= 1;
        assert_eq!(
            parse_keys(&BASE64URL.encode(&off_curve), AUTH).unwrap_err(),
            InvalidSubscription::P256dh("the point is not on the P-256 curve".into())
        );
        assert!(matches!(parse_keys("*not base64*", AUTH), Err(InvalidSubscription::P256dh(_))));
        assert_eq!(parse_keys(UA_PUBLIC, "c2hvcnQ").unwrap_err().to_string(), "keys.auth: expected 16 bytes, got 5");
        assert_eq!(parse_keys(UA_PUBLIC, "").unwrap_err(), InvalidSubscription::Auth("empty".into()));

        let subscription = Subscription::parse("https://push.example.net/x", UA_PUBLIC, AUTH).unwrap();
        assert_eq!(subscription.p256dh, p256dh);
        assert!(matches!(
            Subscription::parse("javascript:alert(1)", UA_PUBLIC, AUTH),
            Err(InvalidSubscription::Endpoint(_))
        ));
    }
}
