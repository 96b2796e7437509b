//! The faces of Baton, embedded in the binary at compile time (nothing to deploy, nothing to
//! build): the demo help page (`/`), the customer widget (`/widget.js`, one script tag on any
//! page) and the agent console (`/console` with its script and style sheet). The files live in
//! `web/`.
//!
//! Every response carries a strong `ETag` (a hash of the file) and answers `If-None-Match` with
//! 304. The widget may be cached for a few minutes by the pages that embed it; the console and the
//! demo page are revalidated on every load so they never mix an old script with a new page.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// Our own pages: scripts and styles from this origin only, sockets back to it, no framing.
const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

struct Asset {
    body: &'static str,
    content_type: &'static str,
    cache_control: &'static str,
    /// Headers beyond the common ones (security policy, cross-origin loading).
    extra: &'static [(&'static str, &'static str)],
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(
        body: &'static str,
        content_type: &'static str,
        cache_control: &'static str,
        extra: &'static [(&'static str, &'static str)],
    ) -> Self {
        Self {
            body,
            content_type,
            cache_control,
            extra,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let digest = hex::encode(Sha256::digest(self.body.as_bytes()));
            format!("\"{}\"", &digest[..20])
        })
    }

    fn respond(&'static self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == etag || tag == "*");
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(self.cache_control),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        for (name, value) in self.extra {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        (StatusCode::OK, headers, self.body).into_response()
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const REVALIDATE: &str = "no-cache";

static INDEX: Asset = Asset::new(
    include_str!("../../web/index.html"),
    HTML,
    REVALIDATE,
    &[("referrer-policy", "strict-origin-when-cross-origin")],
);
static WIDGET: Asset = Asset::new(
    include_str!("../../web/widget.js"),
    JS,
    // Pages that embed the widget keep it for five minutes, then revalidate (304 when unchanged).
    "public, max-age=300",
    // Loadable from pages that isolate themselves (Cross-Origin-Embedder-Policy).
    &[("cross-origin-resource-policy", "cross-origin")],
);
static CONSOLE: Asset = Asset::new(
    include_str!("../../web/console.html"),
    HTML,
    REVALIDATE,
    &[
        ("content-security-policy", CONSOLE_CSP),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ],
);
static CONSOLE_JS: Asset = Asset::new(include_str!("../../web/console.js"), JS, REVALIDATE, &[]);
static CONSOLE_CSS: Asset = Asset::new(include_str!("../../web/console.css"), CSS, REVALIDATE, &[]);

/// The static routes. They sit beside `/healthz`, outside the API's request timeout and
/// concurrency limit: serving a compiled-in string costs nothing.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.respond(&h) }))
        .route(
            "/widget.js",
            get(|h: HeaderMap| async move { WIDGET.respond(&h) }),
        )
        .route(
            "/console",
            get(|h: HeaderMap| async move { CONSOLE.respond(&h) }),
        )
        .route(
            "/console.js",
            get(|h: HeaderMap| async move { CONSOLE_JS.respond(&h) }),
        )
        .route(
            "/console.css",
            get(|h: HeaderMap| async move { CONSOLE_CSS.respond(&h) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        routes::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of<'a>(response: &'a Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn every_face_is_served_with_its_type_and_cache_policy() {
        for (path, kind, cache) in [
            ("/", "text/html", "no-cache"),
            ("/widget.js", "text/javascript", "public, max-age=300"),
            ("/console", "text/html", "no-cache"),
            ("/console.js", "text/javascript", "no-cache"),
            ("/console.css", "text/css", "no-cache"),
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(
                header_of(&response, "content-type").starts_with(kind),
                "{path}"
            );
            assert_eq!(header_of(&response, "cache-control"), cache, "{path}");
            assert_eq!(header_of(&response, "x-content-type-options"), "nosniff");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(body.len() > 500, "{path} is suspiciously small");
        }
        let console = get("/console", None).await;
        assert!(header_of(&console, "content-security-policy").contains("frame-ancestors 'none'"));
        assert_eq!(get("/nope.js", None).await.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_known_etag_gets_304_and_a_stale_one_the_file() {
        let first = get("/widget.js", None).await;
        let etag = header_of(&first, "etag").to_string();
        assert!(etag.starts_with('"') && etag.len() == 22, "{etag}");
        let again = get("/widget.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&again, "etag"), etag);
        assert!(axum::body::to_bytes(again.into_body(), usize::MAX)
            .await
            .unwrap()
            .is_empty());
        let listed = get("/widget.js", Some(&format!("\"old\", W/{etag}"))).await;
        assert_eq!(listed.status(), StatusCode::NOT_MODIFIED);
        let stale = get("/widget.js", Some("\"0123\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
        // Each file has its own tag.
        let console = get("/console.js", None).await;
        assert_ne!(header_of(&console, "etag"), etag);
    }

    #[test]
    fn the_pages_load_their_own_scripts() {
        assert!(INDEX.body.contains("src=\"/widget.js\""));
        assert!(CONSOLE.body.contains("src=\"/console.js\""));
        assert!(CONSOLE.body.contains("href=\"/console.css\""));
        // The console's policy forbids inline code: the page must not rely on any.
        assert!(!CONSOLE.body.contains("<script>"));
        assert!(!CONSOLE.body.contains("style=\""));
        assert!(!CONSOLE.body.contains(" onclick="));
    }
}
