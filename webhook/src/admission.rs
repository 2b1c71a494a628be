//! AdmissionReview in, AdmissionReview out. Maps requests to the pure
//! injector and its outcome to the wire format; holds no patch logic.
//!
//! The response is written with our own struct because kube-core 5
//! serializes `response.patch` as an array of numbers (kube-rs #1781), while
//! the API server expects a base64 string.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::inject::{Decision, InjectError, Injector, PodContext, PodFacts, PodSecurityLevel};

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
    /// Base64 of the JSON Patch document, pre-rendered as a JSON string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Box<RawValue>>,
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

/// Reviews admission requests with one [`Injector`], caching rendered
/// decisions by [`PodFacts`]: the replicas of a workload have equal facts,
/// so after the first pod the patch is reused instead of rebuilt.
#[derive(Debug)]
pub struct Reviewer {
    injector: Injector,
    cache: Mutex<Cache>,
    cache_capacity: usize,
}

/// Rendered decisions by the facts they were made from, and the bytes
/// they hold.
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<PodFacts, Arc<Rendered>>,
    bytes: usize,
}

/// The facts of one pod that a decision may be cached under, at most in
/// bytes: a Deployment's replicas have a few hundred bytes of them. The
/// pod is not validated when it is reviewed (mutating admission comes
/// first), so one can carry megabytes in an annotation; its decision is
/// made, and not kept.
pub const CACHED_FACTS_BYTES: usize = 16 << 10;
/// All the cache holds at most, in bytes (the webhook's memory limit is
/// 64 MiB); it is emptied when a new decision would pass it.
pub const CACHE_BYTES: usize = 4 << 20;

/// A decision rendered for the wire.
#[derive(Debug)]
struct Rendered {
    outcome: Outcome,
    /// The base64 patch as a JSON string literal.
    patch: Option<Box<RawValue>>,
    warnings: Vec<String>,
}

impl Reviewer {
    /// A reviewer caching up to `cache_capacity` decisions (0 disables the
    /// cache) and [`CACHE_BYTES`]. The cache is emptied when full, which
    /// keeps it bounded without bookkeeping on every hit.
    pub fn new(injector: Injector, cache_capacity: usize) -> Self {
        Self {
            injector,
            cache: Mutex::new(Cache::default()),
            cache_capacity,
        }
    }

    /// Decisions cached, and the bytes they hold.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.lock_cache();
        (cache.entries.len(), cache.bytes)
    }

    /// Reviews one request. Never fails: internal errors allow the pod
    /// unchanged.
    pub fn review(&self, request: &AdmissionRequest<Pod>) -> (ReviewResponse, Outcome) {
        self.review_in(request, None)
    }

    /// [`Self::review`] of a pod whose namespace enforces `pod_security`
    /// (the review came through that level's webhook entry).
    pub fn review_in(
        &self,
        request: &AdmissionRequest<Pod>,
        pod_security: Option<PodSecurityLevel>,
    ) -> (ReviewResponse, Outcome) {
        let is_pod_create = request.operation == Operation::Create
            && request.resource.group.is_empty()
            && request.resource.resource == "pods"
            && request
                .sub_resource
                .as_deref()
                .unwrap_or_default()
                .is_empty();
        let rendered = match (&request.object, is_pod_create) {
            (_, false) => Ok(Arc::new(Rendered {
                outcome: Outcome::Skipped("not_pod_create"),
                patch: None,
                warnings: Vec::new(),
            })),
            (None, true) => Err("CREATE review without an object".to_owned()),
            (Some(pod), true) => {
                // dryRun requests get the same patch: computing it has no side effects.
                let ctx = PodContext {
                    namespace: request
                        .namespace
                        .as_deref()
                        .or(pod.metadata.namespace.as_deref())
                        .unwrap_or("default"),
                    owner_kind: None,
                    pod_security,
                };
                self.rendered(PodFacts::observe(pod, ctx))
            }
        };
        let (outcome, patch, warnings) = match rendered {
            Ok(r) => (r.outcome.clone(), r.patch.clone(), r.warnings.clone()),
            Err(error) => (
                Outcome::Error,
                None,
                vec![format!(
                    "tracecar: internal error, pod allowed without the sidecar: {error}"
                )],
            ),
        };
        let body = ResponseBody {
            uid: request.uid.clone(),
            allowed: true,
            patch_type: patch.is_some().then_some("JSONPatch"),
            patch,
            warnings,
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

    fn rendered(&self, facts: PodFacts) -> Result<Arc<Rendered>, String> {
        let facts_bytes = facts.retained_bytes();
        let cacheable = self.cache_capacity > 0 && facts_bytes <= CACHED_FACTS_BYTES;
        if cacheable && let Some(hit) = self.lock_cache().entries.get(&facts) {
            return Ok(hit.clone());
        }
        let rendered = Arc::new(render(self.injector.plan(&facts))?);
        if cacheable {
            // What the entry keeps: the facts (twice: the map's key and
            // its hash), the patch and the warnings.
            let bytes = 2 * facts_bytes
                + rendered.patch.as_ref().map_or(0, |p| p.get().len())
                + rendered.warnings.iter().map(String::len).sum::<usize>()
                + 128;
            let mut cache = self.lock_cache();
            if cache.entries.len() >= self.cache_capacity || cache.bytes + bytes > CACHE_BYTES {
                cache.entries = HashMap::new();
                cache.bytes = 0;
            }
            if cache.entries.insert(facts, rendered.clone()).is_none() {
                cache.bytes += bytes;
            }
        }
        Ok(rendered)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave a map half-updated in
        // a way that matters here, so a poisoned lock is still usable.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn render(decision: Result<Decision, InjectError>) -> Result<Rendered, String> {
    match decision.map_err(|e| e.to_string())? {
        Decision::Skip { reason, warning } => Ok(Rendered {
            outcome: Outcome::Skipped(reason.label()),
            patch: None,
            warnings: warning.into_iter().collect(),
        }),
        Decision::Inject(plan) => Ok(Rendered {
            outcome: Outcome::Injected,
            patch: Some(encoded(&plan.patch)?),
            warnings: plan.warnings,
        }),
        Decision::Decline {
            reason,
            warning,
            patch,
        } => Ok(Rendered {
            outcome: Outcome::Skipped(reason.label()),
            patch: Some(encoded(&patch)?),
            warnings: vec![warning],
        }),
    }
}

/// A patch as the AdmissionResponse carries it: base64 of its JSON.
fn encoded(patch: &json_patch::Patch) -> Result<Box<RawValue>, String> {
    let json = patch_json(patch).map_err(|e| e.to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(json);
    let literal = serde_json::to_string(&b64).map_err(|e| e.to_string())?;
    RawValue::from_string(literal).map_err(|e| e.to_string())
}

fn patch_json(patch: &json_patch::Patch) -> Result<Vec<u8>, serde_json::Error> {
    // Sized for a typical patch, to avoid regrowing the buffer.
    let mut out = Vec::with_capacity(8 * 1024);
    serde_json::to_writer(&mut out, patch)?;
    Ok(out)
}
