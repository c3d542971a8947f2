//! Who a subscription pushes to: the principal as last checked, and the socket to
//! close when their credentials go.

use async_graphql::Context;

use super::state;
use crate::auth::{Auth, Principal};
use crate::error::{ApiError, Result};
use crate::live::socket::{close, SocketControl};
use crate::state::AppState;

/// Who a subscription pushes to, as they stand now: each push is authorized with the
/// principal as last checked, and a subscriber whose credentials go is closed.
pub struct Subscriber {
    auth: Auth,
    pub principal: Principal,
    /// The socket, to close when the subscriber is too slow or its credentials go.
    control: Option<SocketControl>,
    pub state: AppState,
}

impl Subscriber {
    pub fn of(ctx: &Context<'_>) -> Result<Self> {
        let auth = ctx.data::<Auth>().map_err(|_| ApiError::unauthenticated())?.clone();
        let principal = auth.principal()?.clone();
        let control = ctx.data::<SocketControl>().ok().cloned();
        Ok(Self { auth, principal, control, state: state(ctx)?.clone() })
    }

    pub fn close(&self, code: u16, reason: &str) {
        if let Some(control) = &self.control {
            control.close(code, reason);
        }
    }

    /// Whether the subscriber's credentials still hold (through the principal cache
    /// every access change invalidates); the socket is closed when they do not.
    pub async fn still_allowed(&mut self) -> bool {
        match self.state.authenticator.refresh(&self.auth).await.map(|auth| auth.principal().cloned()) {
            Ok(Ok(principal)) => {
                self.principal = principal;
                true
            }
            Ok(Err(_)) => {
                self.close(close::FORBIDDEN, "forbidden: the credentials no longer hold");
                false
            }
            Err(error) => {
                // The database is away: go on with what was known (checked again next time).
                tracing::warn!(error = error.message, "could not check a subscriber's credentials");
                true
            }
        }
    }
}
