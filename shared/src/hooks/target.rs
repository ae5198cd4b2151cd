//! Where a completion webhook may go. A customer's URL is untrusted: it could name our
//! own network, the instance metadata service, or a host that resolves there. So: `https`
//! only, no credentials in the URL, at most 2,048 characters, and every address the host
//! resolves to is checked — at create time and again on every attempt, by the resolver
//! the sending client connects through (so the connection goes to a checked address, not
//! to whatever a second lookup returns).
//!
//! With `allow_loopback` (`WEBHOOK_ALLOW_LOOPBACK=1`, the local runner only) loopback
//! addresses are allowed too, over `http` or `https`; nothing else changes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Longest webhook URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a URL or an address may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("must be an absolute https URL of at most 2048 characters")]
    Shape,
    #[error("must not carry a user name or password")]
    Credentials,
    #[error("does not resolve")]
    Unresolvable,
    #[error(
        "resolves to an address that may not be called (private, loopback, link-local or metadata)"
    )]
    Address,
}

/// The rules one deployment applies, and (tests only) fixed answers for host names.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    allow_loopback: bool,
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl Targets {
    pub fn new(allow_loopback: bool) -> Self {
        Self {
            allow_loopback,
            overrides: Arc::default(),
        }
    }

    /// Resolves `host` to `addresses` instead of asking DNS (tests: a name for a local
    /// receiver, or one that points at a forbidden address).
    pub fn with_override(mut self, host: &str, addresses: &[IpAddr]) -> Self {
        Arc::make_mut(&mut self.overrides).insert(host.to_ascii_lowercase(), addresses.to_vec());
        self
    }

    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// The URL, if its shape is acceptable (nothing resolved yet).
    pub fn parse(&self, text: &str) -> Result<Url, Refused> {
        if text.chars().count() > MAX_URL_CHARS {
            return Err(Refused::Shape);
        }
        let url = Url::parse(text).map_err(|_| Refused::Shape)?;
        let scheme_ok = url.scheme() == "https" || (self.allow_loopback && url.scheme() == "http");
        if !scheme_ok || url.host().is_none() {
            return Err(Refused::Shape);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        Ok(url)
    }

    /// Whether one address may be called over `scheme`.
    pub fn allows(&self, scheme: &str, address: IpAddr) -> bool {
        let loopback = is_loopback(address);
        if scheme == "http" {
            return self.allow_loopback && loopback;
        }
        match forbidden(address) {
            false => true,
            true => self.allow_loopback && loopback,
        }
    }

    /// The addresses of `url`'s host that may be called, or why none may.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, Refused> {
        let port = url.port_or_known_default().ok_or(Refused::Shape)?;
        let candidates: Vec<IpAddr> = match url.host().ok_or(Refused::Shape)? {
            Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            Host::Domain(name) => self.lookup(name).await?,
        };
        self.filter(url.scheme(), candidates, port)
    }

    fn filter(
        &self,
        scheme: &str,
        candidates: Vec<IpAddr>,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Refused> {
        if candidates.is_empty() {
            return Err(Refused::Unresolvable);
        }
        let allowed: Vec<SocketAddr> = candidates
            .into_iter()
            .filter(|ip| self.allows(scheme, *ip))
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if allowed.is_empty() {
            Err(Refused::Address)
        } else {
            Ok(allowed)
        }
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, Refused> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(addresses) = self.overrides.get(&name) {
            return Ok(addresses.clone());
        }
        let found = tokio::net::lookup_host((name.as_str(), 0))
            .await
            .map_err(|_| Refused::Unresolvable)?;
        Ok(found.map(|a| a.ip()).collect())
    }

    /// The resolver for a sending client of `scheme`: it answers only checked addresses,
    /// so the client connects to nothing else.
    pub fn resolver(&self, scheme: &'static str) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            targets: self.clone(),
            scheme,
        })
    }
}

