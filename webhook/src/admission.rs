//! AdmissionReview in, AdmissionReview out. Maps requests to the pure
//! injector and its outcome to the wire format; holds no patch logic.
//!
//! The response is written with our own struct because kube-core 5
//! serializes `response.patch` as an array of numbers (kube-rs #1781), while
//! the API server expects a base64 string.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::Serialize;

use crate::inject::{Decision, Injector, PodContext, SkipReason};

/// What happened to one review, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A patch was returned.
    Injected,
    /// No patch, for a reason.
    Skipped(&'static str),
    /// An internal error; the pod was allowed unchanged (fail open).
    Error,
}

/// A parsed review could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an `admission.k8s.io/v1` AdmissionReview of a Pod.
    #[error("malformed AdmissionReview: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The review has no `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// Only `admission.k8s.io/v1` is served.
    #[error("unsupported AdmissionReview apiVersion {0:?}; only admission.k8s.io/v1 is served")]
    ApiVersion(String),
}

/// The response document sent back to the API server.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    api_version: &'static str,
    kind: &'static str,
    /// The response body.
    pub response: ResponseBody,
}

/// `AdmissionReview.response` in wire form.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseBody {
    /// Echoes the request uid.
    pub uid: String,
    /// Always true: tracecar never blocks a pod.
    pub allowed: bool,
    /// `JSONPatch` when `patch` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Messages the API server relays to the client.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Parses a request body.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<Pod>, ReviewError> {
    let review: AdmissionReview<Pod> =
        serde_json::from_slice(body).map_err(ReviewError::Malformed)?;
    if review.types.api_version != "admission.k8s.io/v1" {
        return Err(ReviewError::ApiVersion(review.types.api_version));
    }
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// Reviews one request. Never fails: internal errors allow the pod unchanged.
pub fn review(request: &AdmissionRequest<Pod>, injector: &Injector) -> (ReviewResponse, Outcome) {
    let mut body = ResponseBody {
        uid: request.uid.clone(),
        allowed: true,
        patch_type: None,
        patch: None,
        warnings: Vec::new(),
    };
    let is_pod_create = request.operation == Operation::Create
        && request.resource.group.is_empty()
        && request.resource.resource == "pods"
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty();
    let outcome = match (&request.object, is_pod_create) {
        (_, false) => Outcome::Skipped("not_pod_create"),
        (None, true) => {
            body.warnings.push(
                "tracecar: internal error: CREATE review without an object; pod allowed unchanged"
                    .to_owned(),
            );
            Outcome::Error
        }
        (Some(pod), true) => {
            // dryRun requests get the same patch: computing it has no side effects.
            let ctx = PodContext {
                namespace: request
                    .namespace
                    .as_deref()
                    .or(pod.metadata.namespace.as_deref())
                    .unwrap_or("default"),
                owner_kind: None,
            };
            match injector.decide(pod, ctx) {
                Ok(Decision::Skip { reason, warning }) => {
                    body.warnings.extend(warning);
                    Outcome::Skipped(SkipReason::label(reason))
                }
                Ok(Decision::Inject(plan)) => match patch_json(&plan.patch) {
                    Ok(json) => {
                        body.patch_type = Some("JSONPatch");
                        body.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
                        body.warnings.extend(plan.warnings);
                        Outcome::Injected
                    }
                    Err(e) => fail_open(&mut body, &e),
                },
                Err(e) => fail_open(&mut body, &e),
            }
        }
    };
    (
        ReviewResponse {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response: body,
        },
        outcome,
    )
}

fn fail_open(body: &mut ResponseBody, error: &dyn std::fmt::Display) -> Outcome {
    body.warnings.push(format!(
        "tracecar: internal error, pod allowed without the sidecar: {error}"
    ));
    Outcome::Error
}

fn patch_json(patch: &json_patch::Patch) -> Result<Vec<u8>, serde_json::Error> {
    // Sized for a typical patch, to avoid regrowing the buffer.
    let mut out = Vec::with_capacity(8 * 1024);
    serde_json::to_writer(&mut out, patch)?;
    Ok(out)
}
