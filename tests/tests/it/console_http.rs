//! The admin console over HTTP: signing in (wrong password, unknown name, the limit of 10
//! failures per address, the trusted proxy), CSRF tokens on every form, sessions that end
//! when idle, what the pages show, and actions that reach only what their address names.

use livesync_worker::config::ConsoleSettings;
use reqwest::StatusCode;

use crate::console_support::{ADMIN, Browser, Console, PASSWORD, add_admin};
use crate::helpers::TestDb;

async fn enabled(db: &TestDb, user_id: i64) -> bool {
    sqlx::query_scalar(
        "select coalesce((select live_sync_enabled from livesync.user_settings where user_id = $1), false)",
    )
    .bind(user_id)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_name_get_the_same_answer() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    let console = Console::start(&db).await;
    let mut browser = Browser::new().with_header("accept-language", "en");

    // Not signed in: every page sends the browser to the sign-in page.
    for path in ["/", "/users", "/first-login", "/users/1"] {
        let answer = browser.get(&console.url(path)).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(answer.location(), Some("/sign-in"), "{path}");
    }

    // Both from one form, so that even its token is the same.
    let csrf = browser.get(&console.url("/sign-in")).await.csrf().unwrap();
    let attempt = |name: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("name", name.to_string()),
            ("password", "falsch-aber-lang".to_string()),
        ]
    };
    let fields = attempt(ADMIN);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let wrong = browser.post(&console.url("/sign-in"), &fields).await;
    let fields = attempt("niemand-hier");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let unknown = browser.post(&console.url("/sign-in"), &fields).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(
        wrong.body.contains("Name or password is wrong."),
        "{}",
        wrong.body
    );
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.body, unknown.body, "the same page for both");
    assert!(!browser.has_cookie("livesync_session"));
    assert_eq!(
        browser.get(&console.url("/")).await.location(),
        Some("/sign-in")
    );

    let signed_in = browser.sign_in(&console, ADMIN, PASSWORD).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), Some("/"));
    let cookie = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("livesync_session="))
        .expect("a session cookie");
    let lower = cookie.to_ascii_lowercase();
    assert!(
        lower.contains("httponly") && lower.contains("samesite=strict"),
        "{cookie}"
    );
    let overview = browser.get(&console.url("/")).await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(
        overview.body.contains("<h1>Overview</h1>"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains(ADMIN));
    let policy = overview.header("content-security-policy").unwrap();
    assert!(
        policy.contains("default-src 'none'") && !policy.contains("script"),
        "{policy}"
    );

    // The session's token is the database's only as a digest.
    let stored: Vec<u8> = db
        .scalar("select token_sha256 from livesync.console_sessions")
        .await;
    assert_eq!(stored.len(), 32);
    assert!(!cookie.contains(&String::from_utf8_lossy(&stored).to_string()));
}

