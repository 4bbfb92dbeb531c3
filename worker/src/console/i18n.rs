//! The console speaks German or English, chosen per request from `Accept-Language` (the
//! language with the highest weight among those offered; German when none is).

use chrono::{DateTime, Utc};

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    De,
    En,
}

impl Lang {
    /// The language for an `Accept-Language` header: the first of the highest weight that
    /// is German or English (`de`, `de-AT`, `en-GB`, …); German without a header or match.
    pub(crate) fn from_accept_language(header: Option<&str>) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in header.unwrap_or_default().split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let weight = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or_default();
            let lang = match primary {
                "de" => Lang::De,
                "en" => Lang::En,
                _ => continue,
            };
            if weight > 0.0 && best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, lang));
            }
        }
        best.map_or(Lang::De, |(_, lang)| lang)
    }

    pub(crate) fn texts(self) -> &'static Texts {
        match self {
            Lang::De => &DE,
            Lang::En => &EN,
        }
    }
}

/// Every text of the console in one language.
#[derive(Debug)]
pub(crate) struct Texts {
    pub lang: &'static str,
    pub console: &'static str,
    pub nav_overview: &'static str,
    pub nav_users: &'static str,
    pub nav_first_login: &'static str,
    pub sign_out: &'static str,
    pub signed_in_as: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub never: &'static str,
    pub on: &'static str,
    pub off: &'static str,

    pub sign_in_title: &'static str,
    pub name: &'static str,
    pub password: &'static str,
    pub sign_in_button: &'static str,
    pub wrong_credentials: &'static str,
    pub too_many_attempts: &'static str,
    pub form_expired: &'static str,
    pub reload: &'static str,
    pub not_found: &'static str,
    pub server_error: &'static str,

    pub overview_title: &'static str,
    pub firm: &'static str,
    pub switch: &'static str,
    pub licence: &'static str,
    pub licensed: &'static str,
    pub not_licensed: &'static str,
    pub mode: &'static str,
    pub mode_live: &'static str,
    pub mode_push: &'static str,
    pub exchange_server: &'static str,
    pub time_zone: &'static str,
    pub installed_at: &'static str,
    pub workers: &'static str,
    pub host: &'static str,
    pub process: &'static str,
    pub started: &'static str,
    pub heartbeat: &'static str,
    pub state: &'static str,
    pub awake: &'static str,
    pub asleep: &'static str,
    pub healthy: &'static str,
    pub silent: &'static str,
    pub no_workers: &'static str,
    pub this_worker: &'static str,
    pub listener_ok: &'static str,
    pub listener_down: &'static str,
    pub poll_only: &'static str,
    pub queue: &'static str,
    pub queue_depth: &'static str,
    pub dead_letters: &'static str,
    pub last_verification: &'static str,
    pub no_verification: &'static str,
    pub calendar_verified: &'static str,
    pub push_recommended: &'static str,

    pub users_title: &'static str,
    pub user: &'static str,
    pub sync_active: &'static str,
    pub names_match: &'static str,
    pub last_login: &'static str,
    pub last_sync: &'static str,
    pub queued: &'static str,
    pub logfile: &'static str,
    pub sync_off_globally: &'static str,
    pub no_users: &'static str,

    pub person_enabled: &'static str,
    pub enable: &'static str,
    pub disable: &'static str,
    pub keep_logfile: &'static str,
    pub stop_logfile: &'static str,
    pub existing_user: &'static str,
    pub last_error: &'static str,
    pub being_delivered: &'static str,
    pub feed: &'static str,
    pub feed_explained: &'static str,
    pub feed_make: &'static str,
    pub feed_rotate: &'static str,
    pub feed_none: &'static str,
    pub feed_inactive: &'static str,
    pub feed_no_base: &'static str,
    pub deliveries: &'static str,
    pub appointment: &'static str,
    pub subject: &'static str,
    pub starts: &'static str,
    pub delivered_at: &'static str,
    pub sequence: &'static str,
    pub outcome_unknown: &'static str,
    pub appointment_gone: &'static str,
    pub no_deliveries: &'static str,
    pub errors: &'static str,
    pub attempts: &'static str,
    pub error: &'static str,
    pub next_attempt: &'static str,
    pub no_errors: &'static str,
    pub operation: &'static str,
    pub failed_at: &'static str,
    pub requeue: &'static str,
    pub drop: &'static str,
    pub no_dead_letters: &'static str,
    pub done_requeued: &'static str,
    pub done_requeue_skipped: &'static str,
    pub done_dropped: &'static str,
    pub done_enabled: &'static str,
    pub done_enabled_not_active: &'static str,
    pub done_disabled: &'static str,
    pub done_logfile_on: &'static str,
    pub done_logfile_off: &'static str,
    pub done_feed: &'static str,

