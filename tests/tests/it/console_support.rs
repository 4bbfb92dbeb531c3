//! The console under test: served in-process on a loopback port, and a small HTTP client
//! that keeps cookies like a browser (no redirects followed, so tests see each answer).

use std::collections::BTreeMap;
use std::time::Duration;

use livesync_worker::config::ConsoleSettings;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::sync::watch;

use crate::helpers::TestDb;

/// The console's admin account in tests.
pub const ADMIN: &str = "kanzleiadmin";
pub const PASSWORD: &str = "richtig-und-lang-genug";

/// A console (with the feeds) served on 127.0.0.1 until dropped.
pub struct Console {
    pub base: String,
    stop: watch::Sender<bool>,
}

impl Console {
    pub async fn start(db: &TestDb) -> Console {
        Console::start_with(db, ConsoleSettings::default()).await
    }

    /// Serve with these settings (the address is chosen here).
    pub async fn start_with(db: &TestDb, settings: ConsoleSettings) -> Console {
        Console::start_on(db.pool.clone(), settings).await
    }

    /// Serve on `pool` (e.g. connected as another database role).
    pub async fn start_on(pool: sqlx::PgPool, mut settings: ConsoleSettings) -> Console {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().unwrap();
        settings.addr = Some(addr);
        let router = livesync_worker::console::router(pool, &settings, None)
            .await
            .expect("the console's router");
        let (stop, rx) = watch::channel(false);
        tokio::spawn(livesync_worker::console::serve(listener, router, None, rx));
        Console {
            base: format!("http://{addr}"),
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Add the console account [`ADMIN`] as `livesync-admin console-user add` does.
pub async fn add_admin(db: &TestDb) {
    livesync_core::console_users::add(&db.pool, ADMIN, PASSWORD)
        .await
        .expect("add the console user");
}

/// One answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of the first hidden `csrf` field of the page.
    pub fn csrf(&self) -> Option<String> {
        let start = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let end = self.body[start..].find('"')?;
        Some(self.body[start..start + end].to_string())
    }
}

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

/// A client that keeps the cookies the console sets, as a browser does.
pub struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// Sent with every request (e.g. X-Forwarded-For, Accept-Language).
    pub extra: HeaderMap,
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            extra: HeaderMap::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Browser {
        self.extra
            .insert(name, HeaderValue::from_str(value).unwrap());
        self
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.contains_key(name)
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let mut request = request.headers(self.extra.clone());
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let response = request.send().await.expect("the console answers");
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || set.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        let request = self.http.get(url);
        self.send(request).await
    }

    pub async fn get_with(&mut self, url: &str, name: &str, value: &str) -> Answer {
        let request = self.http.get(url).header(name, value);
        self.send(request).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form));
        self.send(request).await
    }

    /// Open the sign-in page and sign in; the answer to the sign-in.
    pub async fn sign_in(&mut self, console: &Console, name: &str, password: &str) -> Answer {
        let form = self.get(&console.url("/sign-in")).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf().expect("the sign-in form carries a token");
        self.post(
            &console.url("/sign-in"),
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
    }

    /// Sign in as [`ADMIN`]; panics unless it works.
    pub async fn sign_in_as_admin(&mut self, console: &Console) {
        let answer = self.sign_in(console, ADMIN, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), Some("/"));
    }
}
