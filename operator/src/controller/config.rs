//! Operator-wide settings, from the `run` flags.

use std::time::Duration;

use ipfs_oci::source::{Credentials, SourceOptions};

/// Operator-wide settings (from the `run` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Host and port of the node agents' registry, for `status.image`.
    pub mirror_host: String,
    /// Re-check interval of tags when `spec.recheckInterval` is unset; also how often a Ready
    /// image's pin is verified. Zero turns default re-checks off.
    pub recheck_interval: Duration,
    /// Registries (host[:port]) talked to over plain HTTP.
    pub plain_http_registries: Vec<String>,
    /// Registries (host[:port]) whose TLS certificates are not verified.
    pub insecure_registries: Vec<String>,
    /// First retry delay after a failure; doubles with each consecutive failure of an object.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// `reportingInstance` of Events (the Pod name).
    pub instance: Option<String>,
    /// Largest image (declared blob sizes) an import accepts; `None`: no limit.
    pub max_image_size: Option<u64>,
    /// Longest time one import may take; `None`: no deadline.
    pub import_timeout: Option<Duration>,
    /// Networks (besides loopback and link-local) a registry's auth realm or redirect may not
    /// point at: the cluster's own pod and service ranges.
    pub refused_networks: Vec<ipfs_oci::address::Network>,
    /// Registries `spec.source` may name (`host[:port]` or `*.domain`); empty: every registry.
    pub allowed_registries: Vec<String>,
    /// How often pins the operator made, whose image no object holds any more, are removed
    /// (`None`: never).
    pub orphan_sweep_interval: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mirror_host: ipfs_image_api::DEFAULT_MIRROR_HOST.to_owned(),
            recheck_interval: Duration::from_secs(3600),
            plain_http_registries: Vec::new(),
            insecure_registries: Vec::new(),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            instance: None,
            max_image_size: Some(20 << 30),
            import_timeout: Some(Duration::from_secs(3600)),
            refused_networks: Vec::new(),
            allowed_registries: Vec::new(),
            orphan_sweep_interval: Some(Duration::from_secs(600)),
        }
    }
}

impl Config {
    /// How to talk to `registry` (host[:port] of a reference), with `credentials`.
    pub fn source_options(
        &self,
        registry: &str,
        credentials: Option<Credentials>,
    ) -> SourceOptions {
        let listed = |list: &[String]| list.iter().any(|r| r.eq_ignore_ascii_case(registry));
        SourceOptions {
            plain_http: listed(&self.plain_http_registries),
            insecure: listed(&self.insecure_registries),
            credentials,
            addresses: ipfs_oci::address::AddressPolicy {
                refuse_local: true,
                refused: self.refused_networks.clone(),
            },
        }
    }

    /// Whether `spec.source` may name `registry` (host[:port] of a reference).
    pub fn allows_registry(&self, registry: &str) -> bool {
        self.allowed_registries.is_empty()
            || self.allowed_registries.iter().any(|allowed| {
                match allowed.strip_prefix("*.") {
                    // A subdomain, at any depth, never the domain itself nor a look-alike suffix.
                    Some(domain) => {
                        let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
                            if p.chars().all(|c| c.is_ascii_digit()) {
                                h
                            } else {
                                registry
                            }
                        });
                        host.len() > domain.len() + 1
                            && host
                                .to_ascii_lowercase()
                                .ends_with(&format!(".{}", domain.to_ascii_lowercase()))
                    }
                    None => allowed.eq_ignore_ascii_case(registry),
                }
            })
    }

    /// Delay before retry number `failures` (1-based): base · 2^(failures-1), capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn the_registry_allow_list_matches_hosts_and_subdomains_only() {
        let open = Config::default();
        assert!(open.allows_registry("anything.example:5000"), "empty: all");
        let config = Config {
            allowed_registries: vec!["docker.io".into(), "*.corp.example".into()],
            ..Config::default()
        };
        for allowed in [
            "docker.io",
            "DOCKER.io",
            "registry.corp.example",
            "a.b.corp.example:5000",
        ] {
            assert!(config.allows_registry(allowed), "{allowed}");
        }
        for refused in [
            "ghcr.io",
            "docker.io:5000",
            "corp.example",
            "evilcorp.example",
            "corp.example.evil",
            ".corp.example",
            "127.0.0.1:5000",
        ] {
            assert!(!config.allows_registry(refused), "{refused}");
        }
    }
}
