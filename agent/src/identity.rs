//! The pod's Kubernetes identity, as the webhook hands it to the agent
//! (the Downward API for the pod's name, namespace and node; the pod as
//! admitted for its service and workload): written into continuous
//! profiles so that a backend can tell the pods apart.
//!
//! The keys are OpenTelemetry's resource conventions (`service.name`,
//! `k8s.pod.name`, …), so that the same pairs serve pprof comments and,
//! as they are, OTLP resource attributes.

/// Who the agent profiles. Every field is optional: an agent started by
/// hand knows none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The service (`app.kubernetes.io/name`, else `app`, else the
    /// workload's name).
    pub service: Option<String>,
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name.
    pub pod: Option<String>,
    /// The node it runs on.
    pub node: Option<String>,
    /// The app containers the sidecar serves, comma-separated.
    pub containers: Option<String>,
    /// The owning workload, `KIND/NAME` (`Deployment/web`).
    pub workload: Option<String>,
}

impl Identity {
    /// The identity as OpenTelemetry resource attributes, in a fixed
    /// order; the workload becomes `k8s.deployment.name` (or the
    /// statefulset's, daemonset's, job's, cronjob's, replicaset's), other
    /// kinds `k8s.workload.name` with `k8s.workload.kind`.
    pub fn attributes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |key: &str, value: &Option<String>| {
            if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                out.push((key.to_owned(), value.to_owned()));
            }
        };
        put("service.name", &self.service);
        put("k8s.namespace.name", &self.namespace);
        put("k8s.pod.name", &self.pod);
        put("k8s.container.name", &self.containers);
        put("k8s.node.name", &self.node);
        if let Some((kind, name)) = self.workload.as_deref().and_then(|w| w.split_once('/')) {
            match kind {
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" | "ReplicaSet" => {
                    put(
                        &format!("k8s.{}.name", kind.to_ascii_lowercase()),
                        &Some(name.to_owned()),
                    );
                }
                _ => {
                    put("k8s.workload.kind", &Some(kind.to_owned()));
                    put("k8s.workload.name", &Some(name.to_owned()));
                }
            }
        }
        out
    }

    /// The attributes as `key=value` lines (pprof comments).
    pub fn comments(&self) -> Vec<String> {
        self.attributes()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_follow_opentelemetry_conventions() {
        let identity = Identity {
            service: Some("web".into()),
            namespace: Some("shop".into()),
            pod: Some("web-7d9f-abcde".into()),
            node: Some("node-1".into()),
            containers: Some("app".into()),
            workload: Some("Deployment/web".into()),
        };
        assert_eq!(
            identity.comments(),
            [
                "service.name=web",
                "k8s.namespace.name=shop",
                "k8s.pod.name=web-7d9f-abcde",
                "k8s.container.name=app",
                "k8s.node.name=node-1",
                "k8s.deployment.name=web",
            ]
        );
        let other = Identity {
            workload: Some("Rollout/web".into()),
            pod: Some(" ".into()),
            ..Identity::default()
        };
        assert_eq!(
            other.comments(),
            ["k8s.workload.kind=Rollout", "k8s.workload.name=web"]
        );
        assert!(Identity::default().attributes().is_empty());
    }
}
