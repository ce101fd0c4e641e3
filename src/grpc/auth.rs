//! Bearer-token authentication with two scopes. The interceptor authenticates every call and
//! leaves the caller's [`Scope`] in the request; each handler states the scope it needs.

use std::sync::Arc;

use tonic::{Request, Status};

/// What a token may do. `Write` includes `Read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

use crate::config::Secret;

/// The accepted tokens, or none at all when authentication is off.
#[derive(Clone, Debug)]
pub enum Auth {
    Disabled,
    Tokens(Arc<Vec<(Secret, Scope)>>),
}

/// A malformed tokens file or variable.
#[derive(Debug, thiserror::Error)]
#[error("tokens line {line}: {message}")]
pub struct TokensError {
    pub line: usize,
    pub message: String,
}

impl Auth {
    /// Parses tokens written one per line (or comma-separated) as `read <token>` or
    /// `write <token>`; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut tokens = Vec::new();
        let entries = text.lines().flat_map(|line| line.split(',')).enumerate();
        for (index, entry) in entries {
            let entry = entry.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let error = |message: &str| TokensError {
                line: index + 1,
                message: message.to_owned(),
            };
            let (scope, token) = entry
                .split_once(char::is_whitespace)
                .ok_or_else(|| error("expected `<read|write> <token>`"))?;
            let scope = match scope {
                "read" => Scope::Read,
                "write" => Scope::Write,
                _ => return Err(error("scope must be read or write")),
            };
            let token = token.trim();
            if token.len() < 16 {
                return Err(error("token must be at least 16 characters"));
            }
            tokens.push((Secret::new(token), scope));
        }
        if tokens.is_empty() {
            return Err(TokensError {
                line: 0,
                message: "no tokens given".to_owned(),
            });
        }
        Ok(Auth::Tokens(Arc::new(tokens)))
    }

    /// The scope of the bearer token in `authorization`, if any token matches.
    fn scope_of(&self, header: Option<&str>) -> Result<Scope, Status> {
        let tokens = match self {
            Auth::Disabled => return Ok(Scope::Write),
            Auth::Tokens(tokens) => tokens,
        };
        let presented = header
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        // Compare against every token without stopping early, so timing does not reveal
        // which prefix matched.
        let mut found = None;
        for (token, scope) in tokens.iter() {
            if constant_time_eq(token.expose().as_bytes(), presented.as_bytes()) {
                found = Some(*scope);
            }
        }
        found.ok_or_else(|| Status::unauthenticated("invalid bearer token"))
    }

    /// The interceptor: authenticates the call and records its scope.
    pub fn intercept(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let scope = self.scope_of(header)?;
        request.extensions_mut().insert(scope);
        Ok(request)
    }
}

/// Fails with `PermissionDenied` unless the caller's token has `needed`.
pub fn require<T>(request: &Request<T>, needed: Scope) -> Result<(), Status> {
    match request.extensions().get::<Scope>() {
        Some(scope) if *scope >= needed => Ok(()),
        Some(_) => Err(Status::permission_denied(
            "this call needs a read-write token",
        )),
        None => Err(Status::unauthenticated("missing bearer token")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_rejects_bad_lines() {
        let auth =
            Auth::parse("# operators\nread reader-token-0123456\nwrite writer-token-0123456\n")
                .expect("valid");
        assert_eq!(
            auth.scope_of(Some("Bearer reader-token-0123456")).ok(),
            Some(Scope::Read)
        );
        assert_eq!(
            auth.scope_of(Some("Bearer writer-token-0123456")).ok(),
            Some(Scope::Write)
        );
        assert!(auth.scope_of(Some("Bearer writer-token-0123457")).is_err());
        assert!(auth.scope_of(Some("writer-token-0123456")).is_err());
        assert!(auth.scope_of(None).is_err());

        assert!(Auth::parse("admin x-0123456789abcdef").is_err());
        assert!(Auth::parse("write short").is_err());
        assert!(Auth::parse("# nothing").is_err());
        assert!(Auth::parse("read a-0123456789abcdef,write b-0123456789abcdef").is_ok());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
