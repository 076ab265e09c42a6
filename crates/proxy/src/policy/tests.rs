//! Unit tests: limits, budgets, ejection and accrual.

use super::*;
use model::ConnectionPool;

#[test]
fn admission_stops_at_the_limit_and_frees_slots_on_drop() {
    let c = Counters::new(Some(&RetryBudget::default()));
    let a = c.admit(Some(2)).unwrap();
    let b = c.admit(Some(2)).unwrap();
    assert!(c.admit(Some(2)).is_none());
    assert_eq!(c.in_flight(), 2, "a refused request holds no slot");
    drop(a);
    let _c = c.admit(Some(2)).unwrap();
    drop(b);
    assert!(c.admit(None).is_some());
}

#[test]
fn budget_allows_the_ratio_plus_the_reserve() {
    let b = Budget::new(&RetryBudget {
        ratio: 0.2,
        min_per_second: 1,
        ttl_ms: 10_000,
    });
    for _ in 0..100 {
        b.deposit();
    }
    // 20% of 100 plus 1/s over 10 s.
    let allowed = (0..100).filter(|_| b.withdraw()).count();
    assert_eq!(allowed, 30);
}

#[test]
fn max_retries_caps_retries_in_flight() {
    let c = Counters::new(Some(&RetryBudget::default()));
    let r = c.admit_retry(Some(1)).unwrap();
    assert_eq!(c.admit_retry(Some(1)).err(), Some("maxRetries reached"));
    drop(r);
    assert!(c.admit_retry(Some(1)).is_ok());
}

fn outlier_policy() -> Policy {
    Policy {
        outlier: Some(OutlierDetection {
            consecutive_5xx: 3,
            base_ejection_ms: 50,
            max_ejection_percent: 100,
            ..Default::default()
        }),
        ..Default::default()
    }
}

const FAIL: Outcome = Outcome::Response {
    status: 500,
    failure: true,
};
const OK: Outcome = Outcome::Response {
    status: 200,
    failure: false,
};

#[test]
fn consecutive_errors_eject_and_success_resets_the_streak() {
    let p = outlier_policy();
    let h = Health::default();
    assert!(!h.record(&p, FAIL, || 0, 2));
    assert!(!h.record(&p, FAIL, || 0, 2));
    assert!(!h.record(&p, OK, || 0, 2), "a success resets the streak");
    assert!(!h.record(&p, FAIL, || 0, 2));
    assert!(!h.record(&p, FAIL, || 0, 2));
    assert!(h.record(&p, Outcome::Error, || 0, 2));
    assert!(h.is_ejected(now_ns()));
}

#[test]
fn ejection_time_grows_with_the_ejection_count() {
    let p = outlier_policy();
    let h = Health::default();
    for _ in 0..3 {
        h.record(&p, FAIL, || 0, 2);
    }
    let first = h.ejected_until.load(Relaxed) - now_ns();
    h.ejected_until.store(0, Relaxed);
    for _ in 0..3 {
        h.record(&p, FAIL, || 0, 2);
    }
    let second = h.ejected_until.load(Relaxed) - now_ns();
    assert!(second > first + 30_000_000, "{first} then {second}");
}

#[test]
fn max_ejection_percent_is_respected_but_one_may_always_go() {
    let mut o = OutlierDetection {
        consecutive_5xx: 1,
        ..Default::default()
    };
    assert!(may_eject(&o, 0, 2), "10% of 2 still lets one go");
    assert!(!may_eject(&o, 1, 2));
    o.max_ejection_percent = 50;
    assert!(may_eject(&o, 1, 4));
    assert!(!may_eject(&o, 2, 4));
    o.min_health_percent = 80;
    assert!(
        !may_eject(&o, 1, 4),
        "below minHealthPercent nothing more goes"
    );
    o.max_ejection_percent = 0;
    o.min_health_percent = 0;
    assert!(!may_eject(&o, 0, 4));
}

