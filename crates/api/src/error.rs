//! Every error the API answers, with dstack's status code and body, in one table.
//!
//! dstack's client turns a 400 with exactly one `{msg, code}` detail and a known `code` into the
//! matching exception and shows `msg`; so a detail carries only `msg`, `code` and optionally
//! `fields`. A missing named entity is a 400 `resource_not_exists` (the CLI polls on it); only
//! an unknown project or path is a 404.

use serde_json::{Value, json};

/// dstack's `ServerClientErrorCode`: the `code` of a 400 detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Error,
    ResourceExists,
    ResourceNotExists,
    InvalidCredentials,
    BackendNotAvailable,
    RepoDoesNotExist,
    GatewayError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Error => "error",
            ErrorCode::ResourceExists => "resource_exists",
            ErrorCode::ResourceNotExists => "resource_not_exists",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::BackendNotAvailable => "backend_not_available",
            ErrorCode::RepoDoesNotExist => "repo_does_not_exist",
            ErrorCode::GatewayError => "gateway_error",
        }
    }
}

/// One item of a 422 answer, as pydantic/FastAPI report it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationDetail {
    /// pydantic's error type: `missing`, `extra_forbidden`, `string_type`, `json_invalid`, …
    pub kind: String,
    /// `["body", "field", 0, …]`.
    pub loc: Vec<Value>,
    pub msg: String,
    /// The offending input.
    pub input: Value,
    pub ctx: Option<Value>,
}

/// An API error; [`ApiError::status`] and [`ApiError::body`] give the response.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400 `{"detail":[{"msg","code"}]}`: the request cannot be served as asked.
    Client { code: ErrorCode, msg: String },
    /// 400 for an `X-API-VERSION` header that is not a version (`code: null`).
    BadVersionHeader { msg: String },
    /// 401: no credentials.
    NotAuthenticated,
    /// 403: a token that matches no user.
    InvalidToken,
    /// 403 from a permission check: `{"detail":{"msg","code":null}}`.
    Forbidden { msg: String },
    /// 403 raised by a handler itself (dstack's `ForbiddenError`): the body is not wrapped in
    /// `detail`, `{"msg","code":null}`.
    ForbiddenAction { msg: String },
    /// 404: an unknown project.
    ProjectNotFound,
    /// 404: an unknown path.
    NoRoute,
    /// 405: a known path with another method.
    MethodNotAllowed,
    /// 413: a body over the limit.
    PayloadTooLarge { limit_bytes: usize },
    /// 422: a body that is not the expected JSON (FastAPI's validation shape).
    Validation(Box<ValidationDetail>),
    /// 500: a bug; details are logged, never sent.
    Internal,
}

impl ApiError {
    /// A 400 with code `error` and a message that says what to change.
    pub fn error(msg: impl Into<String>) -> ApiError {
        ApiError::Client { code: ErrorCode::Error, msg: msg.into() }
    }

    /// A 400 `resource_exists` with dstack's default message.
    pub fn resource_exists() -> ApiError {
        ApiError::Client { code: ErrorCode::ResourceExists, msg: "Resource exists".to_owned() }
    }

    /// A 400 `resource_not_exists` (`Run not found`, `Resource not found`, …).
    pub fn not_exists(msg: impl Into<String>) -> ApiError {
        ApiError::Client { code: ErrorCode::ResourceNotExists, msg: msg.into() }
    }

    pub fn forbidden() -> ApiError {
        ApiError::Forbidden { msg: "Access denied".to_owned() }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::Client { .. } | ApiError::BadVersionHeader { .. } => 400,
            ApiError::NotAuthenticated => 401,
            ApiError::InvalidToken | ApiError::Forbidden { .. } | ApiError::ForbiddenAction { .. } => 403,
            ApiError::ProjectNotFound | ApiError::NoRoute => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::Validation { .. } => 422,
            ApiError::Internal => 500,
        }
    }

    pub fn body(&self) -> Value {
        match self {
            ApiError::Client { code, msg } => {
                json!({"detail": [{"msg": msg, "code": code.as_str()}]})
            }
            ApiError::BadVersionHeader { msg } => json!({"detail": [{"msg": msg, "code": null}]}),
            ApiError::NotAuthenticated => json!({"detail": "Not authenticated"}),
            ApiError::InvalidToken => json!({"detail": {"msg": "Invalid token", "code": null}}),
            ApiError::Forbidden { msg } => json!({"detail": {"msg": msg, "code": null}}),
            ApiError::ForbiddenAction { msg } => json!({"msg": msg, "code": null}),
            ApiError::ProjectNotFound => json!({"detail": {"msg": "Not found", "code": null}}),
            ApiError::NoRoute => json!({"detail": "Not Found"}),
            ApiError::MethodNotAllowed => json!({"detail": "Method Not Allowed"}),
            ApiError::PayloadTooLarge { limit_bytes } => {
                json!({"detail": format!("Request body is larger than {limit_bytes} bytes")})
            }
            ApiError::Validation(detail) => {
                let mut item =
                    json!({"type": detail.kind, "loc": detail.loc, "msg": detail.msg, "input": detail.input});
                if let Some(ctx) = &detail.ctx {
                    item["ctx"] = ctx.clone();
                }
                json!({"detail": [item]})
            }
            ApiError::Internal => json!({"detail": "Internal Server Error"}),
        }
    }

    /// The message a person reads (for logs and our own CLI).
    pub fn message(&self) -> String {
        match self {
            ApiError::Client { msg, .. }
            | ApiError::BadVersionHeader { msg }
            | ApiError::Forbidden { msg } => msg.clone(),
            ApiError::Validation(detail) => {
                let loc: Vec<String> = detail
                    .loc
                    .iter()
                    .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                    .collect();
                format!("{}: {}", loc.join("."), detail.msg)
            }
            other => other.body()["detail"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| other.body()["detail"]["msg"].as_str().unwrap_or("error").to_owned()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_dstacks_contract() {
        assert_eq!(
            ApiError::not_exists("Run not found").body().to_string(),
            r#"{"detail":[{"msg":"Run not found","code":"resource_not_exists"}]}"#
        );
        assert_eq!(ApiError::resource_exists().status(), 400);
        assert_eq!(
            ApiError::InvalidToken.body().to_string(),
            r#"{"detail":{"msg":"Invalid token","code":null}}"#
        );
        assert_eq!(ApiError::ProjectNotFound.status(), 404);
        assert_eq!(ApiError::NoRoute.body().to_string(), r#"{"detail":"Not Found"}"#);
        assert_eq!(ApiError::forbidden().message(), "Access denied");
        assert_eq!(ApiError::NotAuthenticated.message(), "Not authenticated");
    }
}
