//! The one extractor every endpoint with parameters reads its request
//! through: the query string decoded into the endpoint's typed request
//! (`tracecar_api::request`), unknown or repeated names refused as a 400
//! that lists the names the endpoint takes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tracecar_api::request::Request;

use super::ApiError;

/// An endpoint's typed request, read from the query string.
#[derive(Debug)]
pub(super) struct Params<R>(pub R);

impl<R, S> FromRequestParts<S> for Params<R>
where
    R: Request + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(Self(crate::params::decode(parts.uri.query())?))
    }
}
