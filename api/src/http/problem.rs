//! [`Problem`]: every HTTP error, as RFC 9457 `application/problem+json` with a stable `type`
//! (`https://posledger.dev/problems/<kind>`).

use app::{Class, Failure};
use serde_json::{Value, json};
use warp::Reply;
use warp::http::StatusCode;

/// A problem, as RFC 9457 `application/problem+json`.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable kind: the `type` is `https://posledger.dev/problems/<kind>`.
    pub kind: String,
    /// Human-readable summary of the kind.
    pub title: &'static str,
    /// What happened here.
    pub detail: String,
    /// The offending field, when there is one.
    pub field: Option<String>,
    /// Every offending record, for a body refused for its records.
    pub errors: Option<Box<Value>>,
}

impl warp::reject::Reject for Problem {}

impl Problem {
    /// A problem of a status, a kind and a title.
    pub fn new(status: StatusCode, kind: &str, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, kind: kind.to_owned(), title, detail: detail.into(), field: None, errors: None }
    }

    /// Names the offending field.
    pub fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    /// No valid key.
    pub fn unauthorized() -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", "a valid bearer API key is required")
    }

    /// The key's role may not.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// A malformed request.
    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    /// A bug.
    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail)
    }

    /// The problem as a response; 429 and 503 tell the client when to come back.
    pub fn reply(&self) -> warp::reply::Response {
        let retry = matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE);
        let mut body = json!({
            "type": format!("https://posledger.dev/problems/{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        if let Some(errors) = &self.errors {
            body["errors"] = errors.as_ref().clone();
        }
        let mut response = warp::reply::with_status(body.to_string(), self.status).into_response();
        response
            .headers_mut()
            .insert(warp::http::header::CONTENT_TYPE, warp::http::HeaderValue::from_static("application/problem+json"));
        if retry {
            response.headers_mut().insert("retry-after", warp::http::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<Failure> for Problem {
    fn from(f: Failure) -> Problem {
        let (status, title) = match f.class {
            Class::Invalid => (StatusCode::BAD_REQUEST, "Bad request"),
            Class::Refused => (StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable"),
            Class::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
            Class::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            Class::Conflict => (StatusCode::CONFLICT, "Conflict"),
            Class::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
            Class::Busy => (StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
            Class::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable"),
            Class::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        };
        let errors = (!f.errors.is_empty()).then(|| {
            Box::new(Value::Array(
                f.errors.iter().map(|e| json!({"record": e.record, "field": e.field, "reason": e.reason})).collect(),
            ))
        });
        Problem { status, kind: f.code, title, detail: f.message, field: f.field, errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_problems_carry_retry_after() {
        // 429 and 503 tell the client when to come back.
        let p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too many requests", "x");
        assert_eq!(p.reply().headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert!(Problem::bad_request("x", "y").reply().headers().get("retry-after").is_none());
    }

    #[test]
    fn a_failure_keeps_its_code_field_and_records() {
        // The use case's stable code becomes the problem's type; the class its status.
        let mut f = Failure::new(Class::Refused, "invalid_record", "bad").field("/0/amount");
        f.errors.push(app::failure::RecordError { record: 1, field: Some("amount".into()), reason: "r".into() });
        let p = Problem::from(f);
        assert_eq!(
            (p.status, p.kind.as_str(), p.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_record", Some("/0/amount"))
        );
        assert_eq!(p.errors.expect("errors")[0]["record"], 1);
    }
}
