//! Does containerd actually read the `hosts.toml` files we write? Read off its `config.toml`
//! (and the files it imports). Each case below leaves containerd pulling straight from the
//! upstream without a word in its logs, so the agent says so itself and reports not ready.
//!
//! The rules follow containerd's own code: 1.x reads a `config_path` list in order; 2.x sets
//! `config_path` to the list `/etc/containerd/certs.d:/etc/docker/certs.d` when the config names
//! none, and since 2.1 pulls through the transfer service, which takes the whole list as one
//! directory (containerd#12415), unless an option forces the older local pull.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// containerd 2.x's `config_path` when its config sets none (and no `registry.mirrors`).
pub const CONTAINERD2_DEFAULT_CONFIG_PATH: &str = "/etc/containerd/certs.d:/etc/docker/certs.d";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// containerd ignores the mirror: the agent is not ready.
    Problem,
    /// Worth knowing, but the mirror may work.
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// No config file, or one that cannot be read or parsed.
    ConfigUnreadable,
    /// containerd 1.x without `config_path`: it reads no `hosts.toml` at all.
    NoConfigPath,
    /// A `config_path` list while 2.x pulls through the transfer service.
    ConfigPathList,
    /// A `registry.mirrors` section: hosts.toml ignored, or the CRI plugin refuses to load.
    RegistryMirrors,
    /// containerd reads hosts.toml from elsewhere than where the agent writes them.
    HostsDirNotRead,
    /// An `imports` entry we could not read (its settings are not checked).
    ImportUnreadable,
}

impl FindingKind {
    /// The metric label (`ipfs_image_agent_runtime_config_problems{problem=…}`).
    pub fn label(self) -> &'static str {
        match self {
            Self::ConfigUnreadable => "config_unreadable",
            Self::NoConfigPath => "no_config_path",
            Self::ConfigPathList => "config_path_list",
            Self::RegistryMirrors => "registry_mirrors",
            Self::HostsDirNotRead => "hosts_dir_not_read",
            Self::ImportUnreadable => "import_unreadable",
        }
    }

    pub const ALL: [FindingKind; 6] = [
        Self::ConfigUnreadable,
        Self::NoConfigPath,
        Self::ConfigPathList,
        Self::RegistryMirrors,
        Self::HostsDirNotRead,
        Self::ImportUnreadable,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    pub message: String,
}

/// What the check read: which containerd the config is for, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `containerd 2.x (config version 3)`, `containerd 1.x or 2.x (config version 2)`…
    pub runtime: String,
    /// The CRI registry table the settings were read from.
    pub registry_table: String,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
    }

    pub fn is_ok(&self) -> bool {
        self.problems().next().is_none()
    }

    /// One line for /readyz and logs: every problem, `; `-separated.
    pub fn summary(&self) -> String {
        self.problems()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Check containerd's config file against the directory the agent writes `hosts.toml` into.
pub fn check(config_file: &Path, hosts_dir: &Path) -> Report {
    let config = match read_config(config_file) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                runtime: "containerd (unknown version)".into(),
                registry_table: String::new(),
                findings: vec![Finding {
                    kind: FindingKind::ConfigUnreadable,
                    severity: Severity::Problem,
                    message: format!(
                        "cannot read containerd's config {}: {e}; with its defaults containerd \
                         1.x reads no hosts.toml and 2.x reads {CONTAINERD2_DEFAULT_CONFIG_PATH} \
                         as one directory, so the mirror is not used",
                        config_file.display()
                    ),
                }],
            };
        }
    };
    let (mut table, mut findings) = (config, Vec::new());
    merge_imports(&mut table, config_file, &mut findings);
    check_table(&table, hosts_dir, findings)
}

fn read_config(path: &Path) -> Result<Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.parse::<Table>().map_err(|e| e.message().to_owned())
}

