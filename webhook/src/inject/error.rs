//! Why a patch could not be built.

/// Why a decision could not be made. The webhook fails open on these.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The pod has no `spec`.
    #[error("pod has no spec")]
    MissingSpec,
    /// A generated object could not be turned into JSON.
    #[error("cannot serialize generated {what}: {source}")]
    Serialize {
        /// Which object.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}
