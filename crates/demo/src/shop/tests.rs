//! The saga over the real inventory and payment state (in memory): what a customer and the
//! shop's books would notice — the order's end state, the stock, the money.

use super::inventory::Inventory;
use super::orders::{Order, Orders, State};
use super::payment::{Payment, Switches};
use super::saga::{drive, recover, Outcome, Steps};
use super::Item;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The saga's calls made in process on the services' state, answered as their HTTP APIs
/// answer: 200 → done, 409 → refused, 5xx → unknown. `lose_charge_answers`: the charge is made
/// but its answer never arrives (a timeout after the provider charged).
#[derive(Clone)]
struct Local {
    inventory: Inventory,
    payment: Payment,
    lose_charge_answers: Arc<AtomicBool>,
    refunds_down: Arc<AtomicBool>,
    charges: Arc<AtomicU32>,
}

fn outcome(status: u16, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Done,
        500.. => Outcome::Unknown(body.to_string()),
        _ => Outcome::Refused(body.to_string()),
    }
}

impl Steps for Local {
    async fn charge(&self, o: &Order) -> Outcome {
        self.charges.fetch_add(1, Ordering::SeqCst);
        let a = self
            .payment
            .charge(&format!("{}:charge", o.id), &o.id, o.total_cents)
            .await
            .unwrap();
        if self.lose_charge_answers.load(Ordering::SeqCst) {
            return Outcome::Unknown("no answer in 2 s".into());
        }
        outcome(a.status, &a.body)
    }
    async fn refund(&self, o: &Order) -> Outcome {
        if self.refunds_down.load(Ordering::SeqCst) {
            return Outcome::Unknown("503".into());
        }
        let a = self
            .payment
            .refund(&format!("{}:refund", o.id), &o.id)
            .await
            .unwrap();
        outcome(a.status, &a.body)
    }
    async fn reserve(&self, o: &Order) -> Outcome {
        let a = self
            .inventory
            .reserve(&format!("{}:reserve", o.id), &o.id, o.items.clone())
            .await
            .unwrap();
        outcome(a.status, &a.body)
    }
    async fn release(&self, o: &Order) -> Outcome {
        let a = self
            .inventory
            .release(&format!("{}:release", o.id), &o.id)
            .await
            .unwrap();
        outcome(a.status, &a.body)
    }
}

async fn shop(switches: Switches) -> (Orders, Local) {
    shop_leasing(switches, Duration::from_secs(10)).await
}

/// [`shop`] whose coordinator's leases last `lease`.
async fn shop_leasing(switches: Switches, lease: Duration) -> (Orders, Local) {
    let inventory = Inventory::open(None, &[("tea", 10), ("cup", 2)])
        .await
        .unwrap();
    let payment = Payment::open(None, switches).unwrap();
    let orders = Orders::open(None, "coordinator-a", lease).unwrap();
    let steps = Local {
        inventory,
        payment,
        lose_charge_answers: Default::default(),
        refunds_down: Default::default(),
        charges: Default::default(),
    };
    (orders, steps)
}

fn items(tea: u32, cup: u32) -> Vec<Item> {
    let mut v = Vec::new();
    if tea > 0 {
        v.push(Item {
            product: "tea".into(),
            qty: tea,
        });
    }
    if cup > 0 {
        v.push(Item {
            product: "cup".into(),
            qty: cup,
        });
    }
    v
}

async fn place(orders: &Orders, key: &str, items: Vec<Item>, total: i64) -> Order {
    orders
        .create(key, "alice", items, total)
        .await
        .unwrap()
        .unwrap()
        .0
}

#[tokio::test]
async fn an_order_is_charged_reserved_and_confirmed_once() {
    let (orders, steps) = shop(Switches::default()).await;
    let o = place(&orders, "k1", items(3, 1), 1_250).await;
    assert_eq!(o.state, State::Pending);
    let o = drive(&orders, &steps, o).await.unwrap();
    assert_eq!(o.state, State::Confirmed);
    assert_eq!(steps.inventory.stock().await.unwrap()["tea"], 7);
    assert_eq!(steps.inventory.stock().await.unwrap()["cup"], 1);
    assert_eq!(steps.payment.total_charged().await.unwrap(), 1_250);
    // Driven again (a coordinator that crashed after confirming, a retried request): nothing
    // more is charged or reserved.
    let again = drive(&orders, &steps, o.clone()).await.unwrap();
    assert_eq!(again.state, State::Confirmed);
    let mut pending = o.clone();
    pending.state = State::Pending;
    drive(&orders, &steps, pending).await.unwrap();
    assert_eq!(steps.inventory.stock().await.unwrap()["tea"], 7);
    assert_eq!(steps.payment.total_charged().await.unwrap(), 1_250);
    // The same idempotency key answers the same order; with another body, 422.
    let (same, replayed) = orders
        .create("k1", "alice", items(3, 1), 1_250)
        .await
        .unwrap()
        .unwrap();
    assert!(replayed);
    assert_eq!(same.id, o.id);
    let other = orders
        .create("k1", "alice", items(1, 0), 100)
        .await
        .unwrap();
    assert_eq!(other.unwrap_err().status, 422);
}

#[tokio::test]
async fn a_declined_payment_cancels_and_leaves_nothing_reserved_or_charged() {
    let (orders, steps) = shop(Switches {
        fail_rate: 1.0,
        ..Switches::default()
    })
    .await;
    let o = place(&orders, "k1", items(3, 0), 900).await;
    let o = drive(&orders, &steps, o).await.unwrap();
    assert_eq!(o.state, State::Cancelled);
    assert!(
        o.reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("payment:"),
        "{o:?}"
    );
    assert_eq!(steps.inventory.stock().await.unwrap()["tea"], 10);
    assert_eq!(steps.payment.total_charged().await.unwrap(), 0);
}