#[test]
fn failure_accrual_trips_then_probes_one_request() {
    let p = Policy {
        accrual: Some(FailureAccrual {
            max_failures: 2,
            min_penalty_ms: 1,
            max_penalty_ms: 1,
            jitter_ratio: 0.0,
        }),
        ..Default::default()
    };
    let h = Health::default();
    assert!(!h.record(&p, FAIL, || 0, 1));
    assert!(h.record(&p, FAIL, || 0, 1));
    assert!(h.in_probation());
    std::thread::sleep(Duration::from_millis(3));
    assert!(!h.is_ejected(now_ns()));
    assert!(h.claim(), "the first probe is allowed");
    assert!(h.is_probing());
    assert!(!h.claim(), "only one probe at a time");
    // The probe fails: back out, still in probation.
    assert!(h.record(&p, FAIL, || 0, 1));
    std::thread::sleep(Duration::from_millis(3));
    assert!(h.claim());
    assert!(!h.record(&p, OK, || 0, 1));
    assert!(
        !h.in_probation(),
        "a successful probe restores the endpoint"
    );
}

// Times and ratios as large as a snapshot can carry (found by the `snapshot` fuzz target): they
// saturate instead of overflowing (a panic in debug builds; in release a wrapped time, and an
// interval wrapped to 0 divided by).

#[test]
fn ejection_times_too_long_for_the_clock_saturate() {
    for (interval_ms, base_ejection_ms) in [(1 << 58, 30_000), (10_000, u64::MAX / 2)] {
        let p = Policy {
            outlier: Some(OutlierDetection {
                consecutive_5xx: 1,
                interval_ms,
                base_ejection_ms,
                max_ejection_percent: 100,
                ..Default::default()
            }),
            ..Default::default()
        };
        let h = Health::default();
        assert!(h.record(&p, FAIL, || 0, 2));
        assert!(h.is_ejected(now_ns()));
        // A second ejection reads the first one's return time.
        h.ejected_until.store(0, Relaxed);
        assert!(h.record(&p, FAIL, || 0, 2));
        assert!(h.is_ejected(now_ns()));
    }
}

#[test]
fn accrual_penalties_too_long_for_the_clock_saturate() {
    let p = Policy {
        accrual: Some(FailureAccrual {
            max_failures: 1,
            min_penalty_ms: u64::MAX,
            max_penalty_ms: u64::MAX,
            jitter_ratio: 0.0,
        }),
        ..Default::default()
    };
    let h = Health::default();
    assert!(h.record(&p, FAIL, || 0, 1));
    assert_eq!(h.ejected_until.load(Relaxed), u64::MAX);
}

#[test]
fn a_huge_budget_ratio_allows_retries() {
    let b = Budget::new(&RetryBudget {
        ratio: f32::MAX,
        min_per_second: u32::MAX,
        ttl_ms: 60_000,
    });
    b.deposit();
    assert!(b.withdraw());
}

/// The snapshots the `snapshot` fuzz target found these with (`testdata/*.pb`, kept in its
/// corpus too), under the target's traffic: a request to each service, a retry admitted, its
/// endpoints picked and failing until they are ejected.
#[test]
fn snapshots_found_by_fuzzing_take_failures_without_overflow() {
    use prost::Message;
    let found: [(&str, &[u8]); 4] = [
        (
            "outlier-interval",
            include_bytes!("testdata/outlier-interval.pb"),
        ),
        (
            "outlier-ejection",
            include_bytes!("testdata/outlier-ejection.pb"),
        ),
        (
            "accrual-penalty",
            include_bytes!("testdata/accrual-penalty.pb"),
        ),
        ("budget-ratio", include_bytes!("testdata/budget-ratio.pb")),
    ];
    for (name, bytes) in found {
        let wire = api::pb::Snapshot::decode(bytes).unwrap();
        let snapshot = model::Snapshot::try_from(wire).unwrap();
        let table = crate::table::RouteTable::compile(snapshot, &Default::default()).unwrap();
        let mut backends = 0;
        for svc in &table.snapshot.services {
            let host = format!("{}.{}", svc.key.name, svc.key.namespace);
            let Some(service) = table.resolve(&model::Authority::parse(&host), "default") else {
                continue;
            };
            let Ok(req) = http::Request::get(format!("http://{host}/"))
                .header("end-user", "jason")
                .body(())
            else {
                continue; // a fuzzed name that is no host
            };
            let req = req.into_parts().0;
            let Some(backend) = service.route(&req).and_then(|r| r.backend) else {
                continue;
            };
            backends += 1;
            if let Some(budget) = &backend.counters.budget {
                budget.deposit();
            }
            let _retry = backend.counters.admit_retry(backend.policy.max_retries);
            for round in 0..8u64 {
                let hash = (round % 2 == 1).then_some(round);
                let Some((_, ep)) = backend.pick(&[], hash) else {
                    break;
                };
                backend.record(ep, Outcome::Error);
                backend.record(ep, FAIL);
            }
        }
        assert!(backends > 0, "{name}: no service took a request");
    }
}

