//! The one rendered-answer type: what every handler returns (content
//! type, file name, length, headers, and a body or a stream), and the one
//! place that turns it into an HTTP response. Header values are made
//! visible ASCII here, so a value an app controls (a runtime's error
//! message) never breaks a response.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiError;

/// An answer, before it is HTTP.
#[derive(Debug)]
pub struct Answer {
    status: axum::http::StatusCode,
    content_type: &'static str,
    file_name: Option<String>,
    length: Option<u64>,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Answer {
    /// `body`, whole.
    pub fn bytes(content_type: &'static str, body: Vec<u8>) -> Self {
        Self::stream(content_type, Body::from(body))
    }

    /// Answers with `status` instead of 200.
    pub fn status(mut self, status: axum::http::StatusCode) -> Self {
        self.status = status;
        self
    }

    /// A body that streams as the capture sends it.
    pub fn stream(content_type: &'static str, body: Body) -> Self {
        Self {
            status: axum::http::StatusCode::OK,
            content_type,
            file_name: None,
            length: None,
            headers: Vec::new(),
            body,
        }
    }

    /// `value` as JSON.
    pub fn json(value: &impl Serialize) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            ApiError::internal(
                format!("cannot serialize the answer: {e}"),
                "see the agent's log",
            )
        })?;
        Ok(Self::bytes("application/json", body))
    }

    /// Offered for saving as `name` (`Content-Disposition: attachment`).
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = Some(name.into());
        self
    }

    /// The body's length, when a stream's is known before it is sent.
    pub fn length(mut self, bytes: u64) -> Self {
        self.length = Some(bytes);
        self
    }

    /// One more header.
    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// `value` with every character that is not visible ASCII made a space
/// (and the ends trimmed): always a valid header value.
fn visible(value: &str) -> HeaderValue {
    let clean: String = value
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    HeaderValue::from_str(clean.trim()).unwrap_or(HeaderValue::from_static(""))
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = self.body.into_response();
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if let Some(length) = self.length {
            headers.insert(header::CONTENT_LENGTH, length.into());
        }
        if let Some(name) = self.file_name {
            let name = name.replace(['"', '\\'], "_");
            headers.insert(
                header::CONTENT_DISPOSITION,
                visible(&format!("attachment; filename=\"{name}\"")),
            );
        }
        for (name, value) in self.headers {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => {
                    headers.insert(name, visible(&value));
                }
                Err(_) => tracing::error!(name, "not a header name; left out"),
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_made_safe_and_files_named() {
        let response = Answer::bytes("application/octet-stream", b"core".to_vec())
            .file_name("core.\"7\"")
            .length(4)
            .header("x-tracecar-dump-fallback", "port:\r\nrefused\u{7f} é")
            .into_response();
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(h[header::CONTENT_LENGTH], "4");
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "attachment; filename=\"core._7_\""
        );
        assert_eq!(h["x-tracecar-dump-fallback"], "port:  refused");
    }

    #[test]
    fn json_answers_are_json() {
        let response = Answer::json(&serde_json::json!({"a": 1}))
            .expect("serializable")
            .into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