    pub first_login_title: &'static str,
    pub first_login_explained: &'static str,
    pub decided_at: &'static str,
    pub last_login_matched: &'static str,
    pub state_pending: &'static str,
    pub state_enabled: &'static str,
    pub state_names_differ: &'static str,
    pub state_admin: &'static str,
    pub state_not_existing: &'static str,
}

pub(crate) static DE: Texts = Texts {
    lang: "de",
    console: "livesync-Konsole",
    nav_overview: "Übersicht",
    nav_users: "Benutzer",
    nav_first_login: "Erste Anmeldung",
    sign_out: "Abmelden",
    signed_in_as: "Angemeldet als",
    yes: "ja",
    no: "nein",
    never: "nie",
    on: "ein",
    off: "aus",

    sign_in_title: "Anmelden",
    name: "Name",
    password: "Kennwort",
    sign_in_button: "Anmelden",
    wrong_credentials: "Name oder Kennwort ist falsch.",
    too_many_attempts: "Zu viele fehlgeschlagene Anmeldungen von dieser Adresse. Bitte später erneut versuchen.",
    form_expired: "Das Formular ist abgelaufen oder unvollständig. Bitte die Seite neu laden und noch einmal absenden.",
    reload: "Neu laden",
    not_found: "Diese Seite gibt es nicht.",
    server_error: "Die Datenbank hat nicht geantwortet. Bitte gleich noch einmal versuchen.",

    overview_title: "Übersicht",
    firm: "Kanzlei",
    switch: "Live-Synchronisation",
    licence: "Lizenzmodul CTI/Synchronisierung",
    licensed: "lizenziert",
    not_licensed: "nicht lizenziert",
    mode: "Zustellung",
    mode_live: "live (bei Anmeldung)",
    mode_push: "push (sofort)",
    exchange_server: "Exchange Server",
    time_zone: "Zeitzone",
    installed_at: "Installiert",
    workers: "Worker",
    host: "Rechner",
    process: "Prozess",
    started: "Gestartet",
    heartbeat: "Letztes Lebenszeichen",
    state: "Zustand",
    awake: "wach",
    asleep: "schläft",
    healthy: "in Ordnung",
    silent: "meldet sich nicht",
    no_workers: "Kein Worker läuft.",
    this_worker: "Dieser Worker",
    listener_ok: "hört auf Änderungen",
    listener_down: "Verbindung für Benachrichtigungen unterbrochen",
    poll_only: "fragt regelmäßig (poll-only)",
    queue: "Warteschlange",
    queue_depth: "Einträge in der Warteschlange",
    dead_letters: "Unzustellbare Einträge",
    last_verification: "Letzte Prüfung der Kalender",
    no_verification: "noch keine",
    calendar_verified: "Letzte Prüfung des Kalenders",
    push_recommended: "Diese Kanzlei hat einen Exchange Server: push wird empfohlen.",

    users_title: "Benutzer",
    user: "Benutzer",
    sync_active: "Synchronisation aktiv",
    names_match: "Namen stimmen überein",
    last_login: "Letzte Anmeldung",
    last_sync: "Letzte Zustellung",
    queued: "Wartend",
    logfile: "Logfile",
    sync_off_globally: "Die Live-Synchronisation ist für die Kanzlei ausgeschaltet oder nicht lizenziert: niemandem wird etwas zugestellt.",
    no_users: "Keine Benutzer.",

    person_enabled: "Live-Synchronisation für diese Person",
    enable: "Einschalten",
    disable: "Ausschalten",
    keep_logfile: "Logfile führen",
    stop_logfile: "Kein Logfile mehr führen",
    existing_user: "Bestand vor dem Update",
    last_error: "Letzter Fehler",
    being_delivered: "Wird gerade zugestellt",
    feed: "Kalender-Abonnement",
    feed_explained: "Outlook (Kalender hinzufügen → Aus dem Internet), Apple Kalender, Thunderbird und Telefone abonnieren diese Adresse. Wer sie kennt, kann den Kalender lesen.",
    feed_make: "Adresse erzeugen",
    feed_rotate: "Neue Adresse (die alte wird ungültig)",
    feed_none: "Noch keine Adresse.",
    feed_inactive: "Solange die Synchronisation nicht aktiv ist, antwortet die Adresse mit 404.",
    feed_no_base: "Unter welcher Adresse der Server erreichbar ist, ist nicht eingestellt (LIVESYNC_PUBLIC_URL); der Pfad lautet:",
    deliveries: "Zuletzt zugestellt",
    appointment: "Termin",
    subject: "Betreff",
    starts: "Beginn",
    delivered_at: "Zugestellt",
    sequence: "Version",
    outcome_unknown: "Ausgang unbekannt",
    appointment_gone: "(gelöscht)",
    no_deliveries: "Noch nichts zugestellt.",
    errors: "Fehler beim Zustellen",
    attempts: "Versuche",
    error: "Fehler",
    next_attempt: "Nächster Versuch",
    no_errors: "Keine Fehler.",
    operation: "Art",
    failed_at: "Aufgegeben",
    requeue: "Erneut senden",
    drop: "Verwerfen",
    no_dead_letters: "Keine unzustellbaren Einträge.",
    done_requeued: "Der Eintrag wird erneut zugestellt.",
    done_requeue_skipped: "Nicht erneut gesendet: die Synchronisation dieser Person ist nicht aktiv.",
    done_dropped: "Der Eintrag wurde verworfen.",
    done_enabled: "Die Live-Synchronisation ist eingeschaltet; die Termine ab heute werden zugestellt.",
    done_enabled_not_active: "Eingeschaltet, aber die Live-Synchronisation ist für die Kanzlei aus oder nicht lizenziert: es wird noch nichts zugestellt.",
    done_disabled: "Die Live-Synchronisation ist ausgeschaltet; Wartendes wurde verworfen.",
    done_logfile_on: "Das Logfile wird geführt.",
    done_logfile_off: "Das Logfile wird nicht mehr geführt.",
    done_feed: "Die Adresse gilt ab sofort; eine frühere gilt nicht mehr.",

    first_login_title: "Erste Anmeldung nach dem Update",
    first_login_explained: "Bei der ersten Anmeldung nach dem Update wird die Live-Synchronisation eingeschaltet, wenn der Windows-Name zum Xpert-Namen passt. Das geschieht einmal je Benutzer; die Entscheidung eines Administrators gilt.",
    decided_at: "Entschieden",
    last_login_matched: "Letzte Anmeldung passend",
    state_pending: "wartet auf die erste Anmeldung",
    state_enabled: "eingeschaltet",
    state_names_differ: "Namen verschieden (nichts eingeschaltet)",
    state_admin: "vom Administrator entschieden",
    state_not_existing: "nach dem Update angelegt",
};