/// A `reqwest` resolver that refuses names resolving only to forbidden addresses and
/// drops the forbidden ones from a mixed answer.
#[derive(Debug)]
pub struct GuardedResolver {
    targets: Targets,
    scheme: &'static str,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let targets = self.targets.clone();
        let scheme = self.scheme;
        let name = name.as_str().to_string();
        Box::pin(async move {
            let candidates = targets.lookup(&name).await?;
            // The port is the URL's: reqwest replaces this 0 with it.
            let allowed = targets.filter(scheme, candidates, 0)?;
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn is_loopback(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || embedded_v4(v6).is_some_and(|v4| v4.is_loopback()),
    }
}

/// Addresses a customer's webhook may never reach: ours, the provider's, and those that
/// are not a real public host.
fn forbidden(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16: the metadata services live here
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT; Alibaba's metadata)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7 (EC2's fd00:ec2::254 too)
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x2001 && ip.segments()[1] == 0) // Teredo: tunnels to anywhere
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`) address, which reach that IPv4 host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail());
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_refused() {
        let strict = Targets::new(false);
        for address in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.8",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.1.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::7f00:1",
        ] {
            assert!(
                !strict.allows("https", ip(address)),
                "{address} was allowed"
            );
        }
    }

    #[test]
    fn public_addresses_are_allowed_over_https_only() {
        let strict = Targets::new(false);
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(strict.allows("https", ip(address)), "{address} was refused");
            assert!(!strict.allows("http", ip(address)), "{address} over http");
        }
        // Just outside 172.16.0.0/12: a public address.
        assert!(strict.allows("https", ip("172.15.0.1")));
        assert!(strict.allows("https", ip("172.32.0.1")));
    }

    #[test]
    fn the_loopback_switch_allows_loopback_and_nothing_else() {
        let local = Targets::new(true);
        assert!(local.allows("http", ip("127.0.0.1")));
        assert!(local.allows("https", ip("::1")));
        assert!(!local.allows("http", ip("93.184.216.34")));
        assert!(!local.allows("https", ip("169.254.169.254")));
        assert!(!local.allows("http", ip("10.0.0.1")));
    }

    #[test]
    fn a_url_must_be_https_short_and_without_credentials() {
        let strict = Targets::new(false);
        assert!(strict.parse("https://hooks.example.com/x?y=1").is_ok());
        assert_eq!(
            strict.parse("http://hooks.example.com/"),
            Err(Refused::Shape)
        );
        assert_eq!(
            strict.parse("ftp://hooks.example.com/"),
            Err(Refused::Shape)
        );
        assert_eq!(strict.parse("/relative"), Err(Refused::Shape));
        assert_eq!(
            strict.parse("https://user:pw@hooks.example.com/"),
            Err(Refused::Credentials)
        );
        let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
        assert_eq!(strict.parse(&long), Err(Refused::Shape));
        assert!(Targets::new(true).parse("http://127.0.0.1:9/").is_ok());
    }

    #[tokio::test]
    async fn a_name_is_checked_by_what_it_resolves_to() {
        let targets = Targets::new(false)
            .with_override("evil.example", &[ip("169.254.169.254")])
            .with_override("mixed.example", &[ip("10.0.0.1"), ip("93.184.216.34")])
            .with_override("fine.example", &[ip("93.184.216.34")]);
        let resolve = |u: &str| {
            let targets = targets.clone();
            let url = Url::parse(u).unwrap();
            async move { targets.resolve(&url).await }
        };

        assert_eq!(
            resolve("https://evil.example/").await,
            Err(Refused::Address)
        );
        assert_eq!(
            resolve("https://mixed.example:8443/").await,
            Ok(vec!["93.184.216.34:8443".parse().unwrap()])
        );
        assert_eq!(
            resolve("https://fine.example/").await,
            Ok(vec!["93.184.216.34:443".parse().unwrap()])
        );
        assert_eq!(resolve("https://[::1]/").await, Err(Refused::Address));
        assert_eq!(resolve("https://127.0.0.1/").await, Err(Refused::Address));
    }
}
