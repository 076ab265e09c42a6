//! Unit tests: endpoint choice under noise, load, failures and retries.

use super::*;
use model::Identity;
use rand::Rng;

fn eps(n: usize) -> Vec<Arc<EndpointState>> {
    (0..n)
        .map(|i| {
            Arc::new(EndpointState::new(
                Endpoint {
                    instance: format!("e-{i}"),
                    workload: "e".into(),
                    address: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    labels: Default::default(),
                    identity: Identity::spiffe("default", "e"),
                },
                0,
            ))
        })
        .collect()
}

/// Sequential requests to two identical replicas whose latency is 300 µs with ±30% noise and
/// an occasional 10× spike: neither replica may take the bulk of the traffic.
#[test]
fn p2c_spreads_over_identical_endpoints() {
    let eps = eps(2);
    let mut rng = rand::thread_rng();
    let mut counts = [0usize; 2];
    for n in 0..4000u64 {
        let (i, ep) = pick_p2c(&eps, &[]).unwrap();
        counts[i] += 1;
        let mut sample = 300_000.0 * rng.gen_range(0.7..1.3);
        if n % 97 == 0 {
            sample *= 10.0;
        }
        ep.observe(sample, now_ns());
    }
    assert!(counts.iter().all(|&c| c > 1600), "{counts:?}");
}

#[test]
fn p2c_steers_away_from_a_slow_endpoint() {
    let eps = eps(2);
    let mut counts = [0usize; 2];
    for _ in 0..2000 {
        let (i, ep) = pick_p2c(&eps, &[]).unwrap();
        counts[i] += 1;
        let sample = if i == 0 { 300_000.0 } else { 3_000_000.0 };
        ep.observe(sample, now_ns());
    }
    assert!(counts[0] > 4 * counts[1], "{counts:?}");
}

#[test]
fn p2c_prefers_the_endpoint_with_fewer_requests_in_flight() {
    let eps = eps(2);
    let _busy: Vec<_> = (0..10).map(|_| eps[0].start()).collect();
    eps[0].rtt_ns.store(1_000_000, Relaxed);
    eps[1].rtt_ns.store(1_000_000, Relaxed);
    let idle = (0..1000)
        .filter(|_| pick_p2c(&eps, &[]).unwrap().0 == 1)
        .count();
    // 11 times the cost: the idle endpoint should get about 11/12 of the picks.
    assert!(idle > 850, "{idle}");
}

#[test]
fn failing_endpoints_sit_out_unless_nothing_else_is_left() {
    let eps = eps(3);
    eps[1].connect_failed();
    for _ in 0..200 {
        assert_ne!(pick_p2c(&eps, &[]).unwrap().0, 1);
    }
    assert_eq!(pick_p2c(&eps, &[0, 2]).unwrap().0, 1);
    let next = AtomicUsize::new(0);
    for _ in 0..10 {
        assert_ne!(pick_round_robin(&eps, &next, &[]).unwrap().0, 1);
    }
}

#[test]
fn retries_exclude_tried_endpoints() {
    let eps = eps(2);
    for _ in 0..50 {
        assert_eq!(pick_p2c(&eps, &[0]).unwrap().0, 1);
    }
    assert!(pick_p2c(&eps, &[0, 1]).is_none());
}

#[test]
fn round_robin_takes_turns() {
    let eps = eps(3);
    let next = AtomicUsize::new(0);
    let order: Vec<usize> = (0..6)
        .map(|_| pick_round_robin(&eps, &next, &[]).unwrap().0)
        .collect();
    assert_eq!(order, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn peak_estimate_jumps_up_and_decays() {
    let ep = &eps(1)[0];
    ep.rtt_ns.store(5_000_000, Relaxed);
    ep.stamp_ns.store(now_ns(), Relaxed);
    let now = now_ns();
    assert!(ep.rtt_estimate_ns(now) > 4_000_000.0);
    let later = now + 3 * DECAY.as_nanos() as u64;
    assert!(ep.rtt_estimate_ns(later) < 500_000.0);
}

#[test]
fn consistent_hash_is_sticky_and_moves_about_one_nth_when_a_replica_joins() {
    let three = eps(3);
    let four = eps(4);
    let keys: Vec<u64> = (0..4000).map(|k| hash_str(&format!("user-{k}"))).collect();
    let pick_in = |set: &[Arc<EndpointState>], k: u64| {
        pick(set, Choice::Hash(k), &[])
            .unwrap()
            .1
            .endpoint
            .instance
            .clone()
    };
    let mut moved = 0;
    let mut per = std::collections::HashMap::new();
    for &k in &keys {
        let a = pick_in(&three, k);
        assert_eq!(a, pick_in(&three, k), "same key, same endpoint");
        *per.entry(a.clone()).or_insert(0) += 1;
        if pick_in(&four, k) != a {
            moved += 1;
        }
    }
    // Rendezvous hashing moves exactly the keys the new replica wins: about 1/4.
    let share = moved as f64 / keys.len() as f64;
    assert!((0.20..0.30).contains(&share), "moved {share}");
    for (_, n) in per {
        assert!((1000..1700).contains(&n), "uneven spread: {n}");
    }
}

#[test]
fn least_request_prefers_the_endpoint_with_fewer_in_flight() {
    let eps = eps(2);
    let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
    for _ in 0..100 {
        assert_eq!(pick(&eps, Choice::LeastRequest, &[]).unwrap().0, 1);
    }
}

#[test]
fn tripped_endpoints_get_nothing_even_as_a_last_resort() {
    let eps = eps(2);
    let p = crate::policy::Policy {
        accrual: Some(model::FailureAccrual {
            max_failures: 1,
            min_penalty_ms: 60_000,
            max_penalty_ms: 60_000,
            jitter_ratio: 0.0,
        }),
        ..Default::default()
    };
    let fail = crate::policy::Outcome::Error;
    eps[0].health.record(&p, fail, || 0, 2);
    for _ in 0..50 {
        assert_eq!(pick(&eps, Choice::Random, &[]).unwrap().0, 1);
    }
    eps[1].health.record(&p, fail, || 1, 2);
    assert!(pick(&eps, Choice::Random, &[]).is_none());
}

#[test]
fn an_endpoint_that_went_silent_is_avoided_until_it_answers() {
    let eps = eps(2);
    eps[0].rtt_ns.store(1_000_000, Relaxed);
    eps[1].rtt_ns.store(1_000_000, Relaxed);
    // A per-try timeout of 300 ms at endpoint 1: no latency sample arrives, yet it must not
    // keep looking as cheap as before.
    eps[1].timed_out(Duration::from_millis(300));
    assert!(eps[1].rtt_estimate_ns(now_ns()) > 250e6);
    for _ in 0..200 {
        assert_eq!(pick_p2c(&eps, &[]).unwrap().0, 0);
    }
    // With nothing else left it is still tried; an answer ends its backoff.
    assert_eq!(pick_p2c(&eps, &[0]).unwrap().0, 1);
    eps[1].start().success();
    assert!(!eps[1].is_failing_now());
}
