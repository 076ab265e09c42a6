//! Unit tests: a request's wait for a host asked for ends when a state that has it is in
//! force, at once when the control plane refuses it, and at `ASK_WAIT` otherwise; what is
//! asked is sent once and listed for the next stream.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn state() -> StateHandle {
    let security = crate::security::Compiler::new(
        "default",
        &Default::default(),
        "cluster.local",
        Default::default(),
        crate::jwt::JwksStore::new(tokio::runtime::Handle::current()),
    );
    StateHandle::new(ProxyState::empty(security.empty()))
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_when_a_state_with_the_host_is_in_force() {
    let (od, state) = (Arc::new(OnDemand::default()), state());
    let arrived = Arc::new(AtomicBool::new(false));
    let waiting = {
        let (od, state, arrived) = (od.clone(), state.clone(), arrived.clone());
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let found = od
                .wait("Far.Back.", &state, |_| arrived.load(Ordering::SeqCst))
                .await;
            (found, t0.elapsed())
        })
    };
    // The stream is woken and sends the host once, as the request named it, normalised.
    od.to_send().await;
    assert_eq!(od.take_unsent(), ["far.back"]);
    assert!(od.take_unsent().is_empty());
    assert_eq!(od.asked(), ["far.back"]);
    // A snapshot that does not have it changes nothing; the next one does.
    od.applied(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    arrived.store(true, Ordering::SeqCst);
    od.applied(2);
    let (found, took) = waiting.await.unwrap();
    assert!(found);
    assert!(took < ASK_WAIT, "{took:?}");
    // Kept for the next stream's hello.
    assert_eq!(od.asked(), ["far.back"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_host_is_answered_at_once_while_the_same_snapshot_is_in_force() {
    let (od, state) = (Arc::new(OnDemand::default()), state());
    let waiting = {
        let (od, state) = (od.clone(), state.clone());
        tokio::spawn(async move { od.wait("nosuch", &state, |_| false).await })
    };
    od.to_send().await;
    assert_eq!(od.take_unsent(), ["nosuch"]);
    let t0 = tokio::time::Instant::now();
    od.refused(vec!["nosuch".into()], state.load().version());
    assert!(!waiting.await.unwrap());
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(od.asked().is_empty());
    // Asked again under the same snapshot: no new ask, no wait.
    assert!(!od.wait("nosuch", &state, |_| false).await);
    assert!(od.take_unsent().is_empty());
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn without_an_answer_the_wait_ends_at_its_bound() {
    let (od, state) = (OnDemand::default(), state());
    let t0 = tokio::time::Instant::now();
    assert!(!od.wait("far", &state, |_| false).await);
    assert_eq!(t0.elapsed(), ASK_WAIT);
    // Never refused: still asked for (a reconnecting stream lists it).
    assert_eq!(od.asked(), ["far"]);
    assert!(
        !od.wait("", &state, |_| true).await,
        "no host, nothing to ask"
    );
}
