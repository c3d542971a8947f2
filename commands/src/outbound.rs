//! The one guard for requests a tenant's setting can aim (webhook URLs today; provider
//! endpoints and mail relays later): no request from a setting reaches this service's
//! own network unless the operator allows it (`OUTBOUND_ALLOW_PRIVATE_TARGETS`).
//!
//! A URL is checked when it is set (its host must resolve, and only to public
//! addresses) and again on every request against the address actually connected to:
//! the client resolves through [`GuardedResolver`], which drops private addresses, so
//! a name that resolves elsewhere later (DNS rebinding) still cannot reach one. An
//! address written into the URL is checked the same way before each request.
//! Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::DomainError;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Longest URL a setting may hold.
const MAX_URL_CHARS: usize = 2048;

/// Whether an address is one a tenant may aim at: not loopback, private, link-local
/// (which holds the clouds' metadata services), shared (CGNAT), multicast, broadcast,
/// documentation or unspecified, in either family (IPv4-mapped IPv6 included).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x0064 && ip.segments()[1] == 0xff9b)
}

/// Resolves names for the outbound client, keeping only addresses a tenant may aim at.
pub struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| allow_private || is_public(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Outbound requests from tenants' settings.
#[derive(Clone)]
pub struct Outbound {
    allow_private: bool,
    client: reqwest::Client,
}

impl Outbound {
    /// `timeout`: the longest a request may take, connecting included.
    pub fn new(allow_private: bool, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("inboxd/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to build the outbound HTTP client")?;
        Ok(Self { allow_private, client })
    }

    /// Checks a URL as a tenant sets it: http(s), a host that resolves, and only to
    /// addresses they may aim at.
    pub async fn check(&self, url: &str) -> Result<Url, DomainError> {
        let url = self.parse(url)?;
        let host = url.host_str().unwrap_or_default().trim_matches(|c| c == '[' || c == ']').to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => found.collect(),
            Err(_) => return Err(DomainError::invalid(format!("the host {host} does not resolve"))),
        };
        if found.is_empty() {
            return Err(DomainError::invalid(format!("the host {host} does not resolve")));
        }
        if !self.allow_private && found.iter().any(|a| !is_public(a.ip())) {
            return Err(DomainError::invalid(format!(
                "the host {host} resolves to a private, loopback or link-local address, which is not allowed"
            )));
        }
        Ok(url)
    }

    fn parse(&self, url: &str) -> Result<Url, DomainError> {
        if url.chars().count() > MAX_URL_CHARS {
            return Err(DomainError::invalid(format!("a URL has at most {MAX_URL_CHARS} characters")));
        }
        let parsed = Url::parse(url).map_err(|_| DomainError::invalid("the URL is not valid"))?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
            return Err(DomainError::invalid("the URL must be http(s) with a host"));
        }
        Ok(parsed)
    }

    /// POSTs `body` to a URL checked before; the address connected to is checked too.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<reqwest::Response, OutboundError> {
        self.send(reqwest::Method::POST, url, headers, Some(Body::Bytes(body))).await
    }

    /// GETs a URL under the same checks as [`Outbound::post`].
    pub async fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<reqwest::Response, OutboundError> {
        self.send(reqwest::Method::GET, url, headers, None).await
    }

    /// POSTs a multipart form (a file upload) under the same checks as [`Outbound::post`].
    pub async fn post_form(
        &self,
        url: &str,
        headers: &[(&str, String)],
        form: reqwest::multipart::Form,
    ) -> Result<reqwest::Response, OutboundError> {
        self.send(reqwest::Method::POST, url, headers, Some(Body::Form(form))).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Body>,
    ) -> Result<reqwest::Response, OutboundError> {
        let url = self.parse(url).map_err(|e| OutboundError::Refused(e.to_string()))?;
        // An address in the URL is not resolved, so the resolver cannot drop it.
        if let Some(ip) = url.host_str().and_then(|h| h.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().ok()) {
            if !self.allow_private && !is_public(ip) {
                return Err(OutboundError::Refused(format!("{ip} is not a public address")));
            }
        }
        let mut request = self.client.request(method, url);
        request = match body {
            Some(Body::Bytes(bytes)) => request.body(bytes),
            Some(Body::Form(form)) => request.multipart(form),
            None => request,
        };
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.map_err(|e| {
            if e.is_timeout() {
                OutboundError::Failed("timed out".into())
            } else {
                // The chain names the cause (refused, unresolvable, no public address).
                OutboundError::Failed(format!("{:#}", anyhow::Error::new(e)))
            }
        })
    }
}

/// What a request carries.
enum Body {
    Bytes(Vec<u8>),
    Form(reqwest::multipart::Form),
}

/// Why an outbound request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The target is one a tenant may not aim at.
    #[error("refused: {0}")]
    Refused(String),
    /// No answer: connection, TLS, timeout.
    #[error("{0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_may_be_aimed_at() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private} passed as public");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public} refused");
        }
    }

    #[tokio::test]
    async fn a_url_aimed_inside_is_refused_unless_the_operator_allows_it() {
        let guard = Outbound::new(false, Duration::from_secs(1)).unwrap();
        for url in ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/x", "ftp://example.com/x"] {
            assert!(guard.check(url).await.is_err(), "{url} accepted");
        }
        assert!(guard.check("http://host.invalid/hook").await.is_err(), "an unresolvable host is refused");
        let refused = guard.post("http://127.0.0.1:9/hook", &[], Vec::new()).await;
        assert!(matches!(refused, Err(OutboundError::Refused(_))), "{refused:?}");
        let allowing = Outbound::new(true, Duration::from_secs(1)).unwrap();
        assert!(allowing.check("http://127.0.0.1:9/hook").await.is_ok());
    }
}