fn check_table(config: &Table, hosts_dir: &Path, mut findings: Vec<Finding>) -> Report {
    let version = config
        .get("version")
        .and_then(Value::as_integer)
        .unwrap_or(1);
    let v3 = version >= 3;
    // 1.x: `io.containerd.grpc.v1.cri` (version 2) or `cri` (version 1); 2.x: the images plugin.
    let plugin = match version {
        3.. => "io.containerd.cri.v1.images",
        2 => "io.containerd.grpc.v1.cri",
        _ => "cri",
    };
    let images = lookup(config, &["plugins", plugin]);
    let registry = images.and_then(|t| lookup(t, &["registry"]));
    let setting = |key: &str| registry.and_then(|r| r.get(key));
    let non_empty = |key: &str| {
        setting(key)
            .and_then(Value::as_table)
            .is_some_and(|t| !t.is_empty())
    };
    let table_name = format!("plugins.\"{plugin}\".registry");
    let mirrors = non_empty("mirrors");
    let configured = setting("config_path")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();

    if mirrors {
        findings.push(problem(
            FindingKind::RegistryMirrors,
            format!(
                "containerd's config has a {table_name}.mirrors section: with it containerd reads \
                 no hosts.toml (or, with config_path also set, does not load its CRI plugin); move \
                 those mirrors into hosts.toml files under config_path and delete the section"
            ),
        ));
    }
    let config_path = if configured.is_empty() && v3 && !mirrors {
        CONTAINERD2_DEFAULT_CONFIG_PATH.to_owned()
    } else {
        configured.clone()
    };
    if config_path.is_empty() {
        if !mirrors {
            findings.push(problem(
                FindingKind::NoConfigPath,
                format!(
                    "containerd's config sets no {table_name}.config_path: containerd 1.x then reads \
                     no hosts.toml (and 2.x reads {CONTAINERD2_DEFAULT_CONFIG_PATH} as one \
                     directory); set config_path = \"{}\"",
                    hosts_dir.display()
                ),
            ));
        }
    } else {
        let dirs: Vec<PathBuf> = std::env::split_paths(&config_path).collect();
        let is_list = dirs.len() > 1;
        let transfer = v3 && !local_pull_forced(images, mirrors, registry);
        if is_list && transfer {
            let origin = if configured.is_empty() {
                "its default config_path"
            } else {
                "config_path"
            };
            findings.push(problem(
                FindingKind::ConfigPathList,
                format!(
                    "containerd 2.x pulls through its transfer service, which reads {origin} \
                     \"{config_path}\" as one directory (containerd#12415), so no hosts.toml is \
                     read; set {table_name}.config_path = \"{}\" (one directory)",
                    hosts_dir.display()
                ),
            ));
        } else if is_list && !v3 {
            findings.push(Finding {
                kind: FindingKind::ConfigPathList,
                severity: Severity::Warning,
                message: format!(
                    "config_path \"{config_path}\" is a list: containerd 1.x reads it in order, \
                     but containerd 2.1 and later read it as one directory (containerd#12415); \
                     prefer \"{}\" alone",
                    hosts_dir.display()
                ),
            });
        }
        // Under the transfer service only the whole string counts as a directory (a list is
        // reported above).
        let read = if transfer { &dirs[..1] } else { &dirs[..] };
        let reads_ours = read.iter().any(|d| same_dir(d, hosts_dir));
        let list_reported = is_list && transfer;
        if !reads_ours && !list_reported {
            findings.push(problem(
                FindingKind::HostsDirNotRead,
                format!(
                    "containerd reads hosts.toml from \"{config_path}\" but the agent writes them \
                     to {}; set the chart's containerd.configPath (or --config-path) to \
                     containerd's config_path",
                    hosts_dir.display()
                ),
            ));
        }
    }
    Report {
        runtime: if v3 {
            format!("containerd 2.x (config version {version})")
        } else {
            format!("containerd 1.x or 2.x (config version {version})")
        },
        registry_table: table_name,
        findings,
    }
}

/// The options that make containerd 2.x fall back from the transfer service to its local pull
/// (containerd's `CheckLocalImagePullConfigs`, Linux defaults).
fn local_pull_forced(images: Option<&Table>, mirrors: bool, registry: Option<&Table>) -> bool {
    let Some(images) = images else {
        return false;
    };
    let flag = |key: &str| images.get(key).and_then(Value::as_bool);
    let deprecated_registry_tables = ["configs", "auths"].iter().any(|k| {
        registry
            .and_then(|r| r.get(*k))
            .and_then(Value::as_table)
            .is_some_and(|t| !t.is_empty())
    });
    flag("use_local_image_pull") == Some(true)
        || flag("disable_snapshot_annotations") == Some(false)
        || flag("discard_unpacked_layers") == Some(true)
        || flag("image_pull_with_sync_fs") == Some(true)
        || images
            .get("max_concurrent_downloads")
            .and_then(Value::as_integer)
            .is_some_and(|n| n != 3)
        || mirrors
        || deprecated_registry_tables
}

fn problem(kind: FindingKind, message: String) -> Finding {
    Finding {
        kind,
        severity: Severity::Problem,
        message,
    }
}

