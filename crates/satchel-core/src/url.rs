//! Store URLs in messages: never their passwords.

/// A store URL fit for messages, logs and `Debug`: any `user:password@` and the values of secret parameters (`key=`,
/// `old_key=`, `password=`, …) replaced by `…`, whether or not the URL is well formed.
///
/// Stores that take a URL use this for every message that names it.
///
/// # Examples
///
/// ```
/// use satchel_core::redact_url;
///
/// assert_eq!(redact_url("redis://app:s3cret@cache:6379/0"), "redis://…@cache:6379/0");
/// assert_eq!(redact_url("cookie://?mode=signed&key=c2VjcmV0"), "cookie://?mode=signed&key=…");
/// ```
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.rfind('@') {
        Some(at) => {
            // Whatever stands between the scheme (if any) and the last `@` is user info.
            let start = base
                .find("://")
                .map(|i| i + 3)
                .or_else(|| base.find(':').map(|i| i + 1))
                .filter(|&start| start <= at)
                .unwrap_or(0);
            format!("{}…@{}", &base[..start], &base[at + 1..])
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_parameter(name) => format!("{name}=…"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Parameters whose values are secrets and never appear in messages.
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["key", "password", "pass", "secret", "token"]
        .iter()
        .any(|secret| name == *secret || name.ends_with(&format!("_{secret}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://user:secret@db/app"),
            "postgres://…@db/app"
        );
        assert_eq!(redact_url("memory://"), "memory://");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://:p@ss@host/0"), "redis://…@host/0");
        assert_eq!(redact_url("not a url"), "not a url");
        // Malformed URLs are echoed in errors too: still nothing secret.
        assert_eq!(redact_url("redis//:pw@host"), "redis//:…@host");
        assert_eq!(redact_url("user:pw@host"), "user:…@host");
        assert_eq!(
            redact_url("cookie?mode=signed&key=c2VjcmV0&old_key=b2xk"),
            "cookie?mode=signed&key=…&old_key=…"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1/?password=pw&prefix=a:"),
            "redis://127.0.0.1/?password=…&prefix=a:"
        );
    }
}