#[tokio::test]
async fn out_of_stock_after_the_charge_refunds_it() {
    let (orders, steps) = shop(Switches::default()).await;
    // Both orders pass the check; the second finds the cups gone when it reserves.
    let a = place(&orders, "ka", items(0, 2), 500).await;
    let b = place(&orders, "kb", items(0, 1), 250).await;
    assert_eq!(
        drive(&orders, &steps, a).await.unwrap().state,
        State::Confirmed
    );
    let b = drive(&orders, &steps, b).await.unwrap();
    assert_eq!(b.state, State::Cancelled);
    assert!(
        b.reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("stock:"),
        "{b:?}"
    );
    assert_eq!(steps.inventory.stock().await.unwrap()["cup"], 0);
    assert_eq!(steps.payment.total_charged().await.unwrap(), 500);
    let refunded = steps.payment.charge_for(&b.id).await.unwrap().unwrap();
    assert_eq!(
        (refunded.state.as_str(), refunded.charged_cents),
        ("refunded", 0)
    );
}

#[tokio::test]
async fn a_charge_whose_answer_was_lost_is_refunded_and_a_late_one_refused() {
    let (orders, steps) = shop(Switches::default()).await;
    steps.lose_charge_answers.store(true, Ordering::SeqCst);
    let o = place(&orders, "k1", items(1, 0), 300).await;
    let o = drive(&orders, &steps, o).await.unwrap();
    assert_eq!(o.state, State::Cancelled);
    // The provider had charged; the compensation refunded it.
    assert_eq!(steps.payment.total_charged().await.unwrap(), 0);
    // A charge for the order arriving late (retried by someone, delayed in the network) is
    // refused, and a reservation after the release too.
    let late = steps.payment.charge("late", &o.id, 300).await.unwrap();
    assert_eq!(late.status, 409);
    let late = steps
        .inventory
        .reserve("late", &o.id, items(1, 0))
        .await
        .unwrap();
    assert_eq!(late.status, 409);
    assert_eq!(steps.payment.total_charged().await.unwrap(), 0);
    assert_eq!(steps.inventory.stock().await.unwrap()["tea"], 10);
}

#[tokio::test]
async fn a_compensation_that_fails_is_finished_by_recovery() {
    // Leases of 1 ms: recovery may take the order over as soon as it runs.
    let (orders, steps) = shop_leasing(Switches::default(), Duration::from_millis(1)).await;
    steps.lose_charge_answers.store(true, Ordering::SeqCst);
    steps.refunds_down.store(true, Ordering::SeqCst);
    let o = place(&orders, "k1", items(1, 0), 300).await;
    let o = drive(&orders, &steps, o).await.unwrap();
    // Nothing can be refunded yet: the order waits, compensating, with the money still taken.
    assert_eq!(o.state, State::Compensating);
    assert_eq!(steps.payment.total_charged().await.unwrap(), 300);
    steps.refunds_down.store(false, Ordering::SeqCst);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(recover(
        orders.clone(),
        steps.clone(),
        Duration::from_millis(5),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = orders.get(&o.id).await.unwrap().unwrap();
        if now.state == State::Cancelled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {:?}",
            now.state
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(steps.payment.total_charged().await.unwrap(), 0);
}

#[tokio::test]
async fn a_coordinator_that_died_mid_flow_is_replaced_and_nothing_is_done_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("orders.db");
    let (_, steps) = shop(Switches::default()).await;
    // Coordinator A creates orders and charges two of them, then dies (its leases run out).
    let a = Orders::open(Some(&db), "a", Duration::from_millis(50)).unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let o = place(&a, &format!("k{i}"), items(1, 0), 100).await;
        if i < 2 {
            assert_eq!(steps.charge(&o).await, Outcome::Done);
        }
        ids.push(o.id);
    }
    drop(a);
    tokio::time::sleep(Duration::from_millis(60)).await;
    // B opens the same file and recovers them.
    let b = Orders::open(Some(&db), "b", Duration::from_secs(10)).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(recover(
        b.clone(),
        steps.clone(),
        Duration::from_millis(5),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b
        .counts()
        .await
        .unwrap()
        .get("confirmed")
        .copied()
        .unwrap_or(0)
        < 4
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            b.counts().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap();
    // Four orders, four charges of 100 and four teas reserved: the two charged before the
    // crash were not charged again.
    assert_eq!(steps.payment.total_charged().await.unwrap(), 400);
    assert_eq!(steps.inventory.stock().await.unwrap()["tea"], 6);
    for id in ids {
        assert_eq!(steps.inventory.reservation(&id).await.unwrap(), items(1, 0));
    }
}

#[tokio::test]
async fn the_catalog_and_the_demo_account_are_there_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = super::catalog::Catalog::open(Some(&dir.path().join("p.db")))
        .await
        .unwrap();
    assert_eq!(
        catalog.all().await.unwrap().len(),
        super::catalog::SEED.len()
    );
    assert_eq!(catalog.get("tea").await.unwrap().unwrap().price_cents, 850);
    assert!(catalog.get("nothing").await.unwrap().is_none());
    let users = super::users::Users::open(None).await.unwrap();
    let (name, password, _) = super::users::DEMO_USER;
    assert_eq!(
        users.verify(name, password).await.unwrap().unwrap().name,
        name
    );
    assert!(users.verify(name, "guess").await.unwrap().is_none());
    assert!(users.verify("mallory", password).await.unwrap().is_none());
    // Opened again: the seed adds nothing twice, and the demo account keeps its password.
    assert!(!users.add(name, "other", "Other").await.unwrap());
    assert!(users.verify(name, password).await.unwrap().is_some());
}