fn lookup<'a>(table: &'a Table, keys: &[&str]) -> Option<&'a Table> {
    keys.iter()
        .try_fold(table, |t, k| t.get(*k).and_then(Value::as_table))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let clean = |p: &Path| p.components().collect::<PathBuf>();
    clean(a) == clean(b)
}

/// containerd merges the files named by `imports` (globs allowed, relative to the config's
/// directory) over the main config, in order.
fn merge_imports(config: &mut Table, config_file: &Path, findings: &mut Vec<Finding>) {
    let patterns: Vec<String> = config
        .get("imports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let base = config_file.parent().unwrap_or(Path::new("/"));
    for pattern in patterns {
        let pattern = base.join(pattern);
        for file in expand_glob(&pattern) {
            match read_config(&file) {
                Ok(imported) => deep_merge(config, imported),
                Err(e) => findings.push(Finding {
                    kind: FindingKind::ImportUnreadable,
                    severity: Severity::Warning,
                    message: format!(
                        "cannot read {} (imported by containerd's config): {e}; its registry \
                         settings are not checked",
                        file.display()
                    ),
                }),
            }
        }
    }
}

/// A path whose last component may hold one `*`; anything else is taken literally.
fn expand_glob(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return vec![pattern.to_owned()];
    };
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
                n.len() >= prefix.len() + suffix.len()
                    && n.starts_with(prefix)
                    && n.ends_with(suffix)
            })
        })
        .collect();
    files.sort();
    files
}

fn deep_merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(a)), Value::Table(b)) => deep_merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(config: &str) -> Report {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("config.toml");
        std::fs::write(&file, config).unwrap();
        check(&file, Path::new("/etc/containerd/certs.d"))
    }

    fn kinds(r: &Report) -> Vec<FindingKind> {
        r.problems().map(|f| f.kind).collect()
    }

    #[test]
    fn single_directory_is_fine_on_both_versions() {
        let v2 = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n";
        let v3 = "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\nconfig_path = \"/etc/containerd/certs.d/\"\n";
        assert!(report(v2).findings.is_empty(), "{:?}", report(v2));
        assert!(report(v3).findings.is_empty(), "{:?}", report(v3));
        assert!(report(v3).runtime.contains("2.x"));
    }

    #[test]
    fn each_misconfiguration_is_a_problem() {
        // 1.x without config_path (and a v3 config that only looks like one).
        assert_eq!(kinds(&report("version = 2\n")), [FindingKind::NoConfigPath]);
        // 2.x without config_path: the default list, under the transfer service.
        assert_eq!(
            kinds(&report("version = 3\n")),
            [FindingKind::ConfigPathList]
        );
        // A list under the transfer service; the same list with local pull forced is fine.
        let list = "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\nconfig_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n";
        assert_eq!(kinds(&report(list)), [FindingKind::ConfigPathList]);
        let local = list.replace(
            "[plugins.\"io.containerd.cri.v1.images\".registry]",
            "[plugins.\"io.containerd.cri.v1.images\"]\nuse_local_image_pull = true\n[plugins.\"io.containerd.cri.v1.images\".registry]",
        );
        assert!(report(&local).is_ok(), "{:?}", report(&local));
        // registry.mirrors, on 1.x and on 2.x.
        let mirrors = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://registry-1.docker.io\"]\n";
        assert_eq!(kinds(&report(mirrors)), [FindingKind::RegistryMirrors]);
        // Another directory than ours.
        let other = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/hosts\"\n";
        assert_eq!(kinds(&report(other)), [FindingKind::HostsDirNotRead]);
        // Broken or missing config.
        assert_eq!(
            kinds(&report("version = \n")),
            [FindingKind::ConfigUnreadable]
        );
    }

    #[test]
    fn a_list_on_1x_is_only_a_warning() {
        let r = report(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n",
        );
        assert!(r.is_ok());
        assert_eq!(r.findings[0].severity, Severity::Warning);
    }

    #[test]
    fn imports_are_merged_in_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("conf.d")).unwrap();
        std::fs::write(
            d.path().join("conf.d/10-registry.toml"),
            "[plugins.\"io.containerd.cri.v1.images\".registry]\nconfig_path = \"/etc/containerd/certs.d\"\n",
        )
        .unwrap();
        let file = d.path().join("config.toml");
        std::fs::write(&file, "version = 3\nimports = [\"conf.d/*.toml\"]\n").unwrap();
        let r = check(&file, Path::new("/etc/containerd/certs.d"));
        assert!(r.findings.is_empty(), "{r:?}");
    }
}
