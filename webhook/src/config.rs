//! Injector configuration: what the operator decides once for the whole cluster.
//!
//! Loaded from YAML (the `tracecar-webhook-config` ConfigMap). Every field has a
//! default, so an empty file — or no file — gives a working injector.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Security posture of the injected sidecar: the one definition in
/// `tracecar-api`, shared with `kubectl tracecar attach`.
pub use tracecar_api::security::Profile as SecurityProfile;

/// Where the sidecar goes in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarMode {
    /// A regular entry in `spec.containers`.
    Container,
    /// An `initContainers` entry with `restartPolicy: Always` (Kubernetes
    /// 1.29+), so Jobs can still complete.
    Native,
}

impl SidecarMode {
    /// Parses the annotation value; `None` for anything unknown.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "container" => Some(Self::Container),
            "native" => Some(Self::Native),
            _ => None,
        }
    }

    /// The name used in annotations, config and the status annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Native => "native",
        }
    }
}

/// CPU/memory quantities for the sidecar, as Kubernetes quantity strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// `resources.requests`.
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    /// `resources.limits`.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

impl Default for ResourceSpec {
    fn default() -> Self {
        let pairs = |cpu: &str, mem: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), cpu.to_owned()),
                ("memory".to_owned(), mem.to_owned()),
            ])
        };
        // The agent idles at a few MiB; captures need up to ~100 MiB.
        Self {
            requests: pairs("10m", "32Mi"),
            limits: pairs("1", "256Mi"),
        }
    }
}

/// Where pods with continuous profiling push their windows: the cluster's
/// backends, one config for every pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PushConfig {
    /// OpenTelemetry Collector base URL for OTLP profiles over HTTP
    /// (`http://otel-collector.observability:4318`).
    pub otlp: Option<String>,
    /// Pyroscope base URL for its ingest API
    /// (`http://pyroscope.observability:4040`).
    pub pyroscope: Option<String>,
    /// A Secret in each pod's namespace with the push's `headers`,
    /// `ca.crt`, `tls.crt` and `tls.key` (each optional), mounted
    /// read-only into the sidecar; a pod whose namespace lacks it starts
    /// without them.
    pub secret_name: Option<String>,
    /// Windows each destination holds while its backend cannot take them.
    pub queue: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            otlp: None,
            pyroscope: None,
            secret_name: None,
            queue: 4,
        }
    }
}

impl PushConfig {
    /// Whether windows go anywhere.
    pub fn is_on(&self) -> bool {
        self.otlp.is_some() || self.pyroscope.is_some()
    }
}

/// The injector configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InjectConfig {
    /// Sidecar image.
    pub image: String,
    /// Sidecar `imagePullPolicy`.
    pub image_pull_policy: String,
    /// Sidecar resources.
    pub resources: ResourceSpec,
    /// Default security profile.
    pub profile: SecurityProfile,
    /// Whether `tracecar.dev/profile` on a pod may override `profile`.
    /// Off by default: whoever can create a pod could otherwise ask for the
    /// privileged profile.
    pub allow_profile_override: bool,
    /// Features of pods without a `tracecar.dev/features` annotation
    /// (`profile`, `uprobe`, `lttng`, `dotnet`, `dump`); default: all.
    pub features: Vec<String>,
    /// The most a pod may ask for with `tracecar.dev/features`: features
    /// outside this list are dropped, with a warning (`uprobe` grants
    /// CAP_SYS_ADMIN). Default: all. `features` must be within it.
    pub allowed_features: Vec<String>,
    /// Default sidecar mode.
    pub sidecar_mode: SidecarMode,
    /// Namespaces where injection is allowed. Empty means every namespace
    /// that is not excluded.
    pub namespaces: Vec<String>,
    /// Extra namespaces where injection is never done, on top of the system
    /// namespaces and the webhook's own.
    pub exclude_namespaces: Vec<String>,
    /// The webhook's own namespace; never injected.
    pub webhook_namespace: String,
    /// Socket path the agent listens on inside the sidecar.
    pub socket_path: String,
    /// `sizeLimit` of the sidecar's `tracecar-work` emptyDir, where LTTng
    /// traces and core files stay while they are sent (the agent's root
    /// filesystem is read-only). A pod whose sidecar writes more is
    /// evicted by the kubelet, so keep it above the largest dump you take.
    pub work_size_limit: String,
    /// `hostPath.type` for `/usr/src` and `/lib/modules`. `DirectoryOrCreate`
    /// tolerates nodes without them (an empty directory is created);
    /// `""` skips the check but some runtimes then fail on a missing path.
    pub kernel_source_host_path_type: String,
    /// Serve profiles (and only profiles) on this TCP port of the sidecar,
    /// `/debug/pprof/profile?seconds=N`, for Parca, Grafana Alloy and
    /// `go tool pprof` to scrape (pods with the `profile` feature). The
    /// sidecar gets the container port `tracecar-pprof`, and the pod
    /// Grafana's scrape annotations unless it has its own. Off when absent.
    pub profiles_port: Option<u16>,
    /// Samples per second of continuous CPU profiling, in pods annotated
    /// `tracecar.dev/continuous` (1-1000; default 19).
    pub continuous_hz: u32,
    /// Length of a continuous profiling window, in seconds (1-600;
    /// default 15).
    pub continuous_window_seconds: u32,
    /// Where continuous windows are pushed; nowhere by default.
    pub push: PushConfig,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            image: tracecar_api::security::AGENT_IMAGE.to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            resources: ResourceSpec::default(),
            profile: SecurityProfile::Minimal,
            allow_profile_override: false,
            features: tracecar_api::security::Features::all()
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            allowed_features: tracecar_api::security::Features::all()
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            sidecar_mode: SidecarMode::Container,
            namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            webhook_namespace: "tracecar-system".to_owned(),
            socket_path: tracecar_api::security::AGENT_SOCKET.to_owned(),
            work_size_limit: "2Gi".to_owned(),
            kernel_source_host_path_type: "DirectoryOrCreate".to_owned(),
            profiles_port: None,
            continuous_hz: 19,
            continuous_window_seconds: 15,
            push: PushConfig::default(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown keys.
    #[error("invalid config {path}: {source} (see docs/install.md, 'Configuration reference')")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The YAML error.
        #[source]
        source: serde_norway::Error,
    },
    /// A value is out of its allowed set.
    #[error("invalid config: {0}")]
    Invalid(&'static str),
}

