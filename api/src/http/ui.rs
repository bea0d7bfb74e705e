//! The web UI (`GET /` and `GET /ui/{asset}`): one page and its script and style, built into the
//! binary from `api/ui/`. Nothing is fetched from elsewhere: the page calls the documented API
//! with the key the user signs in with (kept in the tab's session storage), and the Content
//! Security Policy lets it load only its own assets and talk only to this server.

use warp::http::{HeaderValue, StatusCode, header};

use super::Problem;

/// The page's policy: its own script, style and the charts it draws from the API's SVG (as
/// blob URLs); no inline script, no frames, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The assets: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../ui/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../ui/app.css")),
];

const PAGE: &str = include_str!("../../ui/index.html");

fn reply(content_type: &'static str, body: &'static str) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The assets change with the binary: a browser asks again each time (cheap: they are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: the page.
pub(crate) fn page() -> warp::reply::Response {
    reply("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/{asset}`: its script or style; 404 for any other name.
pub(crate) fn asset(name: &str) -> Result<warp::reply::Response, Problem> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| reply(content_type, body))
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found", format!("no asset {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // Every script and stylesheet the page names is one the server has, and none is
        // fetched from elsewhere (links within the page aside).
        for attr in ["src=\"", "href=\""] {
            for part in PAGE.split(attr).skip(1) {
                let url = part.split('"').next().unwrap_or_default();
                if url.starts_with('#') {
                    // A link within the page.
                    continue;
                }
                let name = url.strip_prefix("/ui/").unwrap_or_else(|| panic!("{url} is not one of /ui/"));
                assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{url} is not an asset");
            }
        }
        assert!(
            !PAGE.contains("<script>") && !PAGE.contains("onclick") && !PAGE.contains("onload"),
            "no inline script"
        );
        assert!(asset("app.js").is_ok() && asset("../Cargo.toml").is_err());
    }
}
