//! Signing by the Standard Webhooks specification, so receivers verify with any of its
//! published libraries: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the base64 part of the
//! `whsec_` secret.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The three headers of one signed attempt.
pub struct Signed {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
}

impl Signed {
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("webhook-id", self.id.clone()),
            ("webhook-timestamp", self.timestamp.clone()),
            ("webhook-signature", self.signature.clone()),
        ]
    }
}

/// Signs `body` as message `id` sent at `timestamp` (seconds since the epoch).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<Signed> {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .context("a webhook secret is not whsec_<base64>")?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).context("HMAC takes any key length")?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    Ok(Signed { id: id.to_string(), timestamp: timestamp.to_string(), signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks, "Verifying webhooks").
    #[test]
    fn signs_as_the_specification_s_example() {
        let signed = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signed.signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
