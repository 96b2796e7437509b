//! The faces of Baton, embedded in the binary at compile time (nothing to deploy, nothing to
//! build): the demo help page (`/`), the customer widget (`/widget.js`, one script tag on any
//! page) and the agent console (`/console` with its script and style sheet). The files live in
//! `web/`.
//!
//! Every response carries a strong `ETag` (a hash of the file) and answers `If-None-Match` with
//! 304. The widget may be cached for a few minutes by the pages that embed it; the console and the
//! demo page are revalidated on every load so they never mix an old script with a new page.
//!
//! Browsers that accept gzip get each file compressed once, on first request, and kept: the
//! widget travels as about 10 KB instead of 32 KB to every page that embeds it. The compressed
//! copy has its own ETag (a strong tag names one representation), and every response says
//! `Vary: Accept-Encoding` so shared caches keep the two apart.

use std::io::Write;
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
    /// The strong tags of the plain and the gzipped representation, made once.
    etags: OnceLock<(String, String)>,
    gzipped: OnceLock<Vec<u8>>,
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
            etags: OnceLock::new(),
            gzipped: OnceLock::new(),
        }
    }

    fn gzipped(&self) -> &[u8] {
        self.gzipped.get_or_init(|| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder
                .write_all(self.body.as_bytes())
                .and_then(|()| encoder.finish())
                .expect("gzip into memory cannot fail")
        })
    }

    /// The file's tag (a hash of it) and the compressed copy's (the same with a suffix, so a cache
    /// never confuses the two).
    fn etags(&self) -> (&str, &str) {
        let (plain, gzipped) = self.etags.get_or_init(|| {
            let digest = hex::encode(Sha256::digest(self.body.as_bytes()));
            let hash = &digest[..20];
            (format!("\"{hash}\""), format!("\"{hash}-gz\""))
        });
        (plain, gzipped)
    }

    fn respond(&'static self, request: &HeaderMap) -> Response {
        let gzip = accepts_gzip(request);
        let (plain_etag, gzip_etag) = self.etags();
        let etag = if gzip { gzip_etag } else { plain_etag };
        // Either tag means the client holds this file's current content.
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == plain_etag || tag == gzip_etag || tag == "*");
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
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
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (StatusCode::OK, headers, self.gzipped()).into_response()
        } else {
            (StatusCode::OK, headers, self.body).into_response()
        }
    }
}

/// Whether `Accept-Encoding` allows gzip: listed (or `*`) without `q=0`. An explicit `gzip;q=0`
/// wins over `*`.
fn accepts_gzip(request: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for coding in request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
    {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let allowed = parts
            .filter_map(|param| param.trim().strip_prefix("q="))
            .all(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
        match name.as_str() {
            "gzip" | "x-gzip" => gzip = Some(allowed),
            "*" => any = Some(allowed),
            _ => {}
        }
    }
    gzip.or(any).unwrap_or(false)
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
        get_with(path, if_none_match, None).await
    }

    async fn get_with(
        path: &str,
        if_none_match: Option<&str>,
        accept_encoding: Option<&str>,
    ) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        if let Some(codings) = accept_encoding {
            request = request.header(header::ACCEPT_ENCODING, codings);
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

    #[tokio::test]
    async fn browsers_that_accept_gzip_get_the_same_file_compressed() {
        use std::io::Read;
        for path in ["/", "/widget.js", "/console", "/console.js", "/console.css"] {
            let plain = get(path, None).await;
            assert!(plain.headers().get("content-encoding").is_none(), "{path}");
            assert_eq!(header_of(&plain, "vary"), "accept-encoding");
            let plain_tag = header_of(&plain, "etag").to_string();
            let plain_body = axum::body::to_bytes(plain.into_body(), usize::MAX)
                .await
                .unwrap();

            let zipped = get_with(path, None, Some("br, gzip;q=0.8, deflate")).await;
            assert_eq!(zipped.status(), StatusCode::OK);
            assert_eq!(header_of(&zipped, "content-encoding"), "gzip", "{path}");
            assert_eq!(header_of(&zipped, "vary"), "accept-encoding");
            let zipped_tag = header_of(&zipped, "etag").to_string();
            assert_ne!(zipped_tag, plain_tag, "one tag per representation");
            let zipped_body = axum::body::to_bytes(zipped.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(
                zipped_body.len() * 2 < plain_body.len(),
                "{path} barely shrank"
            );
            let mut unzipped = Vec::new();
            flate2::read::GzDecoder::new(&zipped_body[..])
                .read_to_end(&mut unzipped)
                .unwrap();
            assert_eq!(unzipped, plain_body, "{path}");

            // Either tag revalidates, whichever representation the client holds.
            for tag in [&plain_tag, &zipped_tag] {
                let again = get_with(path, Some(tag), Some("gzip")).await;
                assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path} {tag}");
            }
        }
    }

    #[test]
    fn accept_encoding_is_read_as_browsers_and_proxies_send_it() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip, deflate, br, zstd"));
        assert!(accepts("GZIP"));
        assert!(accepts("br;q=1.0, gzip;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("identity"));
        assert!(!accepts("br"));
        assert!(!accepts("gzip;q=0"));
        assert!(
            !accepts("*, gzip;q=0"),
            "an explicit refusal wins over the wildcard"
        );
        assert!(!accepts("gzip;q=nonsense"));
        assert!(!accepts_gzip(&HeaderMap::new()));
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
