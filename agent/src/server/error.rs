//! OpenAI error objects: `{"error": {"message", "type", "param", "code"}}` with the HTTP status
//! that goes with them. Client mistakes are 4xx and say what to change; only failures of the
//! engine or the machine are 5xx.

use serde_json::{json, Value};

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `server_error`).
    pub kind: &'static str,
    /// The request field at fault, as a path (`messages[2].role`).
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, …).
    pub code: Option<&'static str>,
    /// What was wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed or asks for something out of range.
    pub fn invalid(param: Option<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            param,
            code: None,
            message: message.into(),
        }
    }

    /// 400 about `param`, with a code.
    pub fn invalid_code(
        param: Option<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            code: Some(code),
            ..ApiError::invalid(param, message)
        }
    }

    /// 401: no or a wrong API key.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: 401,
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            message: "missing or wrong API key: send `Authorization: Bearer KEY` with the key \
                      this server was started with"
                .into(),
        }
    }

    /// 404: no such model.
    pub fn unknown_model(asked: &str, known: &[String]) -> ApiError {
        ApiError {
            status: 404,
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
            message: format!(
                "the model `{asked}` does not exist here; this server has: {}",
                known.join(", ")
            ),
        }
    }

    /// 404 for a path the API does not have, 405 for a method it does not take there.
    pub fn no_route(status: u16, method: &str, path: &str) -> ApiError {
        ApiError {
            status,
            kind: "invalid_request_error",
            param: None,
            code: Some(if status == 405 {
                "method_not_allowed"
            } else {
                "unknown_url"
            }),
            message: format!(
                "{method} {path} is not part of this API: use POST /v1/chat/completions, \
                 GET /v1/models or GET /health"
            ),
        }
    }

    /// 403: a browser page from an origin the owner did not allow, or a `Host` that is not this
    /// loopback server (DNS rebinding).
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 403,
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
            message: message.into(),
        }
    }

    /// 415: the body is not declared as JSON.
    pub fn not_json(got: &str) -> ApiError {
        ApiError {
            status: 415,
            kind: "invalid_request_error",
            param: None,
            code: Some("unsupported_media_type"),
            message: format!(
                "the body is declared as {got:?}: send JSON with `Content-Type: application/json`"
            ),
        }
    }

    /// 400: the body could not be read (the client stopped sending, or bad framing).
    pub fn unreadable(why: impl std::fmt::Display) -> ApiError {
        ApiError::invalid(None, format!("the request body could not be read: {why}"))
    }

    /// 413: the body is over the server's limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: 413,
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
            message: format!(
                "the request body is over this server's limit of {limit} bytes \
                 (corral serve --max-body)"
            ),
        }
    }

    /// 503: too many requests are waiting for the engine.
    pub fn busy(waiting: usize) -> ApiError {
        ApiError {
            status: 503,
            kind: "server_error",
            param: None,
            code: Some("overloaded"),
            message: format!(
                "{waiting} requests are already waiting for the model: retry later \
                 (corral serve --queue raises the limit)"
            ),
        }
    }

    /// 500: the engine or the machine failed (never a client mistake).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            kind: "server_error",
            param: None,
            code: None,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}