/// A DNS-1123 subdomain: what a Secret's or a ConfigMap's name must be.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Whether `text` is a Kubernetes quantity: digits with an optional
/// fraction, then an optional suffix (binary, decimal or exponent).
fn is_quantity(text: &str) -> bool {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

impl InjectConfig {
    /// The features of pods without an annotation (validated at load).
    pub fn default_features(&self) -> tracecar_api::security::Features {
        tracecar_api::security::Features::parse(&self.features.join(","))
            .unwrap_or_else(|_| tracecar_api::security::Features::all())
            .intersection(self.allowed_features())
    }

    /// The most a pod may have (validated at load).
    pub fn allowed_features(&self) -> tracecar_api::security::Features {
        tracecar_api::security::Features::parse(&self.allowed_features.join(","))
            .unwrap_or_else(|_| tracecar_api::security::Features::none())
    }

    /// Loads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates YAML text. Empty text gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_norway::from_str(text).map_err(|source| ConfigError::Parse {
                path: PathBuf::new(),
                source,
            })?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.image.trim().is_empty() {
            return Err(ConfigError::Invalid("image must not be empty"));
        }
        if !matches!(
            self.image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            return Err(ConfigError::Invalid(
                "imagePullPolicy must be Always, IfNotPresent or Never",
            ));
        }
        let Ok(features) = tracecar_api::security::Features::parse(&self.features.join(",")) else {
            return Err(ConfigError::Invalid(
                "features must name only profile, uprobe, lttng, dotnet and dump",
            ));
        };
        let Ok(allowed) = tracecar_api::security::Features::parse(&self.allowed_features.join(","))
        else {
            return Err(ConfigError::Invalid(
                "allowedFeatures must name only profile, uprobe, lttng, dotnet and dump",
            ));
        };
        if !features.is_subset(allowed) {
            return Err(ConfigError::Invalid(
                "features must be within allowedFeatures",
            ));
        }
        if !is_quantity(&self.work_size_limit) {
            return Err(ConfigError::Invalid(
                "workSizeLimit must be a Kubernetes quantity such as 2Gi or 500M",
            ));
        }
        if !self.socket_path.starts_with('/') {
            return Err(ConfigError::Invalid("socketPath must be absolute"));
        }
        if self.profiles_port == Some(0) {
            return Err(ConfigError::Invalid("profilesPort must be 1-65535"));
        }
        if !(1..=1000).contains(&self.continuous_hz) {
            return Err(ConfigError::Invalid("continuousHz must be 1-1000"));
        }
        if !(1..=600).contains(&self.continuous_window_seconds) {
            return Err(ConfigError::Invalid(
                "continuousWindowSeconds must be 1-600",
            ));
        }
        let base_url = |url: &str| {
            (url.starts_with("http://") || url.starts_with("https://"))
                && !url.contains(['?', '#', ' '])
        };
        if !self.push.otlp.as_deref().is_none_or(base_url)
            || !self.push.pyroscope.as_deref().is_none_or(base_url)
        {
            return Err(ConfigError::Invalid(
                "push.otlp and push.pyroscope must be http:// or https:// base URLs, without a query",
            ));
        }
        if !(1..=64).contains(&self.push.queue) {
            return Err(ConfigError::Invalid("push.queue must be 1-64"));
        }
        if !self
            .push
            .secret_name
            .as_deref()
            .is_none_or(is_dns_subdomain)
        {
            return Err(ConfigError::Invalid(
                "push.secretName must be a Secret's name (lowercase letters, digits, '-' and '.')",
            ));
        }
        if !matches!(
            self.kernel_source_host_path_type.as_str(),
            "" | "Directory" | "DirectoryOrCreate"
        ) {
            return Err(ConfigError::Invalid(
                "kernelSourceHostPathType must be \"\", Directory or DirectoryOrCreate",
            ));
        }
        Ok(())
    }

    /// Whether the injector may touch pods in `namespace`.
    pub fn namespace_decision(&self, namespace: &str) -> NamespaceDecision {
        const SYSTEM: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
        if SYSTEM.contains(&namespace) {
            NamespaceDecision::System
        } else if namespace == self.webhook_namespace {
            NamespaceDecision::Webhook
        } else if self.exclude_namespaces.iter().any(|n| n == namespace) {
            NamespaceDecision::Excluded
        } else if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            NamespaceDecision::NotAllowed
        } else {
            NamespaceDecision::Allowed
        }
    }
}