/// A connection for the pool's accounting, without a socket.
struct Fake {
    endpoint: u16,
    open: bool,
}

impl pool::Pooled for Fake {
    fn is_open(&self) -> bool {
        self.open
    }
}

type FakePool = Arc<ConnPool<Fake>>;
type Leasing = tokio::task::JoinHandle<Result<Lease<Fake>, Refused<()>>>;

/// Istio's circuit-breaker task: one connection, one pending request, one request per
/// connection.
fn istio_task_pool() -> FakePool {
    ConnPool::new(PoolLimits {
        max_connections: Some(1),
        max_pending: Some(1),
        max_requests: None,
        max_requests_per_connection: Some(1),
    })
}

/// A lease on endpoint 1 whose connection opens only when the returned sender fires.
fn lease_later(pool: &FakePool) -> (tokio::sync::oneshot::Sender<()>, Leasing) {
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        pool.lease(
            |c: &Fake| c.endpoint == 1,
            || async move {
                opened.await.map_err(|_| ())?;
                Ok(Fake {
                    endpoint: 1,
                    open: true,
                })
            },
        )
        .await
    });
    (open, task)
}

/// A lease on `endpoint`, opening at once when it needs a connection.
async fn lease_now(pool: &FakePool, endpoint: u16) -> Result<Lease<Fake>, Refused<()>> {
    pool.lease(
        |c: &Fake| c.endpoint == endpoint,
        || async move {
            Ok(Fake {
                endpoint,
                open: true,
            })
        },
    )
    .await
}

/// Lets spawned tasks run until they wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_request_is_pending_while_its_connection_opens_and_one_more_overflows() {
    let pool = istio_task_pool();
    // A: no connection yet, so it is pending while one opens.
    let (open_a, a) = lease_later(&pool);
    settle().await;
    assert_eq!((pool.pending(), pool.active()), (1, 0));
    // B: the one pending place is taken: 503 UO at once.
    assert_eq!(
        lease_now(&pool, 1).await.err(),
        Some(Refused::Overflow("http1MaxPendingRequests"))
    );
    open_a.send(()).unwrap();
    let a = a.await.unwrap().unwrap();
    assert_eq!((pool.pending(), pool.active(), pool.opened()), (0, 1, 1));
    // C waits for the one connection (pending), D overflows.
    let (open_c, c) = lease_later(&pool);
    settle().await;
    assert_eq!(pool.pending(), 1);
    assert!(matches!(
        lease_now(&pool, 1).await,
        Err(Refused::Overflow("http1MaxPendingRequests"))
    ));
    // A is done: its connection carried its one request and is closed; C gets the slot and
    // stays pending while a new connection opens — the reconnect Envoy pays too.
    drop(a);
    settle().await;
    assert_eq!((pool.pending(), pool.active()), (1, 0));
    assert!(
        matches!(lease_now(&pool, 1).await, Err(Refused::Overflow(_))),
        "a request arriving during the reconnect overflows"
    );
    open_c.send(()).unwrap();
    let c = c.await.unwrap().unwrap();
    assert_eq!((pool.pending(), pool.active(), pool.opened()), (0, 1, 2));
    drop(c);
    assert_eq!((pool.pending(), pool.active()), (0, 0));
}

