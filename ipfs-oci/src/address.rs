//! Which addresses a registry may send the importer to (an auth realm, a redirect). A registry
//! names hosts on its own say-so, so those hosts are checked before any request goes there:
//! loopback and link-local addresses, and the networks an administrator lists (the cluster's
//! pod and service ranges), are refused unless the target is the registry's own host.

use std::net::IpAddr;

/// An IP network in CIDR notation (`10.96.0.0/12`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a network in CIDR notation (e.g. 10.96.0.0/12)")]
pub struct NetworkParseError(String);

impl std::str::FromStr for Network {
    type Err = NetworkParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetworkParseError(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The addresses a registry may not point the importer at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10) and unspecified
    /// addresses. On by default.
    pub refuse_local: bool,
    /// More networks to refuse: the cluster's pod and service ranges, a cloud's metadata range.
    pub refused: Vec<Network>,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        Self {
            refuse_local: true,
            refused: Vec::new(),
        }
    }
}

impl AddressPolicy {
    /// Why `ip` is refused, if it is.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        let ip = canonical(ip);
        if self.refuse_local {
            let local = match ip {
                IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
                IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
                }
            };
            if local {
                return Some(format!("{ip} is a loopback or link-local address"));
            }
        }
        self.refused
            .iter()
            .find(|n| n.contains(ip))
            .map(|n| format!("{ip} is in the refused network {n}"))
    }
}

/// Cut a text a server sent (an error body) to `max` characters and replace control
/// characters, so it can go into a condition, an Event or a log line as it is.
pub fn clean_reflected(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_local_and_listed_networks() {
        let policy = AddressPolicy {
            refuse_local: true,
            refused: vec!["10.96.0.0/12".parse().unwrap(), "fd00::/8".parse().unwrap()],
        };
        for refused in [
            "127.0.0.2",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "10.100.0.1",
            "fd12::1",
        ] {
            assert!(policy.refusal(ip(refused)).is_some(), "{refused}");
        }
        for allowed in ["10.112.0.1", "93.184.216.34", "2606:4700::1", "192.168.1.1"] {
            assert!(policy.refusal(ip(allowed)).is_none(), "{allowed}");
        }
        let open = AddressPolicy {
            refuse_local: false,
            refused: vec![],
        };
        assert!(open.refusal(ip("127.0.0.1")).is_none());
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("10.0.0.0".parse::<Network>().is_err());
    }

    #[test]
    fn reflected_text_is_cut_and_cleaned() {
        let long = format!("a\u{1b}[31mb\r\nc{}", "x".repeat(500));
        let clean = clean_reflected(&long, 256);
        assert_eq!(clean.chars().count(), 257);
        assert!(!clean.chars().any(char::is_control), "{clean:?}");
        assert!(clean.starts_with("a [31mb  c"));
        assert_eq!(clean_reflected("short", 256), "short");
    }
}