/// The outcome of [`InjectConfig::namespace_decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceDecision {
    /// Injection may proceed.
    Allowed,
    /// A Kubernetes system namespace.
    System,
    /// The webhook's own namespace.
    Webhook,
    /// Listed in `excludeNamespaces`.
    Excluded,
    /// Not in the non-empty `namespaces` allow-list.
    NotAllowed,
}

#[cfg(test)]
mod tests {

    #[test]
    fn work_size_limits_are_quantities() {
        for good in ["2Gi", "500M", "1", "1.5Gi", "1e9"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "2 Gi", "2GB", "1..5", "-1Gi", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        assert!(InjectConfig::from_yaml("workSizeLimit: 2GB\n").is_err());
        assert_eq!(
            InjectConfig::from_yaml("workSizeLimit: 512Mi\n")
                .unwrap()
                .work_size_limit,
            "512Mi"
        );
    }

    use super::*;

    #[test]
    fn empty_yaml_gives_defaults() {
        assert_eq!(
            InjectConfig::from_yaml("").ok(),
            Some(InjectConfig::default())
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(InjectConfig::from_yaml("imagee: x").is_err());
    }

    #[test]
    fn partial_yaml_keeps_other_defaults() {
        let c = InjectConfig::from_yaml("profile: privileged\nnamespaces: [apps]\n")
            .unwrap_or_default();
        assert_eq!(c.profile, SecurityProfile::Privileged);
        assert_eq!(c.namespaces, vec!["apps".to_owned()]);
        assert_eq!(c.image, InjectConfig::default().image);
    }

    #[test]
    fn namespace_rules() {
        let mut c = InjectConfig::default();
        assert_eq!(
            c.namespace_decision("kube-system"),
            NamespaceDecision::System
        );
        assert_eq!(
            c.namespace_decision("kube-public"),
            NamespaceDecision::System
        );
        assert_eq!(
            c.namespace_decision("kube-node-lease"),
            NamespaceDecision::System
        );
        assert_eq!(
            c.namespace_decision("tracecar-system"),
            NamespaceDecision::Webhook
        );
        assert_eq!(c.namespace_decision("default"), NamespaceDecision::Allowed);
        c.namespaces = vec!["apps".into()];
        assert_eq!(
            c.namespace_decision("default"),
            NamespaceDecision::NotAllowed
        );
        assert_eq!(c.namespace_decision("apps"), NamespaceDecision::Allowed);
        c.exclude_namespaces = vec!["apps".into()];
        assert_eq!(c.namespace_decision("apps"), NamespaceDecision::Excluded);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(InjectConfig::from_yaml("imagePullPolicy: Sometimes").is_err());
        assert!(InjectConfig::from_yaml("socketPath: relative.sock").is_err());
        assert!(InjectConfig::from_yaml("profile: root").is_err());
    }
}