#[tokio::test]
async fn a_waiting_request_that_gives_up_leaves_the_pending_count() {
    let pool = istio_task_pool();
    let a = lease_now(&pool, 1).await.unwrap();
    let (_open, b) = lease_later(&pool);
    settle().await;
    assert_eq!(pool.pending(), 1);
    b.abort();
    settle().await;
    assert_eq!(
        pool.pending(),
        0,
        "a cancelled wait frees its pending place"
    );
    drop(a);
    assert!(lease_now(&pool, 1).await.is_ok());
}

#[tokio::test]
async fn max_requests_per_connection_retires_a_connection_after_that_many() {
    let pool: FakePool = ConnPool::new(PoolLimits {
        max_connections: Some(1),
        max_requests_per_connection: Some(2),
        ..Default::default()
    });
    drop(lease_now(&pool, 1).await.unwrap());
    // The second request reuses the idle connection, without waiting.
    drop(lease_now(&pool, 1).await.unwrap());
    assert_eq!(pool.opened(), 1);
    // It carried two: the third needs a new one.
    drop(lease_now(&pool, 1).await.unwrap());
    assert_eq!(pool.opened(), 2);
    // Without the limit a connection is reused for ever; a closed one is not.
    let pool: FakePool = ConnPool::new(PoolLimits {
        max_connections: Some(1),
        ..Default::default()
    });
    for _ in 0..10 {
        drop(lease_now(&pool, 1).await.unwrap());
    }
    assert_eq!(pool.opened(), 1);
    let mut l = lease_now(&pool, 1).await.unwrap();
    l.retire();
    drop(l);
    drop(lease_now(&pool, 1).await.unwrap());
    assert_eq!(pool.opened(), 2);
}

#[tokio::test]
async fn http2_max_requests_bounds_requests_on_connections() {
    let pool: FakePool = ConnPool::new(PoolLimits {
        max_requests: Some(2),
        max_pending: Some(100),
        ..Default::default()
    });
    let a = lease_now(&pool, 1).await.unwrap();
    let b = lease_now(&pool, 1).await.unwrap();
    assert_eq!((pool.active(), pool.opened()), (2, 2));
    assert!(matches!(
        lease_now(&pool, 1).await,
        Err(Refused::Overflow("http2MaxRequests"))
    ));
    assert_eq!(pool.active(), 2, "a refused request holds nothing");
    drop(a);
    let _c = lease_now(&pool, 1).await.unwrap();
    assert_eq!(
        pool.opened(),
        3,
        "the refused request's new connection was kept idle"
    );
    drop(b);
}

#[tokio::test]
async fn an_idle_connection_to_another_endpoint_makes_room_for_a_new_one() {
    let pool: FakePool = ConnPool::new(PoolLimits {
        max_connections: Some(1),
        max_pending: Some(1),
        ..Default::default()
    });
    drop(lease_now(&pool, 1).await.unwrap());
    let l = lease_now(&pool, 2).await.unwrap();
    assert_eq!(l.conn().endpoint, 2);
    assert_eq!(pool.opened(), 2);
}

#[test]
fn connection_pool_limits_follow_the_destination_rule() {
    let task = ConnectionPool {
        max_connections: Some(1),
        max_pending_requests: Some(1),
        max_requests_per_connection: Some(1),
        ..Default::default()
    };
    let p = Policy::compile(LoadBalancer::default(), &pool_policy(task));
    assert_eq!(
        p.pool,
        Some(PoolLimits {
            max_connections: Some(1),
            max_pending: Some(1),
            max_requests: None,
            max_requests_per_connection: Some(1),
        })
    );
    assert_eq!(p.max_in_flight, None, "the pool counts requests itself");
    // http2MaxRequests alone: a limit on requests in flight, no pool.
    let only_requests = ConnectionPool {
        max_requests: Some(5),
        ..Default::default()
    };
    let p = Policy::compile(LoadBalancer::default(), &pool_policy(only_requests));
    assert_eq!((p.pool, p.max_in_flight), (None, Some(5)));
    let p = Policy::compile(LoadBalancer::default(), &TrafficPolicy::default());
    assert_eq!((p.pool, p.max_in_flight), (None, None));
}

fn pool_policy(pool: ConnectionPool) -> TrafficPolicy {
    TrafficPolicy {
        connection_pool: Some(pool),
        ..Default::default()
    }
}