#[tokio::test]
async fn a_session_cookie_counts_only_with_this_consoles_signature() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    let console = Console::start(&db).await;
    // A session signed by the console of another database (another key)...
    let other_db = TestDb::migrated().await;
    add_admin(&other_db).await;
    let other = Console::start(&other_db).await;
    let mut stranger = Browser::new();
    let answer = stranger.sign_in(&other, ADMIN, PASSWORD).await;
    let value = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find_map(|c| {
            c.split(';')
                .next()
                .unwrap()
                .strip_prefix("livesync_session=")
                .map(str::to_string)
        })
        .expect("a session cookie");
    // ...whose token this database knows too: only the signature tells them apart.
    let token = &value[value.len() - 43..];
    sqlx::query(
        "insert into livesync.console_sessions (token_sha256, name, csrf_token) \
         values (sha256(convert_to($1, 'UTF8')), 'eindringling', 'x')",
    )
    .bind(token)
    .execute(&db.pool)
    .await
    .unwrap();
    for cookie in [
        format!("livesync_session={value}"),
        format!("livesync_session={token}"),
    ] {
        let mut browser = Browser::new().with_header("cookie", &cookie);
        let answer = browser.get(&console.url("/")).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{cookie}");
        assert_eq!(answer.location(), Some("/sign-in"), "{cookie}");
    }
    // This console's own cookie for its own session works.
    let mut browser = Browser::new();
    browser.sign_in_as_admin(&console).await;
    assert_eq!(browser.get(&console.url("/")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_form_needs_its_csrf_token() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let console = Console::start(&db).await;

    // The sign-in form: the right password without the form's token signs nobody in.
    let mut browser = Browser::new().with_header("accept-language", "de-AT,de;q=0.9");
    let form = browser.get(&console.url("/sign-in")).await;
    assert!(form.csrf().is_some());
    for fields in [
        vec![("name", ADMIN), ("password", PASSWORD)],
        vec![
            ("csrf", "erfunden"),
            ("name", ADMIN),
            ("password", PASSWORD),
        ],
    ] {
        let answer = browser.post(&console.url("/sign-in"), &fields).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{fields:?}");
        assert!(
            answer.body.contains("Das Formular ist abgelaufen"),
            "{}",
            answer.body
        );
        assert!(!browser.has_cookie("livesync_session"));
    }
    // A token without its cookie (another browser's form) does not count either.
    let mut other = Browser::new();
    let token = form.csrf().unwrap();
    let answer = other
        .post(
            &console.url("/sign-in"),
            &[("csrf", &token), ("name", ADMIN), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // Signed in: an action without the session's token changes nothing.
    browser.sign_in_as_admin(&console).await;
    let page = browser.get(&console.url(&format!("/users/{lawyer}"))).await;
    assert!(page.body.contains("<h1>mmuster</h1>"), "{}", page.body);
    let csrf = page.csrf().unwrap();
    let disable = console.url(&format!("/users/{lawyer}/disable"));
    for fields in [
        vec![],
        vec![("csrf", "erfunden")],
        vec![("csrf", &token[..])],
    ] {
        let answer = browser.post(&disable, &fields).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{fields:?}");
        assert!(enabled(&db, lawyer).await, "{fields:?}");
    }
    let answer = browser.post(&disable, &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(
        answer.location(),
        Some(&*format!("/users/{lawyer}?done=disabled"))
    );
    assert!(!enabled(&db, lawyer).await);
    let page = browser.get(&console.url(answer.location().unwrap())).await;
    assert!(
        page.body
            .contains("Die Live-Synchronisation ist ausgeschaltet"),
        "{}",
        page.body
    );
    // Signing out needs the token too.
    let answer = browser.post(&console.url("/sign-out"), &[]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get(&console.url("/")).await.status, StatusCode::OK);
    let answer = browser
        .post(&console.url("/sign-out"), &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.location(), Some("/sign-in"));
    assert_eq!(
        db.scalar::<i64>("select count(*) from livesync.console_sessions")
            .await,
        0
    );
}

#[tokio::test]
async fn an_idle_session_ends() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    let lawyer = db.firm_in_push_mode(&["mmuster"], false).await[0];
    let console = Console::start(&db).await;
    let mut browser = Browser::new();
    browser.sign_in_as_admin(&console).await;
    let page = browser.get(&console.url(&format!("/users/{lawyer}"))).await;
    let csrf = page.csrf().unwrap();

    // Seven idle hours: still signed in (the default ends sessions after 8).
    db.exec("update livesync.console_sessions set last_seen_at = now() - interval '7 hours'")
        .await;
    assert_eq!(browser.get(&console.url("/")).await.status, StatusCode::OK);

    // Nine: over. Pages and actions send the browser to sign in; nothing is changed.
    db.exec("update livesync.console_sessions set last_seen_at = now() - interval '9 hours'")
        .await;
    let answer = browser.get(&console.url("/")).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), Some("/sign-in"));
    let answer = browser
        .post(
            &console.url(&format!("/users/{lawyer}/disable")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(answer.location(), Some("/sign-in"));
    assert!(enabled(&db, lawyer).await);

    // LIVESYNC_CONSOLE_SESSION_HOURS shortens it.
    let short = Console::start_with(
        &db,
        ConsoleSettings {
            session_idle: std::time::Duration::from_secs(3600),
            ..ConsoleSettings::default()
        },
    )
    .await;
    let mut browser = Browser::new();
    browser.sign_in_as_admin(&short).await;
    db.exec("update livesync.console_sessions set last_seen_at = now() - interval '61 minutes'")
        .await;
    assert_eq!(
        browser.get(&short.url("/users")).await.location(),
        Some("/sign-in")
    );
}

#[tokio::test]
async fn ten_failed_sign_ins_from_one_address_get_429_with_retry_after() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    // Behind a trusted proxy on loopback, X-Forwarded-For tells the addresses apart.
    let console = Console::start_with(
        &db,
        ConsoleSettings {
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..ConsoleSettings::default()
        },
    )
    .await;
    let mut attacker = Browser::new().with_header("x-forwarded-for", "203.0.113.5");
    for attempt in 1..=10 {
        let answer = attacker.sign_in(&console, ADMIN, "falsch-aber-lang").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "attempt {attempt}");
    }
    // The 11th is refused before its password is looked at, the right one too.
    for password in ["falsch-aber-lang", PASSWORD] {
        let answer = attacker.sign_in(&console, ADMIN, password).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry), "{retry}");
        assert!(!attacker.has_cookie("livesync_session"));
    }
    // Another address signs in; the limited one may again once its failures are older
    // than 15 minutes.
    let mut colleague = Browser::new().with_header("x-forwarded-for", "198.51.100.7");
    colleague.sign_in_as_admin(&console).await;
    db.exec(
        "update livesync.console_sign_in_failures set failed_at = failed_at - interval '14 minutes'",
    )
    .await;
    let answer = attacker.sign_in(&console, ADMIN, PASSWORD).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!(retry <= 60, "{retry}");
    db.exec(
        "update livesync.console_sign_in_failures set failed_at = failed_at - interval '61 seconds'",
    )
    .await;
    attacker.sign_in_as_admin(&console).await;
}

