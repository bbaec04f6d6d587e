//! The session cookie: its settings, and reading and writing it on the hot path.

use std::fmt::Write as _;
use std::time::Duration;

use http::HeaderValue;
use http::header::{COOKIE, HeaderMap};

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent only on same-site requests, including none of the top-level navigations from
    /// other sites.
    Strict,
    /// Sent on same-site requests and top-level navigations (the default: links into your site
    /// keep the user logged in, cross-site form posts do not carry the session).
    #[default]
    Lax,
    /// Sent on every request, cross-site included. Requires `Secure`.
    None,
}

/// Settings for the session cookie, with secure defaults.
///
/// | setting | default |
/// |---|---|
/// | name | `id` (says nothing about the framework behind it) |
/// | `Path` | `/` |
/// | `Domain` | none (host-only) |
/// | `Secure` | on |
/// | `HttpOnly` | on |
/// | `SameSite` | `Lax` |
/// | `__Host-` prefix | off |
///
/// Settings are checked when handed to
/// [`SessionLayer::with_cookie`](crate::SessionLayer::with_cookie).
///
/// # Examples
///
/// ```
/// use satchel::{CookieSettings, SameSite};
///
/// // The strictest setup for a site served over HTTPS on one host:
/// let cookie = CookieSettings::new()
///     .with_name("session")
///     .with_host_prefix(true)
///     .with_same_site(SameSite::Strict);
/// assert_eq!(cookie.cookie_name(), "__Host-session");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    name: String,
    path: String,
    domain: Option<String>,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    host_prefix: bool,
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// Why cookie settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// The name is empty or has characters a cookie name may not have.
    #[error("cookie name {0:?} is not a valid token: use letters, digits and !#$%&'*+-.^_`|~")]
    InvalidName(String),
    /// The path or domain has characters (`;`, control characters) that would break the header.
    #[error(
        "cookie {0} contains ';', non-ASCII or control characters, which would break the header"
    )]
    InvalidAttribute(&'static str),
    /// `__Host-` cookies must be `Secure`, have `Path=/` and no `Domain`.
    #[error(
        "a __Host- cookie must be Secure, with Path=/ and no Domain; remove the domain or the prefix"
    )]
    HostPrefixRequirements,
    /// `SameSite=None` cookies must be `Secure`.
    #[error("SameSite=None requires Secure; browsers reject the cookie otherwise")]
    SameSiteNoneRequiresSecure,
}

impl CookieSettings {
    /// The defaults in the table above.
    pub fn new() -> Self {
        Self {
            name: "id".to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            host_prefix: false,
        }
    }

    /// Sets the cookie name (default `id`), without any `__Host-` prefix.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the `Path` (default `/`).
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the `Domain` (default: none, so the cookie goes to this host only). Setting a
    /// domain shares the session with every subdomain, which also lets any of them set it.
    #[must_use]
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sets `Secure` (default on: the browser sends the cookie over HTTPS only).
    ///
    /// # Security
    ///
    /// Turn it off only for local development over plain HTTP. Without `Secure`, anyone on the
    /// network path can read the cookie and take over the session.
    #[must_use]
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Sets `HttpOnly` (default on: page scripts cannot read the cookie).
    ///
    /// # Security
    ///
    /// Turning it off lets any script injected into your pages (XSS) steal the session.
    #[must_use]
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// Sets `SameSite` (default [`SameSite::Lax`]).
    #[must_use]
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Prefixes the name with `__Host-` (default off). Browsers then accept the cookie only if
    /// it is `Secure`, has `Path=/` and no `Domain`, so no subdomain or plain-HTTP page can
    /// plant a session cookie (a fixation defence).
    #[must_use]
    pub fn with_host_prefix(mut self, host_prefix: bool) -> Self {
        self.host_prefix = host_prefix;
        self
    }

    /// The full cookie name, prefix included.
    pub fn cookie_name(&self) -> String {
        if self.host_prefix {
            format!("__Host-{}", self.name)
        } else {
            self.name.clone()
        }
    }

    /// Checks the settings for values a browser would reject or that would break the header.
    ///
    /// # Errors
    ///
    /// A [`CookieError`] naming the first problem.
    pub fn validate(&self) -> Result<(), CookieError> {
        let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.name.is_empty() || !self.name.chars().all(token_char) {
            return Err(CookieError::InvalidName(self.name.clone()));
        }
        let attribute_ok = |value: &str| {
            value
                .chars()
                .all(|c| !c.is_control() && c != ';' && c.is_ascii())
        };
        if self.path.is_empty() || !attribute_ok(&self.path) {
            return Err(CookieError::InvalidAttribute("path"));
        }
        if self
            .domain
            .as_deref()
            .is_some_and(|domain| domain.is_empty() || !attribute_ok(domain))
        {
            return Err(CookieError::InvalidAttribute("domain"));
        }
        if self.host_prefix && (!self.secure || self.path != "/" || self.domain.is_some()) {
            return Err(CookieError::HostPrefixRequirements);
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(CookieError::SameSiteNoneRequiresSecure);
        }
        Ok(())
    }

