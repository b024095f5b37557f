//! Where a registry may send the importer: every connection the source client makes (the
//! registry's, its auth realm's, each redirect hop's) goes through this guard.
//!
//! Names are checked by the resolver the connection itself uses, so a DNS answer cannot change
//! between the check and the connect (DNS rebinding); IP literals, which reqwest connects to
//! without resolving, are checked by the redirect policy and before a realm is asked. The
//! registry's own host, which the reference named (and `--allowed-registry` admitted), is exempt.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::address::{AddressPolicy, clean_reflected};

/// Redirect hops followed before giving up (reqwest's default too).
const MAX_REDIRECTS: usize = 10;

/// A connection the guard did not make.
#[derive(Debug, thiserror::Error)]
#[error("{target}, which was not contacted: {why}")]
pub struct Refused {
    /// The URL or host name, cleaned for messages.
    pub target: String,
    pub why: String,
}

#[derive(Debug)]
pub struct Guard {
    policy: AddressPolicy,
    /// Lower-case hosts (no port, IPv6 without brackets) that references named.
    own_hosts: RwLock<HashSet<String>>,
}

impl Guard {
    pub fn new(policy: AddressPolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            own_hosts: RwLock::default(),
        })
    }

    /// `host` is a registry a reference named: connections to it are not checked.
    pub fn admit(&self, host: &str) {
        let host = bare(host);
        if !self.is_own(&host) {
            self.own_hosts.write().expect("guard lock").insert(host);
        }
    }

    fn is_own(&self, host: &str) -> bool {
        self.own_hosts
            .read()
            .expect("guard lock")
            .contains(&bare(host))
    }

    /// Check a URL whose host is an IP literal (a name is checked when it is resolved).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        if self.is_own(host) {
            return Ok(());
        }
        match bare(host).parse::<IpAddr>() {
            Ok(ip) => match self.policy.refusal(ip) {
                Some(why) => Err(Refused {
                    target: clean_reflected(url.as_str(), 120),
                    why,
                }),
                None => Ok(()),
            },
            Err(_) => Ok(()),
        }
    }

    /// reqwest's redirect policy: each hop's IP literal is checked, names resolve through the
    /// guard like every other connection.
    pub fn redirect_policy(self: &Arc<Self>) -> reqwest::redirect::Policy {
        let guard = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match guard.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        })
    }

    /// The resolver every connection of the client uses.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver(self.clone()))
    }
}

/// Lower case, without the brackets of an IPv6 literal.
fn bare(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

pub struct GuardedResolver(Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(resolve_guarded(self.0.clone(), name.as_str().to_owned()))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn resolve_guarded(guard: Arc<Guard>, host: String) -> Result<Addrs, BoxError> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    if guard.is_own(&host) {
        return Ok(Box::new(found.into_iter()));
    }
    // Only the allowed addresses are ever connected to; none left is a refusal.
    let mut why = None;
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| match guard.policy.refusal(a.ip()) {
            Some(w) => {
                why.get_or_insert(w);
                false
            }
            None => true,
        })
        .collect();
    match (allowed.is_empty(), why) {
        (true, Some(why)) => Err(Box::new(Refused {
            target: clean_reflected(&host, 120),
            why,
        })),
        _ => Ok(Box::new(allowed.into_iter())),
    }
}

/// The guard's refusal somewhere in an error's source chain.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_checked_and_own_hosts_exempt() {
        let guard = Guard::new(AddressPolicy::default());
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(guard.check_url(&url("http://127.0.0.2:9/t")).is_err());
        assert!(guard.check_url(&url("http://[::1]:9/t")).is_err());
        assert!(guard.check_url(&url("http://169.254.169.254/")).is_err());
        assert!(guard.check_url(&url("http://192.0.2.1/")).is_ok());
        assert!(guard.check_url(&url("http://name.example/")).is_ok());
        guard.admit("127.0.0.2");
        guard.admit("[::1]");
        assert!(guard.check_url(&url("http://127.0.0.2:9/t")).is_ok());
        assert!(guard.check_url(&url("http://[::1]:9/t")).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused() {
        let guard = Guard::new(AddressPolicy::default());
        let resolver = guard.resolver();
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Err(e) => e,
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
        };
        let refused = refusal_in(error.as_ref()).expect("a refusal");
        assert!(refused.why.contains("loopback"), "{refused}");
        guard.admit("LOCALHOST");
        let addrs: Vec<_> = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
