//! The per-pod choices: annotations and config reconciled.

use super::facts::PodFacts;
use super::facts::shown;
use super::runtime::Runtime;
use std::collections::BTreeSet;

use tracecar_api::security::Features;

use crate::annotations::{self as ann};
use crate::config::{InjectConfig, SecurityProfile, SidecarMode};

/// The per-pod choices, after annotations and config are reconciled.
pub(super) struct Choices {
    pub(super) profile: SecurityProfile,
    pub(super) features: Features,
    pub(super) mode: SidecarMode,
    pub(super) runtime: Option<Runtime>,
    /// `None` means every app container.
    pub(super) containers: Option<BTreeSet<String>>,
    /// Continuous profiling's modes (`tracecar.dev/continuous`); empty
    /// for none.
    pub(super) continuous: Vec<&'static str>,
    /// The rules ConfigMap (`tracecar.dev/rules`), when its name is one.
    pub(super) rules: Option<String>,
}

impl Choices {
    /// Reads each annotation against the config; what cannot be honoured
    /// is a warning, and the config's choice stands.
    pub(super) fn read(
        facts: &PodFacts,
        config: &InjectConfig,
        warnings: &mut Vec<String>,
    ) -> Self {
        let features = features(facts, config, warnings);
        Self {
            profile: profile(facts, config, warnings),
            continuous: continuous(facts, features, warnings),
            rules: rules(facts, warnings),
            features,
            mode: mode(facts, config, warnings),
            runtime: runtime(facts, warnings),
            containers: containers(facts, warnings),
        }
    }

    pub(super) fn selects(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|set| set.contains(container))
    }
}

/// `tracecar.dev/profile`, where the config allows a per-pod one.
fn profile(facts: &PodFacts, config: &InjectConfig, warnings: &mut Vec<String>) -> SecurityProfile {
    match facts.profile.as_deref() {
        None => config.profile,
        Some(value) => match SecurityProfile::parse(value) {
            Some(p) if p == config.profile => p,
            Some(p) if config.allow_profile_override => p,
            Some(_) => {
                warnings.push(format!(
                    "tracecar: {} ignored: the injector config does not allow per-pod profiles; using {}",
                    ann::PROFILE,
                    config.profile.as_str()
                ));
                config.profile
            }
            None => {
                warnings.push(format!(
                    "tracecar: {}={} is not minimal|privileged; using {}",
                    ann::PROFILE,
                    shown(value),
                    config.profile.as_str()
                ));
                config.profile
            }
        },
    }
}

/// `tracecar.dev/features`, within what the config allows. An unknown
/// name is most likely a typo of a wanted feature: the pod gets the
/// config's features and a warning, rather than fewer than it asked for.
fn features(facts: &PodFacts, config: &InjectConfig, warnings: &mut Vec<String>) -> Features {
    match facts.features.as_deref().map(Features::parse) {
        None => config.default_features(),
        Some(Ok(features)) if !features.is_subset(config.allowed_features()) => {
            let kept = features.intersection(config.allowed_features());
            warnings.push(format!(
                "tracecar: {}={} asks for more than the injector config allows ({}); using {}",
                ann::FEATURES,
                features.list(),
                config.allowed_features().list(),
                if kept == Features::none() {
                    "none".to_owned()
                } else {
                    kept.list()
                }
            ));
            kept
        }
        Some(Ok(features)) => features,
        Some(Err(e)) => {
            warnings.push(format!(
                "tracecar: {}: {e}; using the config's features ({})",
                ann::FEATURES,
                config.default_features().list()
            ));
            config.default_features()
        }
    }
}

/// The modes `tracecar.dev/continuous` may name.
pub(super) const CONTINUOUS_MODES: [&str; 2] = ["cpu", "offcpu"];

/// `tracecar.dev/continuous`: the modes the agent profiles all the time.
/// A name it does not know is dropped with a warning (the others run);
/// without the `profile` feature, none runs.
/// `tracecar.dev/rules`: a ConfigMap's name, else a warning and none.
fn rules(facts: &PodFacts, warnings: &mut Vec<String>) -> Option<String> {
    let value = facts.rules.as_deref()?.trim();
    if crate::config::is_dns_subdomain(value) {
        Some(value.to_owned())
    } else {
        warnings.push(format!(
            "tracecar: {}={} is not a ConfigMap's name (lowercase letters, digits, '-' and '.'); no rules are mounted",
            ann::RULES,
            shown(value)
        ));
        None
    }
}

fn continuous(
    facts: &PodFacts,
    features: Features,
    warnings: &mut Vec<String>,
) -> Vec<&'static str> {
    let Some(value) = facts.continuous.as_deref() else {
        return Vec::new();
    };
    let mut modes = Vec::new();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match CONTINUOUS_MODES.iter().find(|m| **m == word) {
            Some(mode) if !modes.contains(mode) => modes.push(*mode),
            Some(_) => {}
            None => warnings.push(format!(
                "tracecar: {}: {} is not {}; left out",
                ann::CONTINUOUS,
                shown(word),
                CONTINUOUS_MODES.join("|")
            )),
        }
    }
    if !modes.is_empty() && !features.contains(tracecar_api::security::Feature::Profile) {
        warnings.push(format!(
            "tracecar: {} needs the profile feature, which this pod's agent does not have ({}); no continuous profiling",
            ann::CONTINUOUS,
            features.list()
        ));
        return Vec::new();
    }
    modes
}

/// `tracecar.dev/sidecar-mode`; a Job's pod gets a native sidecar so that
/// the Job can complete.
fn mode(facts: &PodFacts, config: &InjectConfig, warnings: &mut Vec<String>) -> SidecarMode {
    match facts.sidecar_mode.as_deref() {
        Some(value) => SidecarMode::parse(value).unwrap_or_else(|| {
            warnings.push(format!(
                "tracecar: {}={} is not container|native; using {}",
                ann::SIDECAR_MODE,
                shown(value),
                config.sidecar_mode.as_str()
            ));
            config.sidecar_mode
        }),
        None if facts.owned_by_job && config.sidecar_mode == SidecarMode::Container => {
            warnings.push(
                "tracecar: pod belongs to a Job: using a native sidecar so the Job can complete (needs Kubernetes 1.29+)".to_owned(),
            );
            SidecarMode::Native
        }
        None => config.sidecar_mode,
    }
}

/// `tracecar.dev/runtime`: a preset, if it names one.
fn runtime(facts: &PodFacts, warnings: &mut Vec<String>) -> Option<Runtime> {
    facts.runtime.as_deref().and_then(|value| {
        let runtime = super::runtime::preset(value);
        if runtime.is_none() {
            let presets: Vec<&str> = super::runtime::PRESETS.iter().map(|r| r.name()).collect();
            warnings.push(format!(
                "tracecar: {}={} is not {}; no runtime preset applied",
                ann::RUNTIME,
                shown(value),
                presets.join("|")
            ));
        }
        runtime
    })
}

/// `tracecar.dev/containers`: the app containers to prepare; `None` for
/// all of them.
fn containers(facts: &PodFacts, warnings: &mut Vec<String>) -> Option<BTreeSet<String>> {
    facts.containers_filter.as_deref().map(|list| {
        let wanted: BTreeSet<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for name in &wanted {
            if !facts.containers.iter().any(|c| &c.name == name) {
                warnings.push(format!(
                    "tracecar: {} names {}, which is not a container of this pod",
                    ann::CONTAINERS,
                    shown(name)
                ));
            }
        }
        wanted
    })
}
