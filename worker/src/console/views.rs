//! The console's pages as askama templates (`worker/templates/console/`): one struct per
//! page, holding what it shows already formatted. askama escapes every value written into
//! the HTML.

use askama::Template;

use super::i18n::Texts;

/// What every page's frame shows: texts, who is signed in, the form token for signing
/// out, which navigation entry is current.
pub(crate) struct Chrome {
    pub t: &'static Texts,
    pub admin: Option<String>,
    pub csrf: String,
    pub current: &'static str,
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub(crate) struct SignInPage {
    pub chrome: Chrome,
    pub csrf: String,
    pub error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/message.html")]
pub(crate) struct MessagePage {
    pub chrome: Chrome,
    pub title: &'static str,
    pub message: &'static str,
    pub link: Option<(&'static str, &'static str)>,
}

pub(crate) struct WorkerView {
    pub host: String,
    pub pid: i32,
    pub started: String,
    pub heartbeat: String,
    pub awake: bool,
    pub healthy: bool,
}

pub(crate) struct DeadLetterUser {
    pub id: i64,
    pub name: String,
    pub count: i64,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
pub(crate) struct OverviewPage {
    pub chrome: Chrome,
    pub switch_on: bool,
    pub licensed: bool,
    pub push: bool,
    pub exchange: bool,
    pub push_recommended: bool,
    pub time_zone: String,
    pub installed_at: String,
    pub workers: Vec<WorkerView>,
    pub this_worker: Option<&'static str>,
    pub queue_depth: i64,
    pub dead_letters: i64,
    pub dead_letter_users: Vec<DeadLetterUser>,
    /// The calendars' last verifications; `None`: none yet.
    pub verification: Option<VerificationView>,
}

/// A verification's outcome, as one line.
pub(crate) struct VerificationView {
    pub text: String,
    /// Anything neither ok nor foreign, or a calendar that could not be read.
    pub problems: bool,
}

pub(crate) struct UserView {
    pub id: i64,
    pub name: String,
    pub sync_active: bool,
    pub names_match: &'static str,
    pub last_login: String,
    pub last_sync: String,
    pub queued: i64,
    pub dead_letters: i64,
    pub logfile: bool,
}

#[derive(Template)]
#[template(path = "console/users.html")]
pub(crate) struct UsersPage {
    pub chrome: Chrome,
    pub globally_active: bool,
    pub users: Vec<UserView>,
}

pub(crate) struct DeliveryView {
    pub appointment_id: i64,
    pub subject: String,
    pub starts: String,
    pub delivered_at: String,
    /// `None`: the outcome of the last write is unknown ("maybe delivered").
    pub sequence: Option<i32>,
}

pub(crate) struct ErrorView {
    pub appointment_id: i64,
    pub subject: String,
    pub operation: String,
    pub attempts: i32,
    pub error: String,
    pub next_attempt: String,
}

pub(crate) struct DeadLetterView {
    pub id: i64,
    pub appointment_id: i64,
    pub subject: String,
    pub operation: String,
    pub attempts: i32,
    pub error: String,
    pub failed_at: String,
}

pub(crate) struct FeedView {
    /// The full URL, or only its path when the server's address is not known.
    pub url: Option<String>,
    pub path_only: bool,
}

#[derive(Template)]
#[template(path = "console/person.html")]
pub(crate) struct PersonPage {
    pub chrome: Chrome,
    pub id: i64,
    pub name: String,
    pub message: Option<&'static str>,
    pub sync_active: bool,
    pub enabled: bool,
    pub globally_active: bool,
    pub logfile: bool,
    pub existing_user: bool,
    pub names_match: &'static str,
    pub last_login: String,
    pub last_sync: String,
    pub last_error: Option<String>,
    pub being_delivered: bool,
    pub queued: i64,
    /// The calendar's last verification; `None`: never verified.
    pub verification: Option<VerificationView>,
    pub feed: FeedView,
    pub deliveries: Vec<DeliveryView>,
    pub errors: Vec<ErrorView>,
    pub dead_letters: Vec<DeadLetterView>,
}

pub(crate) struct FirstLoginView {
    pub name: String,
    pub id: i64,
    pub state: &'static str,
    pub decided_at: String,
    pub last_login_matched: &'static str,
}

#[derive(Template)]
#[template(path = "console/first_login.html")]
pub(crate) struct FirstLoginPage {
    pub chrome: Chrome,
    pub counts: Vec<(&'static str, usize)>,
    pub rows: Vec<FirstLoginView>,
}
