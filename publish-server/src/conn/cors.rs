//! CORS on a stream's answer, which is written without the router's CORS
//! layer: the same origins are allowed.

use axum::http::{HeaderName, HeaderValue, header};

use crate::AppState;

/// The CORS response headers for a request from `origin`.
pub(super) fn cors_headers(
    state: &AppState,
    origin: Option<&str>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![(header::VARY, HeaderValue::from_static("origin"))];
    if let Some(origin) = origin
        && state.cors_allows(origin)
        && let Ok(value) = HeaderValue::from_str(origin)
    {
        headers.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
        // Origins are listed one by one, never `*`: cookies may go along.
        headers.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    headers
}
