//! The order saga: charge the payment, reserve the stock, confirm; when a step fails (or its
//! outcome is unknown: a timeout, a 5xx), undo what may have been done — release the stock,
//! refund the payment — and cancel. Every step is idempotent by order, so [`drive`] can be run
//! again from any point: after a crash, by another coordinator ([`recover`]), or twice at once.

use super::db::DbError;
use super::orders::{Order, Orders, State};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a step went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Definitely not done (declined, out of stock, the order released or refunded).
    Refused(String),
    /// Perhaps done, perhaps not (no answer in time, a 5xx): treated as not done, and undone.
    Unknown(String),
}

/// The calls the saga makes to the other services, each idempotent by order.
pub trait Steps: Send + Sync {
    fn charge(&self, order: &Order) -> impl Future<Output = Outcome> + Send;
    fn refund(&self, order: &Order) -> impl Future<Output = Outcome> + Send;
    fn reserve(&self, order: &Order) -> impl Future<Output = Outcome> + Send;
    fn release(&self, order: &Order) -> impl Future<Output = Outcome> + Send;
}

/// Takes `order` as far as it goes now: confirmed, cancelled, or (when undoing a step failed)
/// still compensating, for a later [`recover`] to finish.
pub async fn drive<S: Steps>(
    orders: &Orders,
    steps: &S,
    mut order: Order,
) -> Result<Order, DbError> {
    loop {
        match order.state {
            State::Pending => {
                let failed = match steps.charge(&order).await {
                    Outcome::Done => match steps.reserve(&order).await {
                        Outcome::Done => None,
                        Outcome::Refused(why) | Outcome::Unknown(why) => {
                            Some(format!("stock: {why}"))
                        }
                    },
                    Outcome::Refused(why) | Outcome::Unknown(why) => {
                        Some(format!("payment: {why}"))
                    }
                };
                let to = if failed.is_none() {
                    State::Confirmed
                } else {
                    State::Compensating
                };
                // Another coordinator may have moved it meanwhile: go on from where it is.
                order = orders
                    .transition(&order.id, State::Pending, to, failed)
                    .await?;
            }
            State::Compensating => {
                // The stock goes back before the money does; both are no-ops if never done.
                let released = steps.release(&order).await;
                let refunded = steps.refund(&order).await;
                if released != Outcome::Done || refunded != Outcome::Done {
                    tracing::warn!(order = %order.id, ?released, ?refunded, "compensation incomplete; it is retried");
                    return Ok(order);
                }
                order = orders
                    .transition(&order.id, State::Compensating, State::Cancelled, None)
                    .await?;
            }
            State::Confirmed | State::Cancelled => return Ok(order),
        }
    }
}

/// Every `every` until `stop`: takes over the open orders whose coordinator's lease ran out (it
/// crashed, or is stuck) and drives them to the end. At start, too: a restarted order service
/// finishes what it left.
pub async fn recover<S: Steps>(orders: Orders, steps: S, every: Duration, stop: CancellationToken) {
    loop {
        match orders.claim_stale(100).await {
            Ok(stale) => {
                for order in stale {
                    let id = order.id.clone();
                    match drive(&orders, &steps, order).await {
                        Ok(o) => tracing::info!(order = %id, state = ?o.state, "recovered"),
                        Err(e) => tracing::warn!(order = %id, error = %e, "recovering"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for orders to recover"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