pub(crate) static EN: Texts = Texts {
    lang: "en",
    console: "livesync console",
    nav_overview: "Overview",
    nav_users: "Users",
    nav_first_login: "First login",
    sign_out: "Sign out",
    signed_in_as: "Signed in as",
    yes: "yes",
    no: "no",
    never: "never",
    on: "on",
    off: "off",

    sign_in_title: "Sign in",
    name: "Name",
    password: "Password",
    sign_in_button: "Sign in",
    wrong_credentials: "Name or password is wrong.",
    too_many_attempts: "Too many failed sign-ins from this address. Please try again later.",
    form_expired: "The form has expired or is incomplete. Please reload the page and send it again.",
    reload: "Reload",
    not_found: "There is no such page.",
    server_error: "The database did not answer. Please try again in a moment.",

    overview_title: "Overview",
    firm: "Firm",
    switch: "Live sync",
    licence: "Licence module CTI/Synchronisierung",
    licensed: "licensed",
    not_licensed: "not licensed",
    mode: "Delivery",
    mode_live: "live (at login)",
    mode_push: "push (at once)",
    exchange_server: "Exchange Server",
    time_zone: "Time zone",
    installed_at: "Installed",
    workers: "Workers",
    host: "Host",
    process: "Process",
    started: "Started",
    heartbeat: "Last heartbeat",
    state: "State",
    awake: "awake",
    asleep: "asleep",
    healthy: "healthy",
    silent: "silent",
    no_workers: "No worker is running.",
    this_worker: "This worker",
    listener_ok: "listening for changes",
    listener_down: "notification connection down",
    poll_only: "polling (poll-only)",
    queue: "Queue",
    queue_depth: "Entries in the queue",
    dead_letters: "Dead letters",
    last_verification: "Last verification of the calendars",
    no_verification: "none yet",
    calendar_verified: "Calendar last verified",
    push_recommended: "This firm runs an Exchange Server: push is recommended.",

    users_title: "Users",
    user: "User",
    sync_active: "Sync active",
    names_match: "Names match",
    last_login: "Last login",
    last_sync: "Last sync",
    queued: "Queued",
    logfile: "Log file",
    sync_off_globally: "Live sync is switched off for the firm or not licensed: nothing is delivered to anyone.",
    no_users: "No users.",

    person_enabled: "Live sync for this person",
    enable: "Switch on",
    disable: "Switch off",
    keep_logfile: "Keep a log file",
    stop_logfile: "Stop keeping a log file",
    existing_user: "Existed before the update",
    last_error: "Last error",
    being_delivered: "Being delivered now",
    feed: "Calendar subscription",
    feed_explained: "Outlook (Add calendar → From Internet), Apple Calendar, Thunderbird and phones subscribe to this address. Whoever knows it can read the calendar.",
    feed_make: "Make the address",
    feed_rotate: "New address (the old one stops working)",
    feed_none: "No address yet.",
    feed_inactive: "While sync is not active, the address answers 404.",
    feed_no_base: "The address people reach the server by is not set (LIVESYNC_PUBLIC_URL); the path is:",
    deliveries: "Recent deliveries",
    appointment: "Appointment",
    subject: "Subject",
    starts: "Starts",
    delivered_at: "Delivered",
    sequence: "Version",
    outcome_unknown: "outcome unknown",
    appointment_gone: "(deleted)",
    no_deliveries: "Nothing delivered yet.",
    errors: "Delivery errors",
    attempts: "Attempts",
    error: "Error",
    next_attempt: "Next attempt",
    no_errors: "No errors.",
    operation: "Operation",
    failed_at: "Given up",
    requeue: "Send again",
    drop: "Drop",
    no_dead_letters: "No dead letters.",
    done_requeued: "The entry will be delivered again.",
    done_requeue_skipped: "Not sent again: this person's sync is not active.",
    done_dropped: "The entry was dropped.",
    done_enabled: "Live sync is on; the appointments from today on are being delivered.",
    done_enabled_not_active: "Switched on, but live sync is off for the firm or not licensed: nothing is delivered yet.",
    done_disabled: "Live sync is off; what was waiting was dropped.",
    done_logfile_on: "A log file is kept.",
    done_logfile_off: "No log file is kept any more.",
    done_feed: "The address works from now on; an earlier one no longer does.",

    first_login_title: "First login after the update",
    first_login_explained: "At the first login after the update, live sync is switched on when the Windows name matches the Xpert name. This happens once per user; an admin's decision is final.",
    decided_at: "Decided",
    last_login_matched: "Last login matched",
    state_pending: "waiting for the first login",
    state_enabled: "switched on",
    state_names_differ: "names differ (nothing switched on)",
    state_admin: "decided by an admin",
    state_not_existing: "created after the update",
};

