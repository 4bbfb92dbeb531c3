//! Where a person's calendar is: the collection URL (from the template or the person's own
//! address) and the credentials to reach it.

use ::http::{HeaderValue, Uri};
use base64::Engine as _;
use libdav::encoding::normalise_percent_encoded;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::Secret;

/// The placeholder in the URL, user name and password templates.
pub const PLACEHOLDER: &str = "{username}";

/// Everything but RFC 3986 "unreserved" is encoded in a user name put into a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An object name keeps `@` (allowed in a path segment, and part of our UIDs).
const OBJECT_NAME: &AsciiSet = &SEGMENT.remove(b'@');

/// A calendar collection on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// `scheme://authority` of the server: requests are built against it.
    pub origin: Uri,
    /// The collection's path, percent-encoded, ending in `/`.
    pub path: String,
}

impl Collection {
    /// Parse an absolute `http(s)://` collection URL (no query, no user info).
    pub fn parse(url: &str) -> Result<Collection, String> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("{url:?} names no server"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "{:?} carries credentials: use LIVESYNC_CALDAV_USERNAME and LIVESYNC_CALDAV_PASSWORD",
                strip_userinfo(url)
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?} has a query; a collection URL has none"));
        }
        let origin = Uri::builder()
            .scheme(uri.scheme_str().unwrap_or("https"))
            .authority(authority.as_str())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("{url:?}: {e}"))?;
        let mut path = uri.path().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(Collection { origin, path })
    }

    /// The collection's URL, for messages.
    pub fn url(&self) -> String {
        self.url_of(&self.path)
    }

    /// The URL of `href` on this collection's server, for messages.
    pub fn url_of(&self, href: &str) -> String {
        let origin = self.origin.to_string();
        format!("{}{}", origin.trim_end_matches('/'), href)
    }

    /// Where the object with `uid` lives: `<collection>/<uid>.ics`.
    pub fn object_href(&self, uid: &str) -> String {
        format!("{}{}.ics", self.path, utf8_percent_encode(uid, OBJECT_NAME))
    }

    /// Is `href` (as stored or as a server reported it) an object inside this collection?
    pub fn contains(&self, href: &str) -> bool {
        let href = self.path_of(href);
        let (Ok(href), Ok(own)) = (
            normalise_percent_encoded(&href),
            normalise_percent_encoded(&self.path),
        ) else {
            return false;
        };
        href.len() > own.len() && href.starts_with(own.as_ref())
    }

    /// The path of an href that may be an absolute URL (some servers answer with those).
    pub fn path_of(&self, href: &str) -> String {
        if href.starts_with('/') {
            return href.to_string();
        }
        match href.parse::<Uri>() {
            Ok(uri) if uri.authority().is_some() => uri.path().to_string(),
            _ => href.to_string(),
        }
    }
}

/// The collection URL for a person: the template with the percent-encoded user name.
pub fn expand_url(template: &str, username: &str) -> String {
    let encoded = utf8_percent_encode(username, SEGMENT).to_string();
    template.replace(PLACEHOLDER, &encoded)
}

/// The URL with its user info replaced by `***` (for messages).
fn strip_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://***@{host}{path}");
        }
    }
    url.to_string()
}

/// HTTP Basic credentials: one service account, or per person when a template names
/// `{username}`.
#[derive(Debug, Clone)]
pub struct Credentials {
    username: Option<String>,
    password: Option<Secret>,
}

impl Credentials {
    pub fn new(username: Option<String>, password: Option<Secret>) -> Credentials {
        Credentials { username, password }
    }

    /// Do the credentials differ per person?
    pub fn per_user(&self) -> bool {
        self.username
            .as_deref()
            .is_some_and(|u| u.contains(PLACEHOLDER))
            || self
                .password
                .as_ref()
                .is_some_and(|p| p.expose().contains(PLACEHOLDER))
    }

    /// The login name used for `username` (for messages; never the password).
    pub fn login_for(&self, username: &str) -> Option<String> {
        self.username
            .as_deref()
            .map(|u| u.replace(PLACEHOLDER, username))
    }

    /// The `Authorization` header for `username`'s calendar (marked sensitive, so that no
    /// log prints it), or `None` without credentials.
    pub fn header_for(&self, username: &str) -> Option<HeaderValue> {
        let login = self.login_for(username)?;
        let password = self
            .password
            .as_ref()
            .map(|p| p.expose().replace(PLACEHOLDER, username))
            .unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_percent_encoded_into_one_segment() {
        let url = expand_url(
            "https://dav.kanzlei.at/{username}/notarxpert/",
            "Dr. Müller/2",
        );
        assert_eq!(
            url,
            "https://dav.kanzlei.at/Dr.%20M%C3%BCller%2F2/notarxpert/"
        );
        let c = Collection::parse(&url).unwrap();
        assert_eq!(c.path, "/Dr.%20M%C3%BCller%2F2/notarxpert/");
        assert_eq!(c.origin.to_string(), "https://dav.kanzlei.at/");
        assert_eq!(
            c.object_href("xpert-termin-7@livesync"),
            "/Dr.%20M%C3%BCller%2F2/notarxpert/xpert-termin-7@livesync.ics"
        );
        assert_eq!(c.url(), url);
    }

    #[test]
    fn a_collection_url_gets_its_trailing_slash_and_keeps_its_port() {
        let c = Collection::parse("http://127.0.0.1:5232/mmuster/notarxpert").unwrap();
        assert_eq!(c.path, "/mmuster/notarxpert/");
        assert_eq!(c.url(), "http://127.0.0.1:5232/mmuster/notarxpert/");
    }

    #[test]
    fn bad_collection_urls_are_refused_without_echoing_credentials() {
        assert!(Collection::parse("ftp://x/y/").is_err());
        assert!(Collection::parse("/just/a/path/").is_err());
        assert!(Collection::parse("https://x/cal/?a=b").is_err());
        let e = Collection::parse("https://admin:s3cret@x/cal/").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn hrefs_are_compared_after_normalising_their_encoding() {
        let c = Collection::parse("https://x/Dr.%20M%C3%BCller/notarxpert/").unwrap();
        assert!(c.contains("/Dr.%20M%C3%BCller/notarxpert/a.ics"));
        assert!(c.contains("/Dr. Müller/notarxpert/a.ics"));
        assert!(c.contains("https://x/Dr.%20M%C3%BCller/notarxpert/a.ics"));
        assert!(!c.contains("/Dr.%20M%C3%BCller/notarxpert/"));
        assert!(!c.contains("/other/notarxpert/a.ics"));
    }

    #[test]
    fn credentials_can_be_per_user_and_stay_sensitive() {
        let c = Credentials::new(
            Some("{username}".into()),
            Some(Secret::new("pw-{username}")),
        );
        assert!(c.per_user());
        assert_eq!(c.login_for("hhuber").as_deref(), Some("hhuber"));
        let h = c.header_for("hhuber").unwrap();
        assert!(h.is_sensitive());
        let expected = base64::engine::general_purpose::STANDARD.encode("hhuber:pw-hhuber");
        assert_eq!(h.to_str().unwrap(), format!("Basic {expected}"));
        assert!(!format!("{h:?}").contains(&expected));

        let service = Credentials::new(Some("livesync".into()), Some(Secret::new("x")));
        assert!(!service.per_user());
        assert!(Credentials::new(None, None).header_for("a").is_none());
    }
}