    /// Pre-renders the parts of every `Set-Cookie` header that never change.
    pub(crate) fn render(&self) -> RenderedCookie {
        let mut attributes = String::new();
        // Writing to a String cannot fail.
        let _ = write!(attributes, "; Path={}", self.path);
        if let Some(domain) = &self.domain {
            let _ = write!(attributes, "; Domain={domain}");
        }
        if self.http_only {
            attributes.push_str("; HttpOnly");
        }
        if self.secure {
            attributes.push_str("; Secure");
        }
        attributes.push_str(match self.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        RenderedCookie {
            name: self.cookie_name(),
            attributes,
        }
    }
}

/// The cookie name and fixed attributes, rendered once per layer.
#[derive(Debug, Clone)]
pub(crate) struct RenderedCookie {
    pub(crate) name: String,
    attributes: String,
}

impl RenderedCookie {
    /// A `Set-Cookie` value carrying `value`.
    pub(crate) fn set(&self, value: &str, max_age: Option<Duration>) -> Option<HeaderValue> {
        let mut header =
            String::with_capacity(self.name.len() + value.len() + self.attributes.len() + 24);
        header.push_str(&self.name);
        header.push('=');
        header.push_str(value);
        if let Some(max_age) = max_age {
            let _ = write!(header, "; Max-Age={}", max_age.as_secs());
        }
        header.push_str(&self.attributes);
        HeaderValue::try_from(header).ok()
    }

    /// A `Set-Cookie` value that makes the browser drop the cookie.
    pub(crate) fn remove(&self) -> Option<HeaderValue> {
        let header = format!(
            "{}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{}",
            self.name, self.attributes
        );
        HeaderValue::try_from(header).ok()
    }

    /// The value of this cookie in the request's `Cookie` headers, if present and non-empty.
    ///
    /// This runs on every request that touches the session, so it scans bytes without
    /// allocating and checks only the value it returns (visible ASCII, as a cookie value must
    /// be), not the whole header. The first cookie of that name wins, as browsers send the one
    /// with the most specific path first.
    pub(crate) fn find<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let name = self.name.as_bytes();
        headers.get_all(COOKIE).iter().find_map(|header| {
            header.as_bytes().split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii_start();
                let value = pair
                    .strip_prefix(name)?
                    .trim_ascii_start()
                    .strip_prefix(b"=")?;
                let value = value.trim_ascii();
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                let visible = value.iter().all(|&b| b.is_ascii_graphic());
                // Visible ASCII is valid UTF-8.
                (visible && !value.is_empty())
                    .then(|| std::str::from_utf8(value).ok())
                    .flatten()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(COOKIE, HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let cookie = CookieSettings::new().render();
        assert_eq!(cookie.find(&headers(&["a=1; id=abc; b=2"])), Some("abc"));
        assert_eq!(cookie.find(&headers(&["a=1", "id=xyz"])), Some("xyz"));
        assert_eq!(cookie.find(&headers(&["id=\"quoted\""])), Some("quoted"));
        assert_eq!(
            cookie.find(&headers(&["id=first; id=second"])),
            Some("first")
        );
        assert_eq!(cookie.find(&headers(&["idx=1; xid=2"])), None);
        assert_eq!(cookie.find(&headers(&["id="])), None);
        assert_eq!(cookie.find(&headers(&["garbage without equals"])), None);
        assert_eq!(cookie.find(&headers(&["id = spaced "])), Some("spaced"));
        assert_eq!(
            cookie.find(&headers(&["id=a b"])),
            None,
            "a value with a space is no token"
        );
        assert_eq!(cookie.find(&HeaderMap::new()), None);
    }

    #[test]
    fn non_utf8_cookie_headers_are_ignored() {
        let cookie = CookieSettings::new().render();
        let mut map = HeaderMap::new();
        map.append(
            COOKIE,
            HeaderValue::from_bytes(b"id=\xff\xfe").expect("opaque bytes"),
        );
        assert_eq!(cookie.find(&map), None);
    }

    #[test]
    fn renders_secure_defaults() {
        let cookie = CookieSettings::new().render();
        let set = cookie
            .set("tok", Some(Duration::from_secs(90)))
            .expect("valid");
        assert_eq!(
            set,
            "id=tok; Max-Age=90; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
        let session_cookie = cookie.set("tok", None).expect("valid");
        assert_eq!(
            session_cookie,
            "id=tok; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            cookie.remove().expect("valid"),
            "id=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
    }

    #[test]
    fn renders_custom_settings() {
        let cookie = CookieSettings::new()
            .with_name("sid")
            .with_path("/app")
            .with_domain("example.com")
            .with_secure(false)
            .with_http_only(false)
            .with_same_site(SameSite::Strict)
            .render();
        assert_eq!(
            cookie.set("t", None).expect("valid"),
            "sid=t; Path=/app; Domain=example.com; SameSite=Strict"
        );
    }

    #[test]
    fn validation_rejects_what_browsers_reject() {
        assert_eq!(CookieSettings::new().validate(), Ok(()));
        assert!(matches!(
            CookieSettings::new().with_name("bad name").validate(),
            Err(CookieError::InvalidName(_))
        ));
        assert!(matches!(
            CookieSettings::new().with_name("").validate(),
            Err(CookieError::InvalidName(_))
        ));
        assert_eq!(
            CookieSettings::new().with_path("/a;b").validate(),
            Err(CookieError::InvalidAttribute("path"))
        );
        assert_eq!(
            CookieSettings::new().with_domain("x\r\ny").validate(),
            Err(CookieError::InvalidAttribute("domain"))
        );
        let host = CookieSettings::new().with_host_prefix(true);
        assert_eq!(host.validate(), Ok(()));
        assert_eq!(
            host.clone().with_secure(false).validate(),
            Err(CookieError::HostPrefixRequirements)
        );
        assert_eq!(
            host.clone().with_path("/x").validate(),
            Err(CookieError::HostPrefixRequirements)
        );
        assert_eq!(
            host.with_domain("a.com").validate(),
            Err(CookieError::HostPrefixRequirements)
        );
        assert_eq!(
            CookieSettings::new()
                .with_same_site(SameSite::None)
                .with_secure(false)
                .validate(),
            Err(CookieError::SameSiteNoneRequiresSecure)
        );
    }
}