#[tokio::test]
async fn forwarded_for_and_the_user_header_count_only_when_configured() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    // Nothing trusted: X-Forwarded-For changes nothing, all failures are loopback's.
    let console = Console::start(&db).await;
    for n in 0..10 {
        let forwarded = format!("203.0.113.{n}");
        let mut browser = Browser::new().with_header("x-forwarded-for", &forwarded);
        let answer = browser.sign_in(&console, ADMIN, "falsch-aber-lang").await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
    let mut browser = Browser::new().with_header("x-forwarded-for", "192.0.2.200");
    let answer = browser.sign_in(&console, ADMIN, PASSWORD).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);

    // A user header is believed only when the header is configured and the peer trusted.
    let mut vouched = Browser::new().with_header("x-remote-user", "chefin");
    let answer = vouched.get(&console.url("/")).await;
    assert_eq!(answer.location(), Some("/sign-in"));
    let untrusted = Console::start_with(
        &db,
        ConsoleSettings {
            trusted_proxies: vec!["192.0.2.1".parse().unwrap()],
            proxy_user_header: Some("x-remote-user".into()),
            ..ConsoleSettings::default()
        },
    )
    .await;
    assert_eq!(
        vouched.get(&untrusted.url("/")).await.location(),
        Some("/sign-in")
    );
    let behind_proxy = Console::start_with(
        &db,
        ConsoleSettings {
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            proxy_user_header: Some("x-remote-user".into()),
            ..ConsoleSettings::default()
        },
    )
    .await;
    let answer = vouched.get(&behind_proxy.url("/")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.body.contains("<strong>chefin</strong>"),
        "{}",
        answer.body
    );
    // Its forms carry a session token like any other.
    let csrf = answer.csrf().unwrap();
    assert_eq!(
        vouched
            .post(&behind_proxy.url("/sign-out"), &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let answer = vouched
        .post(&behind_proxy.url("/sign-out"), &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn pages_show_the_firm_the_users_and_one_person() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    let secretary = db.user("sekretariat").await;
    db.enable_user(lawyer, true).await;
    let appointment = db
        .appointment("Verhandlung <b>Müller</b> & Söhne", 24, &[lawyer])
        .await;
    db.login(lawyer, "KANZLEI\\mmuster").await;
    db.login(secretary, "KANZLEI\\assistenz").await;
    let dead = db.dead_letter(lawyer, appointment).await;
    let console = Console::start(&db).await;
    let mut browser = Browser::new().with_header("accept-language", "en-GB,en;q=0.9");
    browser.sign_in_as_admin(&console).await;

    let overview = browser.get(&console.url("/")).await;
    assert!(
        overview.body.contains("id=\"switch\" class=\"ok\">on<"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("live (at login)"));
    assert!(
        overview
            .body
            .contains("id=\"dead-letters\" class=\"number bad\">1<")
    );
    assert!(overview.body.contains("No worker is running."));
    assert_eq!(overview.header("content-language"), Some("en"));

    let users = browser.get(&console.url("/users")).await;
    let row = |name: &str| {
        let start = users.body.find(&format!(">{name}</a>")).unwrap();
        let end = start + users.body[start..].find("</tr>").unwrap();
        users.body[start..end].to_string()
    };
    let m = row("mmuster");
    assert!(m.contains("class=\"sync ok\">yes<"), "{m}");
    assert!(m.contains("class=\"names\">yes<"), "{m}");
    let s = row("sekretariat");
    assert!(s.contains("class=\"sync off\">no<"), "{s}");
    // The secretary's Windows name is her assistant's.
    assert!(s.contains("class=\"names\">no<"), "{s}");

    let person = browser.get(&console.url(&format!("/users/{lawyer}"))).await;
    // Xpert's text is escaped, never markup.
    assert!(
        person
            .body
            .contains("Verhandlung &#60;b&#62;Müller&#60;/b&#62; &#38; Söhne")
            || person
                .body
                .contains("Verhandlung &lt;b&gt;Müller&lt;/b&gt; &amp; Söhne"),
        "{}",
        person.body
    );
    assert!(!person.body.contains("<b>Müller</b>"));
    assert!(person.body.contains(&format!("id=\"dead-letter-{dead}\"")));
    assert!(person.body.contains("HTTP 503 from the calendar server"));
    assert!(person.body.contains("No address yet."));

    let first_login = browser.get(&console.url("/first-login")).await;
    assert!(
        first_login.body.contains("created after the update"),
        "{}",
        first_login.body
    );

    let missing = browser.get(&console.url("/users/999999")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_action_reaches_only_the_person_its_address_names() {
    let db = TestDb::migrated().await;
    add_admin(&db).await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    let other = db.user("kkollegin").await;
    db.enable_user(lawyer, false).await;
    db.enable_user(other, false).await;
    let appointment = db.appointment("Tagsatzung", 24, &[lawyer, other]).await;
    db.drain_queue().await;
    let hers = db.dead_letter(other, appointment).await;
    let mine = db.dead_letter(lawyer, appointment).await;
    let console = Console::start(&db).await;
    let mut browser = Browser::new();
    browser.sign_in_as_admin(&console).await;
    let csrf = browser
        .get(&console.url(&format!("/users/{lawyer}")))
        .await
        .csrf()
        .unwrap();

    // Her dead letter under his address: not found, not touched.
    for action in ["requeue", "drop"] {
        let answer = browser
            .post(
                &console.url(&format!("/users/{lawyer}/dead-letters/{hers}/{action}")),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{action}");
    }
    assert_eq!(
        db.scalar::<i64>("select count(*) from livesync.dead_letters")
            .await,
        2
    );
    // His own: requeued with the operation the truth gives, gone from the dead letters.
    let answer = browser
        .post(
            &console.url(&format!("/users/{lawyer}/dead-letters/{mine}/requeue")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        answer.location(),
        Some(&*format!("/users/{lawyer}?done=requeued"))
    );
    assert_eq!(
        db.queue().await,
        vec![(lawyer, appointment, "upsert".to_string())]
    );
    let answer = browser
        .post(
            &console.url(&format!("/users/{other}/dead-letters/{hers}/drop")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        answer.location(),
        Some(&*format!("/users/{other}?done=dropped"))
    );
    assert_eq!(
        db.scalar::<i64>("select count(*) from livesync.dead_letters")
            .await,
        0
    );
    // Keeping a log file leaves live sync as it is.
    let answer = browser
        .post(
            &console.url(&format!("/users/{lawyer}/logfile")),
            &[("csrf", &csrf), ("keep", "true")],
        )
        .await;
    assert_eq!(
        answer.location(),
        Some(&*format!("/users/{lawyer}?done=logfile-on"))
    );
    let (on, logfile) = db.user_switches(lawyer).await;
    assert!(on && logfile);
}

#[tokio::test]
async fn the_console_needs_no_more_than_the_worker_roles_rights() {
    let _turn = crate::roles::ROLE_LOCK.lock().await;
    let db = TestDb::migrated().await;
    sqlx::raw_sql(include_str!("../../../sql/roles.sql"))
        .execute(&db.pool)
        .await
        .unwrap();
    add_admin(&db).await;
    db.enable_globally("live").await;
    let lawyer = db.user("mmuster").await;
    db.enable_user(lawyer, false).await;
    let appointment = db.appointment("Tagsatzung", 24, &[lawyer]).await;
    let first = db.dead_letter(lawyer, appointment).await;
    let second = db.dead_letter(lawyer, appointment).await;
    let role = format!("lsconsole_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create role {role} login in role livesync_worker"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.username(&role))
        .await
        .unwrap();
    let console = Console::start_on(pool.clone(), ConsoleSettings::default()).await;
    let mut browser = Browser::new();
    // A failed sign-in too: it is recorded under the worker's rights.
    let answer = browser.sign_in(&console, ADMIN, "falsch-aber-lang").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    browser.sign_in_as_admin(&console).await;
    for path in ["/", "/users", &format!("/users/{lawyer}"), "/first-login"] {
        let answer = browser.get(&console.url(path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    let csrf = browser
        .get(&console.url(&format!("/users/{lawyer}")))
        .await
        .csrf()
        .unwrap();
    for action in [
        format!("/users/{lawyer}/dead-letters/{first}/requeue"),
        format!("/users/{lawyer}/dead-letters/{second}/drop"),
        format!("/users/{lawyer}/feed"),
        format!("/users/{lawyer}/feed"),
        format!("/users/{lawyer}/logfile"),
        format!("/users/{lawyer}/disable"),
        format!("/users/{lawyer}/enable"),
    ] {
        let answer = browser
            .post(&console.url(&action), &[("csrf", &csrf), ("keep", "true")])
            .await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "{action}: {}",
            answer.body
        );
    }
    let secret = livesync_core::feeds::existing_secret(&pool, lawyer)
        .await
        .unwrap()
        .expect("a secret made under the worker's rights");
    let feed = browser
        .get(&console.url(&format!("/feeds/{secret}.ics")))
        .await;
    assert_eq!(feed.status, StatusCode::OK);
    let answer = browser
        .post(&console.url("/sign-out"), &[("csrf", &csrf)])
        .await;
    assert_eq!(answer.location(), Some("/sign-in"));
    drop(console);
    pool.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop owned by {role}; drop role {role}"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
}
