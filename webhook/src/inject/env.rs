//! What the webhook adds to an app container's environment: its name
//! ([`tracecar_api::rules::CONTAINER_ENV`], for the rules' container
//! filter; the webhook's value, appended, so it wins over one the
//! container sets), and a runtime preset's variables, merged into the
//! container's: variables it lacks are added, options appended to ones it
//! sets, its own values kept otherwise.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::EnvVar;
use serde_json::Value;

use super::error::InjectError;
use super::facts::ContainerFacts;
use super::patch::{PatchBuilder, to_values};
use super::runtime::{EnvMerge, Runtime, preset_env};

pub(super) fn plan_env(
    b: &mut PatchBuilder,
    container_path: &[&str],
    container: &ContainerFacts,
    runtime: Option<Runtime>,
    warnings: &mut Vec<String>,
) -> Result<(), InjectError> {
    let mut new_vars = vec![EnvVar {
        name: tracecar_api::rules::CONTAINER_ENV.to_owned(),
        value: Some(container.name.clone()),
        ..EnvVar::default()
    }];
    for &(name, value, merge) in runtime.map(preset_env).unwrap_or_default() {
        let Some(existing) = container.preset_env.iter().find(|e| e.name == name) else {
            new_vars.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                ..EnvVar::default()
            });
            continue;
        };
        match merge {
            EnvMerge::KeepUser => {}
            EnvMerge::AppendOptions if existing.from_reference => warnings.push(format!(
                "tracecar: container {:?} sets {name} from a reference; add {value:?} to it yourself",
                container.name
            )),
            EnvMerge::AppendOptions => {
                let current = existing.value.as_deref().unwrap_or_default();
                let present: BTreeSet<&str> = current.split_whitespace().collect();
                let missing: Vec<&str> = value
                    .split_whitespace()
                    .filter(|opt| !present.contains(opt))
                    .collect();
                if !missing.is_empty() {
                    let merged = if current.trim().is_empty() {
                        missing.join(" ")
                    } else {
                        format!("{} {}", current.trim_end(), missing.join(" "))
                    };
                    let index = existing.index.to_string();
                    b.add(
                        &[container_path, &["env", &index, "value"]].concat(),
                        Value::String(merged),
                    );
                }
            }
        }
    }
    b.append_all(
        &[container_path, &["env"]].concat(),
        container.has_env,
        to_values("env var", &new_vars)?,
    );
    Ok(())
}