impl Texts {
    /// "yes" or "no" (templates hand over a `bool` or a reference to one).
    pub(crate) fn yes_no(&self, b: impl std::borrow::Borrow<bool>) -> &'static str {
        if *b.borrow() { self.yes } else { self.no }
    }

    pub(crate) fn opt_yes_no(&self, b: Option<bool>) -> &'static str {
        b.map_or("–", |b| self.yes_no(b))
    }

    /// A point in time in the firm's zone, e.g. `2026-11-29 09:15`; "never" for none.
    pub(crate) fn time(&self, t: Option<DateTime<Utc>>, zone: chrono_tz::Tz) -> String {
        match t {
            Some(t) => t.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string(),
            None => self.never.to_string(),
        }
    }

    /// What the calendars' last verifications found: when (the latest), how many problems
    /// (items neither ok nor foreign) in how many calendars, how many could not be read.
    pub(crate) fn verified_calendars(
        &self,
        when: String,
        problems: i64,
        calendars: i64,
        unreadable: i64,
    ) -> String {
        let de = self.lang == "de";
        let calendars_en = if calendars == 1 {
            "1 calendar".to_string()
        } else {
            format!("{calendars} calendars")
        };
        let mut out = match (de, problems) {
            (true, 0) => format!("{when}: {calendars} Kalender gleich Xpert"),
            (true, 1) => format!("{when}: 1 Abweichung in {calendars} Kalendern"),
            (true, n) => format!("{when}: {n} Abweichungen in {calendars} Kalendern"),
            (false, 0) => format!("{when}: {calendars_en} equal to Xpert"),
            (false, 1) => format!("{when}: 1 problem in {calendars_en}"),
            (false, n) => format!("{when}: {n} problems in {calendars_en}"),
        };
        if unreadable > 0 {
            out.push_str(&if de {
                format!(", {unreadable} nicht lesbar")
            } else {
                format!(", {unreadable} could not be read")
            });
        }
        out
    }

    /// What one person's last verification found.
    pub(crate) fn verified_calendar(
        &self,
        when: String,
        by_schedule: bool,
        problems: i64,
        unreadable: Option<&str>,
    ) -> String {
        let de = self.lang == "de";
        let by = match (de, by_schedule) {
            (true, true) => "geplante Prüfung",
            (true, false) => "livesync-admin verify",
            (false, true) => "scheduled",
            (false, false) => "livesync-admin verify",
        };
        let found = match (de, unreadable, problems) {
            (true, Some(e), _) => format!("nicht lesbar: {e}"),
            (false, Some(e), _) => format!("could not be read: {e}"),
            (true, None, 0) => "gleich Xpert".to_string(),
            (true, None, 1) => "1 Abweichung".to_string(),
            (true, None, n) => format!("{n} Abweichungen"),
            (false, None, 0) => "equal to Xpert".to_string(),
            (false, None, 1) => "1 problem".to_string(),
            (false, None, n) => format!("{n} problems"),
        };
        format!("{when} ({by}): {found}")
    }

    /// How long ago, short: `42 s`, `5 min`, `3 h`, `2 d`.
    pub(crate) fn ago(&self, seconds: i64) -> String {
        let s = seconds.max(0);
        let (n, unit) = match s {
            0..60 => (s, "s"),
            60..3600 => (s / 60, "min"),
            3600..86400 => (s / 3600, "h"),
            _ => (s / 86400, if self.lang == "de" { "T" } else { "d" }),
        };
        if self.lang == "de" {
            format!("vor {n} {unit}")
        } else {
            format!("{n} {unit} ago")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_accept_language() {
        let pick = Lang::from_accept_language;
        assert_eq!(pick(None), Lang::De);
        assert_eq!(pick(Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(pick(Some("de-AT,de;q=0.9,en;q=0.8")), Lang::De);
        assert_eq!(pick(Some("fr-FR,fr;q=0.9,en;q=0.5,de;q=0.4")), Lang::En);
        assert_eq!(pick(Some("en;q=0.2, de;q=0.7")), Lang::De);
        assert_eq!(pick(Some("EN-gb")), Lang::En);
        assert_eq!(pick(Some("en;q=0, fr")), Lang::De);
        assert_eq!(pick(Some("*")), Lang::De);
    }
}
