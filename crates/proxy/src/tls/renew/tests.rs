use super::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

#[test]
fn renewal_falls_at_70_percent_give_or_take_5() {
    let (nb, na) = (t0(), t0() + DAY);
    assert_eq!(
        renew_at_fraction(nb, na, RENEW_FRACTION),
        nb + DAY.mul_f64(0.7)
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let at = renew_at(nb, na).duration_since(nb).unwrap();
        assert!(at >= DAY.mul_f64(0.65) && at <= DAY.mul_f64(0.75), "{at:?}");
        seen.insert(at);
    }
    // Jittered: proxies started together spread their renewals.
    assert!(seen.len() > 100);
}

#[test]
fn short_lifetimes_renew_within_their_lifetime() {
    let (nb, na) = (t0(), t0() + Duration::from_secs(10));
    let at = renew_at(nb, na);
    assert!(at > nb + Duration::from_secs(6) && at < nb + Duration::from_secs(8));
}

#[test]
fn an_inverted_or_empty_validity_renews_at_once() {
    assert_eq!(renew_at(t0(), t0()), t0());
    assert_eq!(renew_at(t0() + DAY, t0()), t0() + DAY);
    assert_eq!(renew_at_fraction(t0(), t0() + DAY, 7.0), t0() + DAY);
}

#[test]
fn renew_in_counts_from_now_and_never_goes_negative() {
    let (nb, na) = (t0(), t0() + DAY);
    let wait = renew_in(nb, na, nb);
    assert!(wait >= DAY.mul_f64(0.65) && wait <= DAY.mul_f64(0.75));
    assert_eq!(renew_in(nb, na, na), Duration::ZERO);
}
