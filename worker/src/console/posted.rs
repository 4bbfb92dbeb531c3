//! A form an action on a person's page posts, as its handler receives it: the admin who
//! sent it, and the form with this session's token checked. A form without the token is
//! answered 403 (with a link back to the users) before the action runs.

use axum::Extension;
use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use livesync_core::users::User;
use serde::de::DeserializeOwned;

use super::ConsoleState;
use super::auth::Admin;
use super::pages::{database_error, not_found, refuse_without_token};

/// A form that carries the session's token.
pub(super) trait WithToken {
    fn csrf(&self) -> Option<&str>;
}

/// A posted form, its token checked, with what its action needs to answer.
pub(super) struct Posted<F> {
    pub state: ConsoleState,
    pub admin: Admin,
    pub headers: HeaderMap,
    pub form: F,
}

impl<F> FromRequest<ConsoleState> for Posted<F>
where
    F: WithToken + DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &ConsoleState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Extension(admin) = Extension::<Admin>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let Form(form) = Form::<F>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if let Some(refused) = refuse_without_token(&admin, form.csrf(), &headers, "/users") {
            return Err(refused);
        }
        Ok(Posted {
            state: state.clone(),
            admin,
            headers,
            form,
        })
    }
}

impl<F> Posted<F> {
    /// The Xpert user `id`; else the answer: 404 when there is none, 500 when the
    /// statement failed.
    pub async fn user(&self, id: i64) -> Result<User, Response> {
        let found = sqlx::query_as("select id, username from xpert.users where id = $1")
            .bind(id)
            .fetch_optional(&self.state.pool);
        match self.checked(found).await? {
            Some(user) => Ok(user),
            None => Err(self.not_found().await),
        }
    }

    /// What `statement` gives; when it fails, the answer: 500 (and the failure logged).
    pub async fn checked<T>(
        &self,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, Response> {
        statement
            .await
            .map_err(|e| database_error(&e, &self.headers))
    }

    /// 404 in the language of the request.
    pub async fn not_found(&self) -> Response {
        not_found(self.headers.clone()).await
    }
}
